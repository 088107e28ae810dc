"""Patient geometry: image planes, volume grids and their affines (DICOM LPS and NIfTI RAS+).

DICOM conventions (PS3.3 C.7.6.2.1): ImageOrientationPatient holds the row direction (the way the
column index grows) then the column direction (the way the row index grows); PixelSpacing is
(spacing between rows, spacing between columns). Pixel (r, c) of a frame lies at
``IPP + c * PixelSpacing[1] * row_dir + r * PixelSpacing[0] * col_dir``.

Voxel indices here are always ``(column, row, slice)`` = ``(i, j, k)`` unless a function says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "LPS_TO_RAS",
    "Plane",
    "VolumeGeometry",
    "plane_of",
    "slice_normal",
]

FloatArray = npt.NDArray[np.float64]
Vec3 = tuple[float, float, float]

# NIfTI world space is RAS+; DICOM patient space is LPS+. Flipping x and y maps one to the other.
LPS_TO_RAS: FloatArray = np.diag([-1.0, -1.0, 1.0, 1.0])

# Beyond ~37° from the nearest main plane we call a plane oblique; a tilted CT (≤ 30°) stays axial.
_MAIN_PLANE_COSINE = 0.8


class Plane(StrEnum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    OBLIQUE = "oblique"


def slice_normal(orientation: tuple[float, ...] | FloatArray) -> FloatArray:
    """Unit normal of the image plane, ``row_dir × col_dir``."""
    iop = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:6])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise ValueError(f"ImageOrientationPatient {list(iop)} has parallel or zero direction cosines")
    return np.asarray(normal / norm, dtype=np.float64)


def plane_of(orientation: tuple[float, ...] | FloatArray) -> Plane:
    """The anatomical plane an image lies in, judged by its normal."""
    normal = np.abs(slice_normal(orientation))
    axis = int(np.argmax(normal))
    if normal[axis] < _MAIN_PLANE_COSINE:
        return Plane.OBLIQUE
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[axis]


@dataclass(frozen=True, slots=True)
class VolumeGeometry:
    """A regular grid of ``slices`` frames of ``rows`` × ``columns`` pixels in patient space.

    ``slice_step`` is the vector from one slice's first pixel to the next one's. It is parallel to the
    plane normal for ordinary stacks and oblique to it for gantry-tilted (sheared) stacks.
    """

    rows: int
    columns: int
    slices: int
    origin: Vec3
    row_direction: Vec3
    column_direction: Vec3
    pixel_spacing: tuple[float, float]
    slice_step: Vec3

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        return (self.columns, self.rows, self.slices)

    @property
    def normal(self) -> FloatArray:
        return slice_normal(self.row_direction + self.column_direction)

    @property
    def plane(self) -> Plane:
        return plane_of(self.row_direction + self.column_direction)

    @property
    def slice_spacing(self) -> float:
        """Distance between slice planes (along the normal, so a tilt does not inflate it)."""
        return abs(float(np.dot(self.slice_step, self.normal)))

    @property
    def tilt_degrees(self) -> float:
        """Angle between the slice step and the plane normal; 0 for an unsheared stack."""
        step = np.asarray(self.slice_step)
        cosine = abs(float(np.dot(step, self.normal))) / float(np.linalg.norm(step))
        return float(np.degrees(np.arccos(min(1.0, cosine))))

    @property
    def voxel_volume_mm3(self) -> float:
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing

    def affine_lps(self) -> FloatArray:
        """4×4 matrix mapping ``(i=column, j=row, k=slice, 1)`` to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, 0] = np.asarray(self.row_direction) * self.pixel_spacing[1]
        affine[:3, 1] = np.asarray(self.column_direction) * self.pixel_spacing[0]
        affine[:3, 2] = self.slice_step
        affine[:3, 3] = self.origin
        return affine

    def affine_ras(self) -> FloatArray:
        """The same mapping into NIfTI's RAS+ world."""
        return np.asarray(LPS_TO_RAS @ self.affine_lps(), dtype=np.float64)

    def is_orthogonal(self, tolerance_degrees: float = 0.01) -> bool:
        return self.tilt_degrees <= tolerance_degrees

    def slice_position(self, k: int) -> FloatArray:
        """ImagePositionPatient of slice ``k``."""
        return np.asarray(self.origin, dtype=np.float64) + k * np.asarray(self.slice_step, dtype=np.float64)

    def to_patient(self, ijk: FloatArray) -> FloatArray:
        """``[..., 3]`` voxel indices (i, j, k) → ``[..., 3]`` LPS mm."""
        points = np.asarray(ijk, dtype=np.float64)
        affine = self.affine_lps()
        return np.asarray(points @ affine[:3, :3].T + affine[:3, 3], dtype=np.float64)
