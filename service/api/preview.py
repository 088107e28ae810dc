"""A PNG to eyeball a result: one source slice, windowed like the 2D model input, with each segment's
outline in a colour of its own.

The slice is the middle one of the source series (in the series' frame order), or the one asked
for. The SEG is read with highdicom and its masks taken for that source frame; a frame the SEG
does not reference (no finding there) gets no outline. Everything is read from the data directory:
once retention removed the received series or the SEG, there is nothing to draw (:class:`GoneError`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import numpy.typing as npt

from dicom_io.frames import Frame
from dicom_io.intensity import default_normalisation, frame_to_model_input
from dicom_io.pixels import read_frames
from dicom_io.pngenc import encode_png
from dicom_io.reading import scan
from dicom_io.series import assemble
from dicom_io.windows import ModelKind
from service.api.problems import BadRequestError, GoneError
from workers.storage import DataDir
from workers.store import JobView, ResultView

__all__ = ["PALETTE", "Preview", "render_preview"]

# distinct on grey: red, green, blue, yellow, magenta, cyan, orange, violet, lime, pink
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 48, 48),
    (40, 220, 40),
    (60, 140, 255),
    (255, 220, 0),
    (255, 0, 255),
    (0, 230, 230),
    (255, 140, 0),
    (160, 90, 255),
    (170, 255, 0),
    (255, 120, 180),
)


class Preview:
    def __init__(self, png: bytes, slice_index: int, slices: int, segments: int) -> None:
        self.png = png
        self.slice_index = slice_index
        self.slices = slices
        self.segments = segments


def render_preview(
    data: DataDir, job: JobView, result: ResultView, slice_index: int | None = None
) -> Preview:
    seg_path = data.seg(job.study_instance_uid, result.seg_series_instance_uid, result.seg_sop_instance_uid)
    if not seg_path.is_file():
        raise GoneError("the SEG file is no longer in the data directory (retention)")
    frames = _source_frames(data, job)
    index = len(frames) // 2 if slice_index is None else slice_index
    if not 0 <= index < len(frames):
        raise BadRequestError(f"slice {slice_index} is outside 0..{len(frames) - 1}")
    frame = frames[index]
    rgb = _windowed_rgb(frame)
    masks = _masks(hd.seg.segread(seg_path), frame)
    for segment, mask in masks:
        if mask.shape == rgb.shape[:2]:
            rgb[_outline(mask)] = np.asarray(PALETTE[(segment - 1) % len(PALETTE)], dtype=np.uint8)
    return Preview(encode_png(rgb), index, len(frames), len(masks))


def _source_frames(data: DataDir, job: JobView) -> list[Frame]:
    if job.spool_path is None:
        raise GoneError("the job has no received series to draw on")
    folder: Path = data.resolve(job.spool_path)
    if not folder.is_dir():
        raise GoneError("the received series is no longer in the data directory (retention)")
    found = [
        s for s in assemble(scan([folder]).instances) if s.series_instance_uid == job.series_instance_uid
    ]
    if not found or not found[0].frames:
        raise GoneError("no readable image of the series is left in the data directory")
    return list(found[0].frames)


def _windowed_rgb(frame: Frame) -> npt.NDArray[np.uint8]:
    stored = read_frames(frame.instance, [frame.index])[0]
    normalisation = default_normalisation(frame.instance.modality, ModelKind.TWO_D)
    image = frame_to_model_input(stored, frame, normalisation)
    if image.ndim == 3:
        return np.ascontiguousarray(image, dtype=np.uint8)
    grey = np.rint(image).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _masks(seg: hd.seg.Segmentation, frame: Frame) -> list[tuple[int, npt.NDArray[np.bool_]]]:
    """(segment number, mask) for each segment of the SEG on this source frame."""
    numbers = [int(n) for n in seg.segment_numbers]
    try:
        if frame.instance.number_of_frames > 1:
            pixels = seg.get_pixels_by_source_frame(
                frame.sop_instance_uid,
                source_frame_numbers=[frame.index + 1],
                segment_numbers=numbers,
                ignore_spatial_locations=True,
                assert_missing_frames_are_empty=True,
                skip_overlap_checks=True,
            )
        else:
            pixels = seg.get_pixels_by_source_instance(
                [frame.sop_instance_uid],
                segment_numbers=numbers,
                ignore_spatial_locations=True,
                assert_missing_frames_are_empty=True,
                skip_overlap_checks=True,
            )
    except (ValueError, KeyError, IndexError):
        return []  # the SEG says nothing about this frame
    stack = np.asarray(pixels)[0]
    return [(number, stack[..., k] > 0.5) for k, number in enumerate(numbers)]


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    kernel = np.ones((3, 3), np.uint8)
    binary = mask.astype(np.uint8)
    inner = np.asarray(cv2.erode(binary, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), np.uint8)
    edge = binary & (1 - inner)
    if max(mask.shape) >= 768:  # keep the line visible once the image is scaled down to a screen
        edge = np.asarray(cv2.dilate(edge, kernel), np.uint8)
    outline: npt.NDArray[np.bool_] = edge.astype(bool)
    return outline
