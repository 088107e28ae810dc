"""CR/DX, ultrasound and secondary-capture generators: pixel-space truth and the tags that matter."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.pixels.processing import apply_voi_lut
from pydicom.tag import Tag
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from dicom_io.testing import ImagePhantom, cr_dx_image, secondary_capture, us_rgb
from tests.unit.dicom_io.testing.part10 import part10_bytes, reread


def _is_asymmetric(mask: np.ndarray) -> bool:
    return not any(np.array_equal(mask, flipped) for flipped in (mask[::-1], mask[:, ::-1], mask[::-1, ::-1]))


@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_monochrome1_radiograph_stores_bone_low(modality: str) -> None:
    phantom = cr_dx_image(modality=modality)  # type: ignore[arg-type]
    ds = reread(phantom.datasets[0])
    assert ds.SOPClassUID == (
        ComputedRadiographyImageStorage if modality == "CR" else DigitalXRayImageStorageForPresentation
    )
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (
        "MONOCHROME1",
        16,
        12,
        11,
    )
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.15, 0.143]
    assert "WindowCenter" in ds
    assert "WindowWidth" in ds
    assert "VOILUTSequence" not in ds
    pixels = ds.pixel_array
    bone, body = phantom.truth_mask(0), phantom.truth_mask(0, label="body")
    assert bone.sum() > 1000
    assert _is_asymmetric(bone)
    assert _is_asymmetric(phantom.truth_mask(0, label="marker"))
    # Bright on display is low in MONOCHROME1: bone below soft tissue below background.
    soft = body & ~bone & ~phantom.truth_mask(0, label="marker")
    assert pixels[bone].mean() < pixels[soft].mean() < pixels[~body].mean()
    assert pixels.max() <= 4095


def test_monochrome2_radiograph_is_the_same_picture() -> None:
    one = cr_dx_image().datasets[0].pixel_array.astype(int)
    two = cr_dx_image(monochrome1=False)
    assert two.datasets[0].PhotometricInterpretation == "MONOCHROME2"
    pixels = two.datasets[0].pixel_array
    assert pixels[two.truth_mask(0)].mean() > pixels[~two.truth_mask(0, label="body")].mean()
    # The same scene, stored inverted; only the noise differs in sign.
    assert np.abs((4095 - pixels.astype(int)) - one).max() <= 200


@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_voi_lut_sequence_replaces_the_window(modality: str) -> None:
    ds = reread(cr_dx_image(modality=modality, voi_lut_sequence=True).datasets[0])  # type: ignore[arg-type]
    assert "WindowCenter" not in ds
    lut = ds.VOILUTSequence[0]
    assert list(lut.LUTDescriptor) == [4096, 0, 16]
    assert len(lut.LUTData) == 4096
    shown = apply_voi_lut(ds.pixel_array, ds)
    assert shown.min() >= 0
    assert 60000 < shown.max() <= 65535


@pytest.mark.parametrize("frames", [1, 5])
def test_ultrasound_rgb(frames: int) -> None:
    phantom = us_rgb(frames=frames)
    ds = reread(phantom.datasets[0])
    assert ds.SOPClassUID == (UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage)
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration) == (3, "RGB", 0)
    assert "FrameOfReferenceUID" not in ds
    assert "ImagePositionPatient" not in ds
    pixels = ds.pixel_array if frames > 1 else ds.pixel_array[None]
    assert pixels.shape == (frames, 120, 160, 3)
    if frames > 1:
        assert int(ds.NumberOfFrames) == frames
        assert ds.FrameIncrementPointer == Tag("FrameTime")
    for frame in range(frames):
        blob = phantom.truth_mask(0, frame)
        assert _is_asymmetric(blob)
        np.testing.assert_allclose(pixels[frame][blob].mean(axis=0), [220, 120, 30], atol=2)
    if frames > 1:
        # The blob moves two columns per frame, so frame indexing errors show.
        assert np.array_equal(np.roll(phantom.truth_mask(0, 0), 2, axis=1), phantom.truth_mask(0, 1))
        with pytest.raises(IndexError):
            phantom.truth_mask(0, frames)


@pytest.mark.parametrize("rgb", [False, True])
def test_secondary_capture(rgb: bool) -> None:
    phantom = secondary_capture(rgb=rgb)
    ds = reread(phantom.datasets[0])
    assert (ds.Modality, ds.ConversionType) == ("OT", "WSD")
    assert ds.PhotometricInterpretation == ("RGB" if rgb else "MONOCHROME2")
    lesion = phantom.truth_mask(0)
    assert _is_asymmetric(lesion)
    expected = [230, 60, 60] if rgb else 200
    np.testing.assert_allclose(ds.pixel_array[lesion].mean(axis=0), expected, atol=1)


@pytest.mark.parametrize("make", [cr_dx_image, us_rgb, secondary_capture], ids=["cr", "us", "sc"])
def test_2d_generators_are_deterministic(make: object) -> None:
    assert callable(make)
    first: ImagePhantom = make(seed=7)
    again: ImagePhantom = make(seed=7)
    other: ImagePhantom = make(seed=8)
    assert part10_bytes(first.datasets[0]) == part10_bytes(again.datasets[0])
    assert first.datasets[0].SOPInstanceUID != other.datasets[0].SOPInstanceUID
