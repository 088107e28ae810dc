"""Stack geometry of a generated volume and where its objects go.

Volume axes: ``u`` along the row direction (the way columns count), ``v`` along the column
direction, ``w`` the way the stack advances (the normal, or the table axis of a tilted stack).
Objects sit at fixed fractions of the half-extents along ``u, v, w`` and are scaled to fit, so the
scene fills any matrix, spacing or slice count alike (a 10-slice stack still shows the marker on
several slices), while its patient coordinates follow the orientation. Ellipsoids stay aligned with
LPS, as the truth's contract says, so in an oblique stack they cut the planes obliquely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dicom_io.testing.geometry import (
    Orientation,
    PlaneGeometry,
    Vector,
    as_ds,
    as_ds_vector,
    orientation_directions,
    rotation_x,
)
from dicom_io.testing.scene import Ellipsoid

__all__ = ["SCENE", "ObjectPlacement", "StackFrame", "place_objects", "stack_planes"]


def stack_planes(
    *,
    orientation: Orientation,
    rows: int,
    columns: int,
    slices: int,
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    gantry_tilt_deg: float,
    center: Vector,
) -> tuple[PlaneGeometry, ...]:
    """Every plane of the stack in order of position along the normal, centred on ``center``.

    A gantry tilt turns the image plane about the patient x axis while the positions still step
    along the untilted normal (for axial: pure z, the table motion), shearing the stack as a
    tilted CT acquisition does. ``slice_spacing`` is that step.
    """
    if rows < 2 or columns < 2 or slices < 1:
        raise ValueError("a volume needs at least 2 rows, 2 columns and 1 slice")
    row0, column0 = orientation_directions(orientation)
    step = np.cross(row0, column0)
    tilt = rotation_x(gantry_tilt_deg)
    row = as_ds_vector(tilt @ np.asarray(row0))
    column = as_ds_vector(tilt @ np.asarray(column0))
    spacing = (as_ds(pixel_spacing[0]), as_ds(pixel_spacing[1]))
    origin = (
        np.asarray(center)
        - (columns - 1) / 2 * spacing[1] * np.asarray(row)
        - (rows - 1) / 2 * spacing[0] * np.asarray(column)
        - (slices - 1) / 2 * slice_spacing * step
    )
    return tuple(
        PlaneGeometry(
            position=as_ds_vector(origin + k * slice_spacing * step),
            row_direction=row,
            column_direction=column,
            pixel_spacing=spacing,
            rows=rows,
            columns=columns,
        )
        for k in range(slices)
    )


@dataclass(frozen=True, slots=True)
class ObjectPlacement:
    """One object of the scene in units of the stack's half-extents along ``u, v, w``.

    ``fractions`` place its centre relative to the volume centre; ``ratios`` give the
    proportions of its extent along ``u, v, w``, projected onto LPS; ``patient_ratios`` then
    stretch it along LPS x, y, z, so that the same scene looks different in each orientation;
    ``limit`` is the fraction of every half-extent it may reach, to which it is then fitted.
    """

    label: str
    fractions: Vector
    ratios: Vector
    patient_ratios: Vector
    limit: float


# Mixed signs and unequal proportions: a flip of any axis moves the marker and a transposition
# reshapes the body. The target and marker keep to opposite sides of ``u`` so they never meet.
SCENE = (
    ObjectPlacement("body", (0.06, -0.04, 0.03), (1.0, 0.86, 0.95), (1.0, 0.8, 0.9), 0.92),
    ObjectPlacement("target", (-0.28, 0.18, -0.14), (0.44, 0.34, 0.40), (1.2, 0.75, 1.0), 0.72),
    ObjectPlacement("marker", (0.42, -0.36, 0.33), (0.20, 0.15, 0.16), (0.8, 1.25, 1.0), 0.66),
)


# Thinner stacks are treated as cut from a cube: objects centred on the middle plane and free to
# pass their outer planes, since off-centre objects would fall between their few planes.
_FEWEST_SLICES_FOR_DEPTH = 8


@dataclass(frozen=True, slots=True)
class StackFrame:
    """The stack as a parallelepiped: its centre, unit axes ``u, v, w`` (columns of ``axes``)
    and half-extents between the outermost pixel centres (mm). A thin stack gets a nominal
    depth (``thin``) equal to its larger in-plane half-extent."""

    centre: npt.NDArray[np.float64]
    axes: npt.NDArray[np.float64]
    half: npt.NDArray[np.float64]
    slice_step: float
    thin: bool

    @classmethod
    def of(cls, planes: tuple[PlaneGeometry, ...]) -> StackFrame:
        first, last = planes[0], planes[-1]
        travel = np.asarray(last.position) - np.asarray(first.position)
        in_plane = np.array(
            [(first.columns - 1) * first.pixel_spacing[1] / 2, (first.rows - 1) * first.pixel_spacing[0] / 2]
        )
        length = float(np.linalg.norm(travel))
        step = travel / length if len(planes) > 1 else first.normal
        thin = len(planes) < _FEWEST_SLICES_FOR_DEPTH
        axes = np.column_stack([first.row_direction, first.column_direction, step])
        return cls(
            centre=np.asarray(first.position) + axes[:, :2] @ in_plane + travel / 2,
            axes=axes,
            half=np.append(in_plane, in_plane.max() if thin else length / 2),
            slice_step=length / (len(planes) - 1) if len(planes) > 1 else 0.0,
            thin=thin,
        )

    def proportions(self, ratios: Vector) -> npt.NDArray[np.float64]:
        """An object's intended extent along ``u, v, w`` (mm) before it is scaled to fit.

        Along ``w`` it follows the slab but no further than the in-plane size, so a long stack does
        not stretch objects into rods, and no less than 1.6 slice steps, so a thin stack still shows
        each object on about three slices.
        """
        depth = min(self.half[2], self.half[:2].max())
        extent: npt.NDArray[np.float64] = np.asarray(ratios) * np.array([self.half[0], self.half[1], depth])
        extent[2] = max(extent[2], 1.6 * self.slice_step)
        return extent

    def reach(self, obj: Ellipsoid) -> npt.NDArray[np.float64]:
        """How far ``obj`` extends from the centre along each axis (mm): for each pair of opposite
        faces, its centre's offset plus its support along the dual axis."""
        dual = np.linalg.inv(self.axes)
        offset = np.abs(dual @ (np.asarray(obj.center) - self.centre))
        reach: npt.NDArray[np.float64] = offset + np.sqrt(
            ((dual * np.asarray(obj.semi_axes)) ** 2).sum(axis=1)
        )
        return reach


