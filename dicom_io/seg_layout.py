"""Which source frames a SEG refers to, and what highdicom must be given to refer to them.

highdicom 0.28 handles two source layouts natively:

- patient coordinates (Frame of Reference + plane positions): a stack of single-frame instances
  (we pass exactly the referenced instances, in mask order, so the derivation references are
  exact) or one multi-frame instance (we pass the referenced frames' plane positions; highdicom
  matches them to the source frames by position);
- no coordinate system, **one** source frame: a CR/DX/SC/US image, indexed by segment only.

Several frames without a coordinate system (a multi-frame ultrasound clip, a set of same-size
X-rays) are refused by highdicom ("Only a single frame is supported when the source image has no
Frame of Reference UID", highdicom issue #284, open). The standard allows them: PS3.3 A.51 lets a
SEG without a Frame of Reference tie each frame to its source through the Derivation Image
functional group, which is what recipients use (D. Clunie, highdicom #159). So we hand highdicom
header-only *proxies* carrying invented geometry (frame k at z = -k mm), which makes it write
the frames, the pixel data and exact per-frame derivation references, and then
:func:`strip_synthetic_geometry` removes everything invented: Frame of Reference, plane
position/orientation, pixel measures, and the position dimension, which becomes a Frame Label
dimension. No invented coordinate reaches the PACS.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from highdicom import PlanePositionSequence
from highdicom._standard_utils import is_multiframe_image
from highdicom.enum import CoordinateSystemNames
from highdicom.spatial import get_image_coordinate_system, get_volume_positions
from highdicom.utils import get_plane_positions_of_image
from pydicom import Dataset
from pydicom.tag import Tag
from pydicom.valuerep import format_number_as_ds

from dicom_io.uids import child_uid

__all__ = ["SourcePlan", "complete_references", "plan_sources", "strip_synthetic_geometry"]

_PIXEL_TAGS = frozenset(Tag(t) for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))
_IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
_GEOMETRY = ("PlaneOrientationSequence", "PixelMeasuresSequence")


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """highdicom's inputs for one SEG; ``hd_sources`` or ``plane_positions`` run parallel to frames."""

    hd_sources: tuple[Dataset, ...]
    plane_positions: tuple[PlanePositionSequence, ...] | None
    referenced: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID), in frame_refs order
    rows: int
    columns: int
    source_is_multiframe: bool
    patient_orientation: tuple[str, ...]
    synthetic_geometry: bool = False
    source_has_frame_of_reference: bool = True
    # Every referenced frame's position and the orientation: the slice spacing of the whole set.
    all_positions: tuple[tuple[float, float, float], ...] = ()
    orientation: tuple[float, ...] = ()

    @property
    def referenced_sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(uid for _, uid in self.referenced)

    @property
    def frame_count(self) -> int:
        return len(self.hd_sources) if self.plane_positions is None else len(self.plane_positions)

    def subset(self, frames: Sequence[int]) -> SourcePlan:
        """The plan for only these mask frames (the others are empty and will not be written)."""
        if self.plane_positions is None:
            return replace(self, hd_sources=tuple(self.hd_sources[i] for i in frames))
        return replace(self, plane_positions=tuple(self.plane_positions[i] for i in frames))


@functools.lru_cache(maxsize=64)
def _multiframe_iod(sop_class_uid: str) -> bool:
    # highdicom's IOD table lookup costs ~1 ms; a 300-slice series has one SOP class.
    probe = Dataset()
    probe.SOPClassUID = sop_class_uid
    return bool(is_multiframe_image(probe))


