"""One series through one model: convert → call the endpoint → masks on the source grid → SEG(s).

Plain functions; the endpoint is a Protocol, so the one-shot command, the Celery task and the tests
hand in what they have (a real client, the mock over HTTP). No store, no queue here.

2D streams frame by frame: each PNG is made, sent in a batch, and its masks mapped back before the
next batches are built, so a 300-slice CT never holds 300 PNGs or 300 probability maps at once.

A 4D series (kind PHASES) is segmented phase by phase as the task chooses (all, first, last): with
the 3D model each phase is its own volume and request, with the 2D model its images; each phase gets
its own SEG instance in the rule's one SEG series (one SEG holding two phases would put two frames
on one plane, which a SEG cannot).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.export2d import iter_model_images
from dicom_io.intensity import Normalisation
from dicom_io.nifti3d import NiftiLayout, VolumeIntensity, export_nifti
from dicom_io.nifti_masks import masks_from_nifti
from dicom_io.png2d import LetterboxTransform, probability_to_masks
from dicom_io.seg import AlgorithmInfo, SegmentationType, SegmentRequest, SegOptions, SegResult, build_seg
from dicom_io.series import Series, SeriesKind
from dicom_io.windows import ModelKind
from workers.endpoint.client import ImageRequest, JobContext
from workers.endpoint.contract import Prediction2D
from workers.jobs import Stage

__all__ = [
    "PhaseChoice",
    "PromptGroup",
    "SegmentationEndpoint",
    "SegmentationTask",
    "SeriesSegmentation",
    "segment_series",
]

StageTimer = Callable[[Stage, float], None]


class SegmentationEndpoint(Protocol):
    def predict_2d(
        self, images: Iterable[ImageRequest], context: JobContext | None = None
    ) -> Iterator[tuple[Hashable, Prediction2D]]: ...

    def predict_3d(
        self, nifti: bytes, prompts: Sequence[str], context: JobContext | None = None
    ) -> bytes: ...


class PhaseChoice(StrEnum):
    """Which phases of a 4D series a rule segments (the rules' ``phases``)."""

    ALL = "all"
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class PromptGroup:
    prompts: tuple[str, ...]
    window: str | None = None  # a preset of the model, "percentile", "voi"; None: the modality's default


@dataclass(frozen=True, slots=True)
class SegmentationTask:
    """What a rule asks of one series."""

    rule_name: str
    model: ModelKind
    groups: tuple[PromptGroup, ...]
    seg_type: SegmentationType = SegmentationType.BINARY
    series_description: str = "MedImageParse AI segmentation"
    series_number: int = 9900
    intensity: VolumeIntensity = VolumeIntensity.UINT8
    layout: NiftiLayout = NiftiLayout.SLICES_FIRST
    phases: PhaseChoice = PhaseChoice.ALL

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(p for group in self.groups for p in group.prompts)


@dataclass(frozen=True, slots=True)
class SeriesSegmentation:
    """The SEG(s) for one series: one per image size (2D sets may mix sizes), and the categories."""

    segs: tuple[SegResult, ...]
    categories: tuple[str | None, ...]  # per prompt: what the 2D endpoint said it found

    @property
    def no_findings(self) -> bool:
        return all(result.dataset is None for result in self.segs)


def segment_series(
    series: Series,
    task: SegmentationTask,
    endpoint: SegmentationEndpoint,
    *,
    algorithm: AlgorithmInfo,
    content_datetime: dt.datetime,
    software_version: str,
    context: JobContext,
    timer: StageTimer | None = None,
) -> SeriesSegmentation:
    clock = _Clock(timer)
    segs: list[SegResult] = []
    found: list[tuple[str | None, ...]] = []
    for part in _parts(series, task):
        if task.model is ModelKind.THREE_D:
            masks, categories = _masks_3d(part, task, endpoint, context, clock)
        else:
            masks, categories = _masks_2d(part, task, endpoint, context, clock)
        found.append(categories)
        with clock(Stage.SEG):
            options = SegOptions(
                rule_name=task.rule_name,
                software_version=software_version,
                device_serial_number=task.rule_name[:64],
                content_datetime=content_datetime,
                series_description=task.series_description,
                series_number=task.series_number,
                segmentation_type=task.seg_type,
                instance_number=len(segs) + 1,
                phase_label=part.phase_label,
            )
            requests = [SegmentRequest(p, c) for p, c in zip(task.prompts, categories, strict=True)]
            voxel = (
                part.geometry.voxel_volume_mm3 if part.kind is SeriesKind.VOLUME and part.geometry else None
            )
            segs.extend(
                build_seg(sources, refs, group_masks, requests, algorithm, options, voxel_volume_mm3=voxel)
                for sources, refs, group_masks in _by_size(part, masks)
            )
    return SeriesSegmentation(tuple(segs), _merged(found))


def _parts(series: Series, task: SegmentationTask) -> list[Series]:
    """What is segmented, one request set and SEG each: the series, or the phases the task chose."""
    if series.kind is not SeriesKind.PHASES or not series.phases:
        return [series]
    if task.phases is PhaseChoice.FIRST:
        return [series.phases[0]]
    if task.phases is PhaseChoice.LAST:
        return [series.phases[-1]]
    # each phase on its own, 2D too: one SEG holding two phases would put two frames on one plane
    return list(series.phases)


def _merged(found: list[tuple[str | None, ...]]) -> tuple[str | None, ...]:
    """Per prompt, the first category any part reported (2D; the 3D endpoint reports none)."""
    merged = list(found[0])
    for categories in found[1:]:
        merged = [m if m is not None else c for m, c in zip(merged, categories, strict=True)]
    return tuple(merged)


@dataclass
class _Open:
    stage: Stage
    resumed: float  # when this span last started counting
    seconds: float = 0.0


class _Clock:
    """Exclusive seconds per stage: 2D nests convert (pulled by the client) inside infer, and a
    nested span pauses the one around it, so no second is counted twice."""

    def __init__(self, timer: StageTimer | None) -> None:
        self._timer = timer
        self._stack: list[_Open] = []

    @contextmanager
    def __call__(self, stage: Stage) -> Iterator[None]:
        now = time.perf_counter()
        if self._stack:
            self._stack[-1].seconds += now - self._stack[-1].resumed
        span = _Open(stage, now)
        self._stack.append(span)
        try:
            yield
        finally:
            end = time.perf_counter()
            self._stack.pop()
            if self._timer is not None:
                self._timer(stage, span.seconds + end - span.resumed)
            if self._stack:
                self._stack[-1].resumed = end


def _masks_2d(
    series: Series, task: SegmentationTask, endpoint: SegmentationEndpoint, context: JobContext, clock: _Clock
) -> tuple[list[npt.NDArray[np.bool_]], tuple[str | None, ...]]:
    """Per frame, ``[rows, cols, n_prompts]`` masks; and the endpoint's category per prompt."""
    frames = series.frames
    masks = [np.zeros((f.instance.rows, f.instance.columns, len(task.prompts)), dtype=bool) for f in frames]
    votes: list[Counter[str]] = [Counter() for _ in task.prompts]
    offset = 0
    for group in task.groups:
        norm = Normalisation.parse(group.window, ModelKind.TWO_D, series.modality)
        transforms: dict[int, LetterboxTransform] = {}
        predictions = endpoint.predict_2d(_requests(series, group, norm, transforms, clock), context)
        while True:
            with clock(Stage.INFER):
                item = next(predictions, None)
            if item is None:
                break
            key, prediction = item
            k = int(str(key))
            with clock(Stage.IMPORT):
                found = probability_to_masks(
                    prediction.masks,
                    transforms.pop(k),
                    sop_instance_uid=frames[k].sop_instance_uid,
                    series_instance_uid=series.series_instance_uid,
                )
                masks[k][..., offset : offset + len(group.prompts)] = np.moveaxis(found, 0, -1)
            for n, category in enumerate(prediction.categories):
                votes[offset + n][category] += 1
        offset += len(group.prompts)
    categories = tuple(v.most_common(1)[0][0] if v else None for v in votes)
    return masks, categories


def _requests(
    series: Series,
    group: PromptGroup,
    norm: Normalisation,
    transforms: dict[int, LetterboxTransform],
    clock: _Clock,
) -> Iterator[ImageRequest]:
    """The group's images, made one at a time as the client asks; each transform kept for its masks."""
    images = iter_model_images(series, norm)
    for k in range(len(series.frames)):
        with clock(Stage.CONVERT):
            image = next(images)
        transforms[k] = image.transform
        yield ImageRequest(k, image.png, group.prompts)


def _masks_3d(
    series: Series, task: SegmentationTask, endpoint: SegmentationEndpoint, context: JobContext, clock: _Clock
) -> tuple[list[npt.NDArray[np.bool_]], tuple[str | None, ...]]:
    geometry = series.require_volume()
    stacked = np.zeros((geometry.slices, geometry.rows, geometry.columns, len(task.prompts)), dtype=bool)
    offset = 0
    for group in task.groups:
        norm = Normalisation.parse(group.window, ModelKind.THREE_D, series.modality) if group.window else None
        with clock(Stage.CONVERT):
            nifti, volume = export_nifti(
                series, intensity=task.intensity, normalisation=norm, layout=task.layout
            )
        with clock(Stage.INFER):
            answer = endpoint.predict_3d(nifti, group.prompts, context)
        with clock(Stage.IMPORT):
            found = masks_from_nifti(answer, volume, len(group.prompts))  # [n, k, rows, cols]
            stacked[..., offset : offset + len(group.prompts)] = np.moveaxis(found, 0, -1)
        offset += len(group.prompts)
    return list(stacked), tuple(None for _ in task.prompts)


def _by_size(
    series: Series, masks: Sequence[npt.NDArray[np.bool_]]
) -> Iterator[tuple[list[Dataset], list[tuple[int, int]], npt.NDArray[np.bool_]]]:
    """Source headers, frame references and stacked masks per image size (one SEG each)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, frame in enumerate(series.frames):
        groups[(frame.instance.rows, frame.instance.columns)].append(k)
    for members in groups.values():
        instances: dict[str, int] = {}
        sources: list[Dataset] = []
        refs: list[tuple[int, int]] = []
        for k in members:
            frame = series.frames[k]
            if frame.sop_instance_uid not in instances:
                instances[frame.sop_instance_uid] = len(sources)
                sources.append(frame.instance.header)
            refs.append((instances[frame.sop_instance_uid], frame.index))
        yield sources, refs, np.stack([masks[k] for k in members])