def place_objects(
    planes: tuple[PlaneGeometry, ...],
    values: tuple[float, float, float],
    labels: tuple[str, str, str],
) -> tuple[Ellipsoid, ...]:
    """The body, target and marker of :data:`SCENE`, each as large as its limit allows.

    Objects lie inside the field of view, except that a stack of fewer than 8 slices cuts
    through them (see ``_FEWEST_SLICES_FOR_DEPTH``).
    """
    frame = StackFrame.of(planes)
    dual = np.asarray(np.linalg.inv(frame.axes), dtype=np.float64)
    objects = []
    for placement, value, label in zip(SCENE, values, labels, strict=True):
        fractions = np.asarray(placement.fractions)
        if frame.thin:
            fractions = fractions * np.array([1.0, 1.0, 0.0])
        shape = _fitted(
            np.asarray(placement.patient_ratios) * (np.abs(frame.axes) @ frame.proportions(placement.ratios)),
            dual,
            (placement.limit - np.abs(fractions)) * frame.half,
        )
        obj = Ellipsoid(
            center=_rounded(frame.centre + frame.axes @ (fractions * frame.half)),
            # Rounded down, so the object stays within the room it was fitted to.
            semi_axes=_rounded(np.floor(shape * 1000.0) / 1000.0),
            value=value,
            label=label,
        )
        checked = slice(0, 2) if frame.thin else slice(0, 3)
        if np.any(frame.reach(obj)[checked] > frame.half[checked] + 1e-3):
            raise ValueError(f"the {label} does not fit the field of view")
        objects.append(obj)
    return tuple(objects)


def _fitted(
    semi_axes: npt.NDArray[np.float64], dual: npt.NDArray[np.float64], room: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """LPS semi-axes shrunk until the ellipsoid's support along every dual axis fits its room.

    Each axis shrinks by the share it has in the supports that overflow, so a thin tilted or oblique
    slab flattens the object along the axes that cross it instead of shrinking it all over.
    """
    for _ in range(200):
        parts = (dual * semi_axes) ** 2
        support = np.sqrt(parts.sum(axis=1))
        overflow = np.minimum(room / support, 1.0)
        if overflow.min() > 0.999:
            break
        shares = parts / support[:, None] ** 2
        semi_axes = semi_axes * np.prod(overflow[:, None] ** shares, axis=0)
    support = np.sqrt(((dual * semi_axes) ** 2).sum(axis=1))
    fitted: npt.NDArray[np.float64] = semi_axes * min(1.0, float(np.min(room / support)))
    return fitted


def _rounded(values: npt.NDArray[np.float64]) -> Vector:
    x, y, z = (round(float(v), 3) + 0.0 for v in values)
    if not all(math.isfinite(v) for v in (x, y, z)):
        raise ValueError("degenerate stack geometry")
    return (x, y, z)
