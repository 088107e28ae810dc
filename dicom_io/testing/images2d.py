"""Seeded 2D images without patient coordinates: CR/DX radiographs, RGB ultrasound, secondary capture.

Their truth is in pixel space (see :class:`~dicom_io.testing.scene.ImagePhantom`). Every scene is
off-centre and asymmetric, so a flipped, transposed or wrongly cropped mask disagrees with it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from dicom_io.testing.modules import StudyInfo, add_common_modules, set_pixel_data
from dicom_io.testing.paint2d import Identity, paint
from dicom_io.testing.radiography import add_radiography_modules
from dicom_io.testing.scene import Ellipse, ImagePhantom, Rectangle
from dicom_io.testing.uids import seeded_uid

__all__ = ["cr_dx_image", "secondary_capture", "us_rgb"]

_XRAY_MAX = 4095


def cr_dx_image(
    *,
    modality: Literal["CR", "DX"] = "CR",
    rows: int = 300,
    columns: int = 256,
    monochrome1: bool = True,
    voi_lut_sequence: bool = False,
    seed: int = 0,
    patient_id: str = "PHANTOM",
    patient_name: str | None = None,
    study_description: str | None = None,
    series_description: str | None = None,
    body_part_examined: str | None = "CHEST",
    series_number: int = 1,
    study: StudyInfo | None = None,
) -> ImagePhantom:
    """A 12-bit radiograph: a soft-tissue ``"body"``, an elongated ``"bone"`` (the target) to the
    left of centre and a small round lead ``"marker"`` near the top right.

    Bone and marker are bright on display; in MONOCHROME1 (the default) that means *low* stored
    values. WindowCenter/WindowWidth are given, or with ``voi_lut_sequence`` a VOILUTSequence
    (a 4096-entry sigmoid, 12-bit output) instead. A DX is "For Presentation" with an identity
    rescale and the Presentation LUT Shape that its photometric interpretation requires.
    """
    if modality not in ("CR", "DX"):
        raise ValueError(f"modality must be CR or DX, not {modality!r}")
    key = ("radiograph", modality, rows, columns, monochrome1, voi_lut_sequence, body_part_examined)

    def stored(display: int) -> tuple[int]:
        return (_XRAY_MAX - display,) if monochrome1 else (display,)

    shapes: tuple[Ellipse | Rectangle, ...] = (
        Ellipse((0.52 * rows, 0.48 * columns), (0.42 * rows, 0.38 * columns), stored(1500), "body"),
        Rectangle((0.58 * rows, 0.33 * columns), (0.22 * rows, 0.06 * columns), stored(3300), "bone"),
        Ellipse((0.18 * rows, 0.76 * columns), (0.05 * rows, 0.05 * rows), stored(3900), "marker"),
    )
    pixels = paint(
        shapes,
        rows=rows,
        columns=columns,
        frames=1,
        background=stored(300),
        noise_sd=20.0,
        max_value=_XRAY_MAX,
        rng=np.random.default_rng(seed),
    )
    ds = _image_dataset(
        Identity(
            modality,
            seed,
            patient_id,
            patient_name,
            study_description,
            series_description,
            body_part_examined,
            series_number,
            study,
        ),
        key,
        ComputedRadiographyImageStorage if modality == "CR" else DigitalXRayImageStorageForPresentation,
        f"{modality} {body_part_examined or 'PHANTOM'} PA",
    )
    set_pixel_data(
        ds,
        pixels[0, ..., 0],
        photometric_interpretation="MONOCHROME1" if monochrome1 else "MONOCHROME2",
        bits_stored=12,
    )
    add_radiography_modules(ds, monochrome1=monochrome1, voi_lut_sequence=voi_lut_sequence)
    return ImagePhantom(datasets=(ds,), objects=shapes, target_label="bone")


def us_rgb(
    *,
    frames: int = 1,
    rows: int = 120,
    columns: int = 160,
    seed: int = 0,
    patient_id: str = "PHANTOM",
    patient_name: str | None = None,
    study_description: str | None = None,
    series_description: str | None = None,
    body_part_examined: str | None = "ABDOMEN",
    series_number: int = 1,
    study: StudyInfo | None = None,
) -> ImagePhantom:
    """An RGB ultrasound image (PlanarConfiguration 0, no Frame of Reference): grey ``"tissue"``,
    an orange ``"blob"`` (the target) that moves two columns to the right per frame, and a small
    cyan ``"marker"`` at the top left. ``frames > 1`` gives Ultrasound Multi-frame Image Storage
    with NumberOfFrames, FrameTime and FrameIncrementPointer."""
    if frames < 1:
        raise ValueError("frames must be at least 1")
    key = ("us", frames, rows, columns, body_part_examined)
    shapes: tuple[Ellipse | Rectangle, ...] = (
        Ellipse((0.55 * rows, 0.5 * columns), (0.4 * rows, 0.45 * columns), (90, 90, 90), "tissue"),
        Ellipse(
            (0.62 * rows, 0.36 * columns), (0.16 * rows, 0.1 * columns), (220, 120, 30), "blob", (0.0, 2.0)
        ),
        Rectangle((0.12 * rows, 0.12 * columns), (0.04 * rows, 0.05 * columns), (30, 200, 230), "marker"),
    )
    pixels = paint(
        shapes,
        rows=rows,
        columns=columns,
        frames=frames,
        background=(0, 0, 0),
        noise_sd=4.0,
        max_value=255,
        rng=np.random.default_rng(seed),
    )
    sop_class = UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage
    identity = Identity(
        "US",
        seed,
        patient_id,
        patient_name,
        study_description,
        series_description,
        body_part_examined,
        series_number,
        study,
    )
    ds = _image_dataset(identity, key, sop_class, f"US {body_part_examined or 'PHANTOM'}")
    set_pixel_data(
        ds,
        pixels.astype(np.uint8) if frames > 1 else pixels[0].astype(np.uint8),
        photometric_interpretation="RGB",
        bits_stored=8,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = Tag("FrameTime")
        ds.CineRate = 30
    return ImagePhantom(datasets=(ds,), objects=shapes, target_label="blob")


def secondary_capture(
    *,
    rgb: bool = False,
    rows: int = 128,
    columns: int = 160,
    seed: int = 0,
    patient_id: str = "PHANTOM",
    patient_name: str | None = None,
    study_description: str | None = None,
    series_description: str | None = None,
    body_part_examined: str | None = None,
    series_number: int = 1,
    study: StudyInfo | None = None,
) -> ImagePhantom:
    """An 8-bit Secondary Capture (MONOCHROME2, or RGB with ``rgb``): a ``"panel"``, a round
    ``"lesion"`` (the target) low and to the right, and a small ``"marker"`` at the top left."""
    key = ("sc", rgb, rows, columns, body_part_examined)

    def colour(grey: int, rgb_value: tuple[int, int, int]) -> tuple[int, ...]:
        return rgb_value if rgb else (grey,)

    shapes: tuple[Ellipse | Rectangle, ...] = (
        Rectangle(
            (0.5 * rows, 0.5 * columns), (0.4 * rows, 0.42 * columns), colour(70, (40, 60, 90)), "panel"
        ),
        Ellipse(
            (0.64 * rows, 0.66 * columns), (0.14 * rows, 0.14 * rows), colour(200, (230, 60, 60)), "lesion"
        ),
        Rectangle(
            (0.16 * rows, 0.14 * columns),
            (0.04 * rows, 0.04 * columns),
            colour(250, (250, 250, 80)),
            "marker",
        ),
    )
    pixels = paint(
        shapes,
        rows=rows,
        columns=columns,
        frames=1,
        background=colour(10, (10, 10, 10)),
        noise_sd=3.0,
        max_value=255,
        rng=np.random.default_rng(seed),
    )
    identity = Identity(
        "OT",
        seed,
        patient_id,
        patient_name,
        study_description,
        series_description,
        body_part_examined,
        series_number,
        study,
    )
    ds = _image_dataset(identity, key, SecondaryCaptureImageStorage, "SECONDARY CAPTURE")
    image = pixels[0].astype(np.uint8)
    set_pixel_data(
        ds,
        image if rgb else image[..., 0],
        photometric_interpretation="RGB" if rgb else "MONOCHROME2",
        bits_stored=8,
    )
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    return ImagePhantom(datasets=(ds,), objects=shapes, target_label="lesion")


def _image_dataset(identity: Identity, key: object, sop_class_uid: str, description: str) -> Dataset:
    study = identity.study_info(key)
    series = identity.series_info(key, study, description)
    ds = Dataset()
    add_common_modules(
        ds,
        study=study,
        series=series,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=seeded_uid(identity.seed, "instance", series.series_instance_uid, 0),
        instance_number=1,
    )
    # Type 2C: required for images without Image Orientation (Patient); these have none.
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    return ds