def number_of_frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def plan_sources(source_images: Sequence[Dataset], frame_refs: Sequence[tuple[int, int]]) -> SourcePlan:
    """Check ``frame_refs`` against the sources and choose highdicom's inputs (ValueError if unusable)."""
    if not source_images:
        raise ValueError("no source images")
    if not frame_refs:
        raise ValueError("no frame references (masks have no frames)")
    for image_index, frame_index in frame_refs:
        if not 0 <= image_index < len(source_images):
            raise ValueError(f"frame reference {(image_index, frame_index)} names no source image")
        if not 0 <= frame_index < number_of_frames(source_images[image_index]):
            frames = number_of_frames(source_images[image_index])
            raise ValueError(f"frame reference {(image_index, frame_index)}: the image has {frames} frame(s)")
    duplicated = [ref for ref, n in Counter(map(tuple, frame_refs)).items() if n > 1]
    if duplicated:
        raise ValueError(f"source frames referenced more than once: {duplicated[:5]}")

    images = [source_images[i] for i in dict.fromkeys(i for i, _ in frame_refs)]
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for ds in images)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({n} instance{'s' if n > 1 else ''})" for (r, c), n in sizes.items())
        raise ValueError(f"source images of different sizes cannot share one SEG: {listed}; group by size")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if len({str(ds.get(keyword, "")) for ds in images}) > 1:
            raise ValueError(f"source images differ in {keyword}: one SEG references one series")
    multiframe = _multiframe_iod(str(images[0].SOPClassUID))
    if len({str(ds.SOPClassUID) for ds in images}) > 1 or (multiframe and len(images) > 1):
        raise ValueError(f"frames point into {len(images)} instances of a multi-frame IOD; one SEG each")

    ((rows, columns),) = sizes
    src = images[0]
    coordinates = get_image_coordinate_system(src)
    if coordinates == CoordinateSystemNames.SLIDE:
        raise ValueError("slide (microscopy) coordinates are not supported")
    base = SourcePlan(
        hd_sources=tuple(images),
        plane_positions=None,
        referenced=tuple((str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in images),
        rows=rows,
        columns=columns,
        source_is_multiframe=multiframe,
        patient_orientation=tuple(str(v) for v in src.get("PatientOrientation") or ()),
    )

    if coordinates == CoordinateSystemNames.PATIENT:
        if not multiframe:
            positions = tuple(_triple(ds.ImagePositionPatient) for ds in images)
            return replace(base, all_positions=positions, orientation=tuple(src.ImageOrientationPatient))
        shared = _shared_geometry(src, frame_refs)
        planes = get_plane_positions_of_image(src)
        used = tuple(planes[f] for _, f in frame_refs)
        orientation = shared.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
        return replace(
            base,
            hd_sources=(shared,),
            plane_positions=used,
            all_positions=tuple(_triple(p[0].ImagePositionPatient) for p in used),
            orientation=tuple(orientation.ImageOrientationPatient),
        )
    if len(frame_refs) == 1 and not multiframe:
        return base
    # Several frames without patient coordinates: proxies with invented geometry, stripped later.
    has_for = "FrameOfReferenceUID" in src
    for_uid = str(src.FrameOfReferenceUID) if has_for else child_uid(str(src.SeriesInstanceUID), "proxy-for")
    base = replace(base, synthetic_geometry=True, source_has_frame_of_reference=has_for)
    if multiframe:
        planes = tuple(_position(f) for _, f in frame_refs)
        return replace(base, hd_sources=(_multiframe_proxy(src, for_uid),), plane_positions=planes)
    return replace(base, hd_sources=tuple(_single_frame_proxy(ds, for_uid, k) for k, ds in enumerate(images)))


def complete_references(seg: Dataset, plan: SourcePlan) -> None:
    """List every referenced source instance, in frame_refs order, also those whose frames were empty.

    OHIF finds the source series through ReferencedSeriesSequence; the SOP Instance UID of the SEG
    is derived from this same set, so the object says exactly which inputs it was built from.
    """
    seg.SourceImageSequence = _instance_items(plan.referenced)
    seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence = _instance_items(plan.referenced)
    if plan.all_positions and len(plan.all_positions) > 1:
        # highdicom derives SpacingBetweenSlices from the frames it was given; restore the value
        # for the whole referenced set so that dropping empty frames changes nothing else.
        spacing, _ = get_volume_positions(plan.all_positions, plan.orientation)
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        if spacing is not None:
            measures.SpacingBetweenSlices = format_number_as_ds(spacing)
        elif "SpacingBetweenSlices" in measures:
            del measures.SpacingBetweenSlices


def _instance_items(referenced: Sequence[tuple[str, str]]) -> list[Dataset]:
    items = []
    for sop_class, sop_instance in referenced:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    return items


def strip_synthetic_geometry(seg: Dataset, plan: SourcePlan) -> None:
    """Remove the invented geometry of a proxy-built SEG; index its frames by Frame Label instead."""
    drop = ["DimensionOrganizationType"]
    if not plan.source_has_frame_of_reference:
        drop += ["FrameOfReferenceUID", "PositionReferenceIndicator"]
    for keyword in drop:
        if keyword in seg:
            delattr(seg, keyword)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        if keyword in shared:
            delattr(shared, keyword)
    position_item = seg.DimensionIndexSequence[-1]
    position_item.DimensionIndexPointer = Tag("FrameLabel")
    position_item.FunctionalGroupPointer = Tag("FrameContentSequence")
    position_item.DimensionDescriptionLabel = "Source frame"
    image_numbers = {uid: k for k, uid in enumerate(plan.referenced_sop_instance_uids, start=1)}
    for item in seg.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        if plan.source_is_multiframe:
            label = f"frame {int(source.ReferencedFrameNumber)}"
        else:
            label = f"image {image_numbers[source.ReferencedSOPInstanceUID]}"
        item.FrameContentSequence[0].FrameLabel = label


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def _shared_geometry(src: Dataset, frame_refs: Sequence[tuple[int, int]]) -> Dataset:
    """A header proxy of ``src`` whose shared functional group holds *copies* of the plane geometry.

    highdicom reads orientation and pixel spacing from the Shared Functional Groups only, and it
    puts that very Sequence object into the SEG and adds SpacingBetweenSlices to it: given the
    caller's dataset, it would modify it. Siemens and Philips enhanced MR keep both per frame;
    moving them to the shared group is exact when every referenced frame has the same values.
    """
    shared = src.SharedFunctionalGroupsSequence[0]
    per_frame = src.PerFrameFunctionalGroupsSequence
    first = per_frame[frame_refs[0][1]]
    new_shared = Dataset()
    for elem in shared:
        if elem.keyword not in _GEOMETRY:
            new_shared.add(elem)
    for keyword in _GEOMETRY:
        if keyword in shared:
            value = shared[keyword].value
        elif keyword in first and len({repr(per_frame[f].get(keyword)) for _, f in frame_refs}) == 1:
            value = first[keyword].value
        else:
            raise ValueError(f"referenced frames differ in (or lack) {keyword}: a SEG has one plane geometry")
        new_shared.add_new(keyword, "SQ", copy.deepcopy(value))
    proxy = _header(src)
    proxy.add_new("SharedFunctionalGroupsSequence", "SQ", [new_shared])
    return proxy


def _position(k: int) -> PlanePositionSequence:
    # -k: highdicom orders frames along the slice normal, so this keeps source frame order.
    return PlanePositionSequence(CoordinateSystemNames.PATIENT, [0.0, 0.0, -float(k)])


def _header(ds: Dataset) -> Dataset:
    # Shares the source's element objects; everything set on a proxy goes through add_new, which
    # replaces the element in the proxy only, so the caller's dataset is never mutated.
    proxy = Dataset()
    for elem in ds:
        if elem.tag not in _PIXEL_TAGS:
            proxy.add(elem)
    if hasattr(ds, "file_meta"):
        proxy.file_meta = ds.file_meta
    return proxy


def _single_frame_proxy(ds: Dataset, for_uid: str, k: int) -> Dataset:
    proxy = _header(ds)
    proxy.add_new("FrameOfReferenceUID", "UI", for_uid)
    proxy.add_new("ImagePositionPatient", "DS", [0.0, 0.0, -float(k)])
    proxy.add_new("ImageOrientationPatient", "DS", _IDENTITY)
    proxy.add_new("PixelSpacing", "DS", [1.0, 1.0])
    proxy.add_new("SliceThickness", "DS", 1.0)
    return proxy


def _multiframe_proxy(ds: Dataset, for_uid: str) -> Dataset:
    proxy = _header(ds)
    proxy.add_new("FrameOfReferenceUID", "UI", for_uid)
    orientation = Dataset()
    orientation.ImageOrientationPatient = _IDENTITY
    measures = Dataset()
    measures.PixelSpacing = [1.0, 1.0]
    measures.SliceThickness = 1.0
    shared = Dataset()
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    proxy.add_new("SharedFunctionalGroupsSequence", "SQ", [shared])
    per_frame = []
    for k in range(number_of_frames(ds)):
        item = Dataset()
        item.PlanePositionSequence = _position(k)
        per_frame.append(item)
    proxy.add_new("PerFrameFunctionalGroupsSequence", "SQ", per_frame)
    return proxy
