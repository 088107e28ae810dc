"""A series → the 1024² RGB PNGs MedImageParse takes, one per frame, streamed frame by frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dicom_io.errors import InvalidSeriesError
from dicom_io.frames import Frame
from dicom_io.intensity import Normalisation, default_normalisation, frame_to_model_input
from dicom_io.pixels import read_frames
from dicom_io.png2d import LetterboxTransform, encode_png, letterbox_transform, to_model_image
from dicom_io.series import Series, SeriesKind
from dicom_io.windows import ModelKind

__all__ = ["ModelImage", "iter_model_images", "png_name"]


@dataclass(frozen=True, slots=True)
class ModelImage:
    frame: Frame
    png: bytes
    transform: LetterboxTransform


def png_name(frame: Frame) -> str:
    """``<SOPInstanceUID>.png``, or ``<SOPInstanceUID>_<frame number>.png`` for multi-frame instances."""
    if frame.instance.number_of_frames > 1:
        return f"{frame.sop_instance_uid}_{frame.index + 1}.png"
    return f"{frame.sop_instance_uid}.png"


def iter_model_images(series: Series, normalisation: Normalisation | None = None) -> Iterator[ModelImage]:
    """Every frame of the series as a model-ready PNG, in the series' frame order."""
    if series.kind is SeriesKind.NON_IMAGE:
        raise InvalidSeriesError(
            f"{series.modality} series holds no images to segment",
            series_instance_uid=series.series_instance_uid,
        )
    norm = normalisation or default_normalisation(series.modality, ModelKind.TWO_D)
    for frame in series.frames:
        stored = read_frames(frame.instance, [frame.index])[0]
        image = frame_to_model_input(stored, frame, norm)
        transform = letterbox_transform(frame.instance.rows, frame.instance.columns)
        yield ModelImage(frame, encode_png(to_model_image(image, transform)), transform)
