"""Per-frame facts read from headers: single-frame attributes or enhanced functional groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from dicom_io.reading import Instance

__all__ = ["Frame", "frames_of"]

Vec3 = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Frame:
    """One 2D frame of an instance, with the geometry and value mapping that apply to it."""

    instance: Instance
    index: int  # 0-based frame number within its instance
    position: Vec3 | None
    orientation: Orientation | None
    pixel_spacing: tuple[float, float] | None
    # Rescale from the enhanced Pixel Value Transformation group; None = use the instance header.
    rescale: tuple[float, float] | None = None
    # What tells repeated acquisitions of one position apart (temporal position, stack, echo...).
    acquisition_key: tuple[str, ...] = ()
    # Enhanced frames: the volume a frame belongs to in a 4D object, from its Frame Content
    # (TemporalPositionIndex, else its dimension index values other than the spatial ones), each part
    # "<name> <value>"; () when the object says nothing of the kind.
    phase_key: tuple[str, ...] = ()

    @property
    def sop_instance_uid(self) -> str:
        return self.instance.sop_instance_uid

    @property
    def has_geometry(self) -> bool:
        return self.position is not None and self.orientation is not None and self.pixel_spacing is not None


def frames_of(instance: Instance) -> list[Frame]:
    """All frames of an image instance, in stored order."""
    ds = instance.header
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == instance.number_of_frames:
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else Dataset()
        return [_enhanced_frame(instance, i, item, shared) for i, item in enumerate(per_frame)]
    position = _position(ds.get("ImagePositionPatient"))
    orientation = _orientation(ds.get("ImageOrientationPatient"))
    spacing = _spacing(ds.get("PixelSpacing"))
    key = tuple(
        str(ds.get(k, "")) for k in ("TemporalPositionIdentifier", "EchoNumbers", "AcquisitionNumber")
    )
    if instance.number_of_frames > 1:
        # A legacy multi-frame object has one position for all frames: frames are not located.
        return [Frame(instance, i, None, None, None) for i in range(instance.number_of_frames)]
    return [Frame(instance, 0, position, orientation, spacing, None, key)]


def _enhanced_frame(instance: Instance, index: int, item: Dataset, shared: Dataset) -> Frame:
    def group(keyword: str) -> Dataset | None:
        for source in (item, shared):
            seq = source.get(keyword)
            if seq:
                return cast(Dataset, seq[0])
        return None

    position = group("PlanePositionSequence")
    orientation = group("PlaneOrientationSequence")
    measures = group("PixelMeasuresSequence")
    transform = group("PixelValueTransformationSequence")
    content = group("FrameContentSequence")
    rescale = None
    if transform is not None and "RescaleSlope" in transform:
        rescale = (float(transform.RescaleSlope), float(transform.get("RescaleIntercept", 0.0)))
    key: tuple[str, ...] = ()
    if content is not None:
        key = tuple(str(content.get(k, "")) for k in ("StackID", "TemporalPositionIndex"))
    return Frame(
        instance,
        index,
        _position(position.get("ImagePositionPatient") if position else None),
        _orientation(orientation.get("ImageOrientationPatient") if orientation else None),
        _spacing(measures.get("PixelSpacing") if measures else None),
        rescale,
        key,
        _phase_key(instance.header, content),
    )


# dimension index pointers that say where a frame is, not which volume it is in
_SPATIAL_DIMENSIONS = frozenset({0x00209056, 0x00209057, 0x00200032})  # StackID, InStackPositionNumber, IPP


def _phase_key(header: Dataset, content: Dataset | None) -> tuple[str, ...]:
    """The frame's non-spatial dimension index values (the object's own statement of what varies
    besides position), else its TemporalPositionIndex."""
    if content is None:
        return ()
    values = content.get("DimensionIndexValues")
    dimensions = header.get("DimensionIndexSequence")
    parts = []
    if values is not None and dimensions:
        values = list(values) if isinstance(values, MultiValue | list | tuple) else [values]
        if len(values) == len(dimensions):
            for dimension, value in zip(dimensions, values, strict=True):
                pointer = dimension.get("DimensionIndexPointer")
                if pointer is None or int(pointer) in _SPATIAL_DIMENSIONS:
                    continue
                label = dimension.get("DimensionDescriptionLabel")
                name = label or keyword_for_tag(int(pointer)) or str(Tag(pointer))
                parts.append(f"{name} {value}")
    if not parts and content.get("TemporalPositionIndex") is not None:
        parts.append(f"TemporalPositionIndex {content.TemporalPositionIndex}")
    return tuple(parts)


def _position(value: object) -> Vec3 | None:
    return cast(Vec3 | None, _floats(value, 3))


def _orientation(value: object) -> Orientation | None:
    return cast(Orientation | None, _floats(value, 6))


def _spacing(value: object) -> tuple[float, float] | None:
    pair = cast(tuple[float, float] | None, _floats(value, 2))
    return pair if pair is not None and min(pair) > 0 else None


def _floats(value: object, length: int) -> tuple[float, ...] | None:
    """A numeric multi-value of the given length, or None when absent or malformed (NaN included)."""
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if len(numbers) != length or any(n != n or abs(n) == float("inf") for n in numbers):
        return None
    return numbers
