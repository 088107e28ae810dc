"""Plane geometry of generated images, exactly as their Image Plane attributes state it.

The conventions are PS3.3 C.7.6.2: ``ImageOrientationPatient`` is the row direction (the way the
column index grows) followed by the column direction (the way the row index grows);
``PixelSpacing`` is (spacing between rows, spacing between columns); the centre of pixel (r, c) is
``IPP + c * PixelSpacing[1] * row_direction + r * PixelSpacing[0] * column_direction``.

Every number here is first rounded to what a DS can hold (16 characters), so the analytic truth is
computed from the very values written to the file and not from a float the file cannot carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydicom.valuerep import format_number_as_ds

__all__ = [
    "Orientation",
    "PlaneGeometry",
    "Vector",
    "as_ds",
    "as_ds_vector",
    "orientation_directions",
    "rotation_x",
    "rotation_z",
]

Vector = tuple[float, float, float]
Orientation = Literal["axial", "sagittal", "coronal", "oblique"]

_STANDARD_ORIENTATIONS: dict[str, tuple[Vector, Vector]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
# Angles picked so that every direction cosine of the oblique plane is non-zero and no two are
# equal: a swapped or negated axis anywhere downstream then moves the image measurably.
OBLIQUE_X_DEG = 20.0
OBLIQUE_Z_DEG = 15.0


def as_ds(value: float) -> float:
    """The float a reader gets back after ``value`` went through a DS (at most 16 characters)."""
    # Adding 0.0 turns -0.0 into 0.0, which would otherwise be written as "-0.0".
    return float(format_number_as_ds(float(value) + 0.0))


def as_ds_vector(values: npt.ArrayLike) -> Vector:
    x, y, z = (as_ds(v) for v in np.asarray(values, dtype=np.float64).ravel())
    return (x, y, z)


def rotation_x(degrees: float) -> npt.NDArray[np.float64]:
    """Right-handed rotation about the patient x (L) axis."""
    a = math.radians(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])


def rotation_z(degrees: float) -> npt.NDArray[np.float64]:
    """Right-handed rotation about the patient z (S) axis."""
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def orientation_directions(orientation: Orientation) -> tuple[Vector, Vector]:
    """(row direction, column direction) before any gantry tilt, not yet rounded to DS.

    ``oblique`` is the axial plane turned 20° about x and then 15° about the turned z axis
    (intrinsic rotations, ``R = Rx(20°) · Rz(15°)``).
    """
    if orientation == "oblique":
        rotation = rotation_x(OBLIQUE_X_DEG) @ rotation_z(OBLIQUE_Z_DEG)
        row = rotation @ np.array([1.0, 0.0, 0.0])
        column = rotation @ np.array([0.0, 1.0, 0.0])
        return (_vector(row), _vector(column))
    try:
        return _STANDARD_ORIENTATIONS[orientation]
    except KeyError:
        raise ValueError(f"unknown orientation {orientation!r}") from None


def _vector(values: npt.NDArray[np.float64]) -> Vector:
    return (float(values[0]), float(values[1]), float(values[2]))


@dataclass(frozen=True, slots=True)
class PlaneGeometry:
    """Where one frame lies in patient space (DICOM LPS, mm).

    ``position`` is ImagePositionPatient (the centre of the first transmitted pixel),
    ``row_direction``/``column_direction`` the two halves of ImageOrientationPatient and
    ``pixel_spacing`` is PixelSpacing: (between rows, between columns).
    """

    position: Vector
    row_direction: Vector
    column_direction: Vector
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        """``row_direction × column_direction``: the way slices of a stack advance."""
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def image_orientation_patient(self) -> list[float]:
        return [*self.row_direction, *self.column_direction]

    def pixel_to_patient(self) -> npt.NDArray[np.float64]:
        """``[rows, columns, 3]``: LPS coordinates (mm) of every pixel centre."""
        r = np.arange(self.rows, dtype=np.float64)[:, None, None]
        c = np.arange(self.columns, dtype=np.float64)[None, :, None]
        row_step = self.pixel_spacing[1] * np.asarray(self.row_direction)
        column_step = self.pixel_spacing[0] * np.asarray(self.column_direction)
        result: npt.NDArray[np.float64] = np.asarray(self.position) + c * row_step + r * column_step
        return result
