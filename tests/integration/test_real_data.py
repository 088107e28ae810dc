"""The real DICOM sets in ../shared (CT, MR, CR, US, enhanced, compressed): every image series reads
and becomes model input, except the known-bad 12-bit lossy JPEGs, which fail with a named error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dicom_io.errors import UnsupportedPixelDataError
from dicom_io.intensity import default_normalisation, frame_to_model_input
from dicom_io.pixels import read_frames
from dicom_io.png2d import letterbox_transform, to_model_image
from dicom_io.reading import scan
from dicom_io.series import Series, SeriesKind, assemble
from dicom_io.windows import ModelKind

pytestmark = pytest.mark.integration


def _model_images(series: Series, count: int = 2) -> list[np.ndarray]:
    norm = default_normalisation(series.modality, ModelKind.TWO_D)
    images = []
    for frame in series.frames[:: max(1, len(series.frames) // count)][:count]:
        image = frame_to_model_input(read_frames(frame.instance, [frame.index])[0], frame, norm)
        images.append(to_model_image(image, letterbox_transform(frame.instance.rows, frame.instance.columns)))
    return images


def test_every_real_image_series_becomes_model_input(shared_dicom: Path) -> None:
    result = scan([shared_dicom])
    assert all(s.path.name == "README.md" for s in result.skipped)
    seen = 0
    for series in assemble(result.instances):
        if series.kind is SeriesKind.NON_IMAGE:
            assert series.modality == "SEG"
            continue
        bad = [i for i in series.instances if "JPLY" in str(i.path)]
        if bad:
            with pytest.raises(UnsupportedPixelDataError, match="JPEG Extended"):
                read_frames(bad[0])
            continue
        for image in _model_images(series):
            assert image.shape == (1024, 1024, 3)
            assert image.max() > image.min(), series.series_instance_uid
        seen += 1
    assert seen >= 15


def test_lossless_copies_of_one_radiograph_give_identical_model_input(shared_dicom: Path) -> None:
    (series,) = assemble(scan([shared_dicom / "cr-chest-pa-mono1"]).instances)
    uncompressed, j2k = (_model_images(dataclasses.replace(series, frames=(f,)), 1)[0] for f in series.frames)
    np.testing.assert_array_equal(uncompressed, j2k)
    # MONOCHROME1 inverted: the mediastinum and spine (dense) come out brighter than the lungs
    centre = uncompressed[400:600, 480:544, 0].mean()
    lung = np.concatenate([uncompressed[400:600, 250:350, 0], uncompressed[400:600, 680:780, 0]]).mean()
    assert centre > lung


def test_palette_colour_ultrasound_is_rgb(shared_dicom: Path) -> None:
    result = scan([shared_dicom / "us-color"])
    palette = [i for i in result.instances if i.header.PhotometricInterpretation == "PALETTE COLOR"]
    assert palette
    for series in assemble(palette):
        (image,) = _model_images(series, 1)
        assert not np.array_equal(image[..., 0], image[..., 1])  # real colour, not grey
