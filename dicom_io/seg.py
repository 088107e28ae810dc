"""Model masks → one DICOM Segmentation (SEG) instance, built with highdicom.

The SEG goes into a hospital PACS and in front of a radiologist, so:

- one segment per prompt, labelled with the prompt and coded by :mod:`dicom_io.codes`; segments
  whose mask is empty are left out (and reported), and no SEG at all is built when every segment
  is empty: "no findings" is a job result, not an empty object in the PACS;
- UIDs come from :mod:`dicom_io.uids` and every date/time from ``options.content_datetime``, so a
  retried job writes a byte-identical object that the PACS de-duplicates;
- the ReferencedSeriesSequence and per-frame derivation references OHIF needs come from
  highdicom; sources without patient coordinates are planned in :mod:`dicom_io.seg_layout`.

Sources of different sizes raise :class:`SegBuildError` naming the sizes: the caller groups by
size (one SEG per group) because only it knows how the groups should be named and numbered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicom_io.codes import coded_target
from dicom_io.errors import SegBuildError
from dicom_io.seg_content import (
    character_set,
    clean_text,
    coding_schemes,
    describe_segment,
    finish,
    plain_dataset,
)
from dicom_io.seg_layout import SourcePlan, complete_references, plan_sources, strip_synthetic_geometry
from dicom_io.uids import seg_instance_uid, seg_series_uid

__all__ = [
    "FRACTIONAL_THRESHOLD",
    "AlgorithmInfo",
    "SegOptions",
    "SegResult",
    "SegmentRequest",
    "SegmentStats",
    "SegmentationType",
    "build_seg",
]

# Contract §2.3: the endpoint's 0..255 masks mean probability × 255; p > 0.5 ⇔ value >= 128.
FRACTIONAL_THRESHOLD = 128


class SegmentationType(StrEnum):
    BINARY = "BINARY"
    FRACTIONAL = "FRACTIONAL"  # written as PROBABILITY with MaximumFractionalValue 255


@dataclass(frozen=True, slots=True)
class AlgorithmInfo:
    """The model; its family is always "Artificial Intelligence" (DCM 123110, CID 7162)."""

    name: str
    version: str
    source: str | None = None

    def __post_init__(self) -> None:
        _require_lo(name=self.name, version=self.version, source=self.source or "-")


@dataclass(frozen=True, slots=True)
class SegmentRequest:
    prompt: str
    endpoint_category: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SegOptions:
    rule_name: str
    software_version: str
    device_serial_number: str
    # Supplied by the caller (the job's first run) so that a retry writes the same bytes.
    content_datetime: dt.datetime
    series_description: str = "MedImageParse AI segmentation"
    series_number: int = 9900
    segmentation_type: SegmentationType = SegmentationType.BINARY
    content_label: str = "MIPSEG"
    manufacturer: str = "mip-gateway"
    manufacturer_model_name: str = "mip-gateway"
    instance_number: int = 1
    # the phase of a 4D series this SEG is for ("TemporalPositionIdentifier 2"): first in the
    # Content Description, where a viewer shows it beside each SEG instance of the series
    phase_label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "segmentation_type", SegmentationType(self.segmentation_type))
        _require_lo(
            series_description=self.series_description,
            manufacturer=self.manufacturer,
            manufacturer_model_name=self.manufacturer_model_name,
            software_version=self.software_version,
            device_serial_number=self.device_serial_number,
        )
        if not (0 <= self.series_number < 2**31 and 0 < self.instance_number < 2**31):
            raise ValueError("series_number and instance_number must be IS values (instance_number >= 1)")
        label = self.content_label
        if not (0 < len(label) <= 16 and all(c.isupper() or c.isdigit() or c in " _" for c in label)):
            raise ValueError(f"content_label must be a DICOM CS value (A-Z, 0-9, space, _; ≤16): {label!r}")


def _content_description(options: SegOptions, algorithm: AlgorithmInfo) -> str:
    parts = [options.phase_label, f"{algorithm.name} {algorithm.version}", f"rule {options.rule_name}"]
    return clean_text("; ".join(part for part in parts if part))[:64]


def _require_lo(**values: str) -> None:
    # Attributes of VR LO: at most 64 characters, no backslash (the value separator), not empty.
    for name, value in values.items():
        if not value.strip() or len(value) > 64 or "\\" in value:
            raise ValueError(f"{name} must be 1-64 characters without backslash: {value!r}")


@dataclass(frozen=True, slots=True)
class SegmentStats:
    segment_number: int | None  # number in the SEG; None when the segment was empty and left out
    prompt: str
    pixel_count: int  # mask pixels (FRACTIONAL: pixels >= FRACTIONAL_THRESHOLD)
    volume_ml: float | None
    empty: bool
    frames: int  # mask frames containing at least one counted pixel


@dataclass(frozen=True, slots=True)
class SegResult:
    dataset: Dataset | None  # None when every segment is empty ("no findings")
    segments: tuple[SegmentStats, ...] = field(default=())


def build_seg(
    source_images: Sequence[Dataset],
    frame_refs: Sequence[tuple[int, int]],
    masks: np.ndarray,
    segments: Sequence[SegmentRequest],
    algorithm: AlgorithmInfo,
    options: SegOptions,
    *,
    voxel_volume_mm3: float | None = None,
) -> SegResult:
    """Build the SEG for ``masks`` over the referenced source frames.

    ``frame_refs[i] = (index into source_images, 0-based frame)`` says which source frame mask
    frame ``i`` lies on, in any spatial order. ``masks`` is ``[len(frame_refs), Rows, Columns,
    len(segments)]``: bool for BINARY, uint8 probabilities (0..255) for FRACTIONAL.
    """
    series_uid = str(source_images[0].get("SeriesInstanceUID", "")) if source_images else None
    try:
        plan = plan_sources(source_images, frame_refs)
    except (ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        # ValueError: our checks; the others: source headers missing what their IOD promises
        raise SegBuildError(f"cannot use the sources: {exc}", series_instance_uid=series_uid) from exc
    _check_masks(masks, plan, segments, options.segmentation_type, series_uid)

    nonzero, counted = _frame_tables(masks, options.segmentation_type)
    stats = _segment_stats(counted, segments, voxel_volume_mm3)
    kept = [i for i, s in enumerate(stats) if not s.empty]
    if not kept:
        return SegResult(None, stats)

    targets = [coded_target(segments[i].prompt, segments[i].endpoint_category) for i in kept]
    descriptions = [
        describe_segment(number, segments[i].prompt, target, algorithm)
        for number, (i, target) in enumerate(zip(kept, targets, strict=True), start=1)
    ]
    # highdicom would drop empty frames itself, but only after whole-array checks (an int64 sum
    # over all segments to detect overlap) that cost seconds for a 300-slice series: hand it the
    # frames with content only, and restore the full reference list afterwards.
    content = np.flatnonzero(nonzero[:, kept].any(axis=1))
    pixels = masks if len(content) == masks.shape[0] else masks[content]
    if len(kept) < masks.shape[3]:
        pixels = pixels[..., kept]
    if options.segmentation_type is SegmentationType.BINARY:
        pixels = _as_label_map(pixels)
    if options.segmentation_type is SegmentationType.FRACTIONAL:
        # highdicom 0.28 accepts integer masks only if binary; probabilities must be float in [0, 1]
        # (it rounds value × 255 back to the same uint8). float32 keeps that exact and halves memory.
        pixels = pixels.astype(np.float32) / np.float32(255)
    hd_plan = plan.subset(content.tolist())

    seg_series = seg_series_uid(str(series_uid), options.rule_name, algorithm.name, algorithm.version)
    content_key = [options.segmentation_type.value, *(s.prompt for s in segments)]
    sop_uid = seg_instance_uid(seg_series, plan.referenced_sop_instance_uids, content_key)
    texts = [s.prompt for s in segments] + [options.series_description, options.rule_name, algorithm.name]
    schemes = coding_schemes(targets)
    charset = character_set(texts, source_images[0])
    try:
        seg = hd.seg.Segmentation(
            source_images=list(hd_plan.hd_sources),
            pixel_array=pixels,
            segmentation_type=options.segmentation_type.value,
            segment_descriptions=descriptions,
            series_instance_uid=seg_series,
            series_number=options.series_number,
            sop_instance_uid=sop_uid,
            instance_number=options.instance_number,
            manufacturer=options.manufacturer,
            manufacturer_model_name=options.manufacturer_model_name,
            software_versions=options.software_version,
            device_serial_number=options.device_serial_number,
            max_fractional_value=255,
            content_label=options.content_label,
            content_description=_content_description(options, algorithm),
            plane_positions=None if hd_plan.plane_positions is None else list(hd_plan.plane_positions),
            omit_empty_frames=True,
            series_description=options.series_description,
            content_date=options.content_datetime.date(),
            content_time=options.content_datetime.time(),
            series_date=options.content_datetime.date(),
            series_time=options.content_datetime.time(),
            coding_schemes=schemes,
            specific_character_set=charset,
        )
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        reason = f"highdicom could not build the SEG: {exc}"
        raise SegBuildError(reason, series_instance_uid=series_uid) from exc

    if plan.synthetic_geometry:
        strip_synthetic_geometry(seg, plan)
    complete_references(seg, plan)
    finish(seg, plan.patient_orientation, algorithm, options.content_datetime, sop_uid)
    return SegResult(plain_dataset(seg), stats)


def _check_masks(
    masks: np.ndarray,
    plan: SourcePlan,
    segments: Sequence[SegmentRequest],
    kind: SegmentationType,
    series_uid: str | None,
) -> None:
    def fail(reason: str) -> SegBuildError:
        return SegBuildError(reason, series_instance_uid=series_uid)

    if not segments:
        raise fail("no segments requested")
    blank = [i for i, s in enumerate(segments) if not s.prompt.strip()]
    if blank:
        raise fail(f"segments {blank} have an empty prompt")
    if not isinstance(masks, np.ndarray):
        raise fail(f"masks must be a numpy array, not {type(masks).__name__}")
    expected = (plan.frame_count, plan.rows, plan.columns, len(segments))
    if masks.shape != expected:
        raise fail(f"masks have shape {masks.shape}, expected [frames, Rows, Columns, segments] = {expected}")
    wanted = np.dtype(np.bool_) if kind is SegmentationType.BINARY else np.dtype(np.uint8)
    if masks.dtype != wanted:
        raise fail(f"{kind.value} masks must have dtype {wanted}, not {masks.dtype}")


def _as_label_map(pixels: np.ndarray) -> np.ndarray:
    """Non-overlapping binary segments as one uint8 label map ``[frames, rows, cols]``.

    highdicom checks a 4D stack for overlap by summing it into an int64 array (0.5 s per check at
    460 frames of 512²); a label map is checked with one max(). Overlapping segments (a lesion
    inside its organ) stay a 4D stack, which highdicom encodes as such.
    """
    if pixels.shape[-1] > 255:
        return pixels
    labels = np.zeros(pixels.shape[:-1], dtype=np.uint8)
    covered = np.zeros(pixels.shape[:-1], dtype=bool)
    for index in range(pixels.shape[-1]):
        segment = pixels[..., index]
        if np.logical_and(covered, segment).any():
            return pixels
        labels[segment] = index + 1
        covered |= segment
    return labels


def _frame_tables(masks: np.ndarray, kind: SegmentationType) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and segment: any nonzero pixel, and the number of counted pixels.

    Only frames with some nonzero pixel are looked at per segment (a frame test is one
    short-circuiting pass); a reduction over the segment axis of the whole array would be ~50×
    slower, because that axis is the innermost.
    """
    n_frames, n_segments = masks.shape[0], masks.shape[3]
    nonzero = np.zeros((n_frames, n_segments), dtype=bool)
    counted = np.zeros((n_frames, n_segments), dtype=np.int64)
    for i in np.flatnonzero(masks.reshape(n_frames, -1).any(axis=1)):
        frame = masks[i]
        for j in range(n_segments):
            plane = frame[..., j]
            nonzero[i, j] = plane.any()
            if nonzero[i, j]:
                kept = plane if kind is SegmentationType.BINARY else plane >= FRACTIONAL_THRESHOLD
                counted[i, j] = np.count_nonzero(kept)
    return nonzero, counted


def _segment_stats(
    counted: np.ndarray, segments: Sequence[SegmentRequest], voxel_volume_mm3: float | None
) -> tuple[SegmentStats, ...]:
    stats = []
    number = 0
    for i, request in enumerate(segments):
        pixels = int(counted[:, i].sum())
        empty = pixels == 0
        number += 0 if empty else 1
        stats.append(
            SegmentStats(
                segment_number=None if empty else number,
                prompt=request.prompt,
                pixel_count=pixels,
                volume_ml=None if voxel_volume_mm3 is None else pixels * voxel_volume_mm3 / 1000.0,
                empty=empty,
                frames=int(np.count_nonzero(counted[:, i])),
            )
        )
    return tuple(stats)
