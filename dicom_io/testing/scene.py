"""What a generator returns: the datasets, the objects painted into them, and their analytic truth.

Two kinds of scene:

* :class:`Phantom` — a volume in patient space. Objects are :class:`Ellipsoid` in DICOM LPS (mm);
  the truth of a frame is "which pixel centres lie inside the object", computed from the plane
  geometry the generator wrote, not from the pixels. A pipeline that maps an object at (x, y, z)
  mm in the source to anywhere but (x, y, z) mm in its output disagrees with this truth.
* :class:`ImagePhantom` — projection, ultrasound and secondary-capture images without patient
  coordinates. Objects are :class:`Ellipse` and :class:`Rectangle` in pixel space ``(row, column)``.

In both, objects are painted in order, later ones over earlier ones, but each object's truth mask is
its full extent (the body's mask includes the organ inside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.testing.geometry import PlaneGeometry, Vector
from dicom_io.testing.write import write_datasets

__all__ = ["Ellipse", "Ellipsoid", "ImagePhantom", "Phantom", "Rectangle", "Shape2D", "pixel_grid"]


@dataclass(frozen=True, slots=True)
class Ellipsoid:
    """An axis-aligned ellipsoid in patient space: semi-axes run along LPS x, y and z (mm).

    ``value`` is what the generator painted before noise: HU for CT, signal for MR.
    """

    center: Vector
    semi_axes: Vector
    value: float
    label: str

    def contains(self, points_lps: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """``[..., 3]`` LPS points (mm) → ``[...]``: inside or on the surface."""
        offsets = (np.asarray(points_lps, dtype=np.float64) - self.center) / np.asarray(self.semi_axes)
        inside: npt.NDArray[np.bool_] = np.einsum("...i,...i->...", offsets, offsets) <= 1.0
        return inside


@dataclass(frozen=True, slots=True)
class Ellipse:
    """An axis-aligned ellipse in pixel space, ``(row, column)`` with pixel centres at integers.

    ``value`` holds the stored sample value(s) painted, one per sample (3 for colour).
    ``shift_per_frame`` moves it that many pixels per frame, so frame indexing errors show.
    """

    center: tuple[float, float]
    semi_axes: tuple[float, float]
    value: tuple[int, ...]
    label: str
    shift_per_frame: tuple[float, float] = (0.0, 0.0)

    def contains(self, points_rc: npt.ArrayLike, frame_index: int = 0) -> npt.NDArray[np.bool_]:
        """``[..., 2]`` (row, column) points → ``[...]``: inside or on the edge in that frame."""
        offsets = (_unshifted(points_rc, self.shift_per_frame, frame_index) - self.center) / np.asarray(
            self.semi_axes
        )
        inside: npt.NDArray[np.bool_] = np.einsum("...i,...i->...", offsets, offsets) <= 1.0
        return inside


@dataclass(frozen=True, slots=True)
class Rectangle:
    """An axis-aligned rectangle in pixel space; ``half_size`` is (rows, columns) from the centre."""

    center: tuple[float, float]
    half_size: tuple[float, float]
    value: tuple[int, ...]
    label: str
    shift_per_frame: tuple[float, float] = (0.0, 0.0)

    def contains(self, points_rc: npt.ArrayLike, frame_index: int = 0) -> npt.NDArray[np.bool_]:
        """``[..., 2]`` (row, column) points → ``[...]``: inside or on the edge in that frame."""
        offsets = np.abs(_unshifted(points_rc, self.shift_per_frame, frame_index) - self.center)
        inside: npt.NDArray[np.bool_] = np.all(offsets <= np.asarray(self.half_size), axis=-1)
        return inside


Shape2D = Ellipse | Rectangle


def _unshifted(
    points_rc: npt.ArrayLike, shift: tuple[float, float], frame_index: int
) -> npt.NDArray[np.float64]:
    shifted: npt.NDArray[np.float64] = np.asarray(points_rc, dtype=np.float64) - frame_index * np.asarray(
        shift, dtype=np.float64
    )
    return shifted


def pixel_grid(rows: int, columns: int) -> npt.NDArray[np.float64]:
    """``[rows, columns, 2]``: the (row, column) of every pixel centre."""
    grid: npt.NDArray[np.float64] = np.moveaxis(np.indices((rows, columns), dtype=np.float64), 0, -1)
    return grid


def _pick(labels: Sequence[str], label: str | None, default: str) -> str:
    chosen = default if label is None else label
    if chosen not in labels:
        raise KeyError(f"no object labelled {chosen!r}; labels are {list(labels)}")
    return chosen


@dataclass(frozen=True, slots=True)
class Phantom:
    """A generated volume: classic single-frame instances or one enhanced multi-frame instance.

    ``datasets`` are in file order (InstanceNumber order), each with File Meta Information and
    PixelData. ``planes[i][f]`` is the geometry of frame ``f`` of dataset ``i``. ``objects`` are
    the body, the main object ``target_label`` and a small off-centre marker, placed so that any
    flip or transposition of an axis moves the marker to where the truth says it is not.
    """

    datasets: tuple[Dataset, ...]
    objects: tuple[Ellipsoid, ...]
    planes: tuple[tuple[PlaneGeometry, ...], ...]
    target_label: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(obj.label for obj in self.objects)

    def object_named(self, label: str) -> Ellipsoid:
        """The object called ``label``."""
        chosen = _pick(self.labels, label, label)
        return next(obj for obj in self.objects if obj.label == chosen)

    def pixel_to_patient(self, dataset_index: int, frame_index: int = 0) -> npt.NDArray[np.float64]:
        """``[Rows, Columns, 3]``: LPS (mm) of each pixel centre of that frame."""
        return self.planes[dataset_index][frame_index].pixel_to_patient()

    def truth_mask(
        self, dataset_index: int, frame_index: int = 0, label: str | None = None
    ) -> npt.NDArray[np.bool_]:
        """``bool [Rows, Columns]``: pixel centres inside the object (default: the target)."""
        return self.object_named(_pick(self.labels, label, self.target_label)).contains(
            self.pixel_to_patient(dataset_index, frame_index)
        )

    def truth_volume(self, label: str | None = None) -> npt.NDArray[np.bool_]:
        """``bool [frames, Rows, Columns]`` over every frame of every dataset, in file order."""
        return np.stack(
            [
                self.truth_mask(index, frame, label)
                for index, frames in enumerate(self.planes)
                for frame in range(len(frames))
            ]
        )

    def write(self, directory: Path) -> list[Path]:
        """Part 10 files (with preamble) named ``IM0001.dcm``… in file order."""
        return write_datasets(self.datasets, directory)


@dataclass(frozen=True, slots=True)
class ImagePhantom:
    """A generated image without patient coordinates (CR, DX, US, SC).

    ``datasets`` are in file order; the truth lives in pixel space, frame by frame.
    """

    datasets: tuple[Dataset, ...]
    objects: tuple[Shape2D, ...]
    target_label: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(obj.label for obj in self.objects)

    def truth_mask(
        self, dataset_index: int, frame_index: int = 0, label: str | None = None
    ) -> npt.NDArray[np.bool_]:
        """``bool [Rows, Columns]``: pixel centres inside the object (default: the target)."""
        ds = self.datasets[dataset_index]
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if not 0 <= frame_index < frames:
            raise IndexError(f"frame {frame_index} of a {frames}-frame image")
        chosen = _pick(self.labels, label, self.target_label)
        grid = pixel_grid(int(ds.Rows), int(ds.Columns))
        mask = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool)
        for obj in self.objects:
            if obj.label == chosen:
                mask |= obj.contains(grid, frame_index)
        return mask

    def write(self, directory: Path) -> list[Path]:
        """Part 10 files (with preamble) named ``IM0001.dcm``… in file order."""
        return write_datasets(self.datasets, directory)
