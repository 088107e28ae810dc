from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.errors import UnsupportedPixelDataError
from dicom_io.frames import frames_of
from dicom_io.intensity import Normalisation, NormalisationKind, frame_to_model_input
from dicom_io.pixels import modality_values, read_frames, uniform_rescale
from dicom_io.reading import read_instance, scan
from dicom_io.testing import (
    SUPPORTED_TRANSFER_SYNTAXES,
    EncoderUnavailableError,
    cr_dx_image,
    encode,
    secondary_capture,
    us_rgb,
    write_datasets,
)
from dicom_io.testing.phantoms import volume_phantom


@pytest.mark.parametrize("stored_dtype", ["uint16", "int16"])
def test_raw_read_equals_pydicom(tmp_path: Path, stored_dtype: str) -> None:
    files = volume_phantom(slices=3, stored_dtype=stored_dtype, seed=4).write(tmp_path)  # type: ignore[arg-type]
    for path in files:
        instance = read_instance(path)
        assert instance.pixel_data_offset is not None
        np.testing.assert_array_equal(read_frames(instance)[0], pydicom.dcmread(path).pixel_array)


def test_unused_high_bits_are_masked_and_signed_values_extended(tmp_path: Path) -> None:
    ds = volume_phantom(slices=1, stored_dtype="int16").datasets[0]
    values = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    garbage = (values.view(np.uint16) & 0x0FFF) | 0xA000  # overlay bits above BitsStored 12
    ds.Rows, ds.Columns, ds.BitsStored, ds.HighBit = 1, 4, 12, 11
    ds.PixelData = garbage.astype(np.uint16).tobytes()
    path = tmp_path / "12bit.dcm"
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_frames(read_instance(path))[0], values)


def test_modality_lut_uses_slope_and_intercept(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=2, rescale_slope=0.5, rescale_intercept=-1000.0)
    path = phantom.write(tmp_path)[0]
    instance = read_instance(path)
    (frame,) = frames_of(instance)
    stored = read_frames(instance)[0]
    np.testing.assert_allclose(modality_values(stored, frame), stored * 0.5 - 1000.0)
    assert uniform_rescale([frame]) == (0.5, -1000.0)


def test_missing_rescale_means_identity(tmp_path: Path) -> None:
    path = volume_phantom(modality="MR", slices=1).write(tmp_path)[0]
    instance = read_instance(path)
    assert "RescaleSlope" not in instance.header
    (frame,) = frames_of(instance)
    stored = read_frames(instance)[0]
    np.testing.assert_array_equal(modality_values(stored, frame), stored.astype(np.float32))


def test_enhanced_frames_use_their_own_rescale(tmp_path: Path) -> None:
    path = volume_phantom(enhanced=True, slices=4, rescale_slope=2.0, rescale_intercept=-2048.0).write(
        tmp_path
    )[0]
    instance = read_instance(path)
    frames = frames_of(instance)
    assert all(f.rescale == (2.0, -2048.0) for f in frames)
    stored = read_frames(instance, [1, 3])
    assert stored.shape == (2, instance.rows, instance.columns)
    np.testing.assert_array_equal(stored, pydicom.dcmread(path).pixel_array[[1, 3]])


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    normal = volume_phantom(modality="MR", slices=1, seed=7)
    inverted = volume_phantom(modality="MR", slices=1, seed=7, monochrome1=True)
    a = read_instance(normal.write(tmp_path / "a")[0])
    b = read_instance(inverted.write(tmp_path / "b")[0])
    norm = Normalisation(NormalisationKind.PERCENTILE)
    image_a = frame_to_model_input(read_frames(a)[0], frames_of(a)[0], norm)
    image_b = frame_to_model_input(read_frames(b)[0], frames_of(b)[0], norm)
    # the generator only relabels: same stored values, so the display-convention result is the negative
    np.testing.assert_allclose(image_b, 255.0 - image_a, atol=1e-3)


def test_undecodable_pixel_data_names_instance_and_syntax(tmp_path: Path) -> None:
    ds = volume_phantom(slices=1).datasets[0]
    ds.compress(pydicom.uid.RLELossless)
    ds.PixelData = ds.PixelData[:-200]  # damaged fragment
    path = tmp_path / "broken-rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    instance = read_instance(path)
    with pytest.raises(UnsupportedPixelDataError) as err:
        read_frames(instance)
    assert ds.SOPInstanceUID in str(err.value)
    assert "RLE Lossless" in str(err.value)
    assert err.value.transfer_syntax_uid == pydicom.uid.RLELossless


def test_real_compressed_syntaxes_decode(shared_dicom: Path) -> None:
    result = scan([shared_dicom / "compressed-siemens-mr-ts"])
    reference = None
    for instance in sorted(result.instances, key=lambda i: i.transfer_syntax_uid):
        pixels = read_frames(instance)[0]
        if reference is None:
            reference = pixels
        np.testing.assert_array_equal(pixels, reference, err_msg=instance.transfer_syntax_name)
    assert len({i.transfer_syntax_uid for i in result.instances}) >= 7


def test_known_bad_jpeg_fails_cleanly(shared_dicom: Path) -> None:
    result = scan([shared_dicom / "compressed-wg04" / "JPLY"])
    errors: list[tuple[str, str]] = []
    for instance in result.instances:
        try:
            read_frames(instance)
        except UnsupportedPixelDataError as exc:
            errors.append((instance.sop_instance_uid, str(exc)))
    assert errors
    for uid, message in errors:
        assert uid in message
        assert "JPEG Extended" in message


LOSSLESS = {
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.DeflatedExplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
    pydicom.uid.RLELossless,
    pydicom.uid.JPEGLSLossless,
    pydicom.uid.JPEG2000Lossless,
    pydicom.uid.JPEGLosslessSV1,
}


@pytest.mark.parametrize("syntax", sorted(SUPPORTED_TRANSFER_SYNTAXES))
def test_every_generated_syntax_reads_back(tmp_path: Path, syntax: str) -> None:
    eight_bit = syntax == pydicom.uid.JPEGBaseline8Bit
    phantom = (
        secondary_capture(rows=40, columns=32, seed=2) if eight_bit else volume_phantom(slices=1, seed=2)
    )
    source = phantom.datasets[0]
    try:
        encoded = encode(source, syntax)
    except EncoderUnavailableError as exc:
        pytest.skip(str(exc))
    path = write_datasets([encoded], tmp_path)[0]
    instance = read_instance(path)
    assert instance.transfer_syntax_uid == syntax
    pixels = read_frames(instance)[0].astype(np.int32)
    expected = source.pixel_array.astype(np.int32)
    if syntax in LOSSLESS:
        np.testing.assert_array_equal(pixels, expected)
    else:
        assert np.abs(pixels - expected).mean() < 0.02 * expected.max()


@pytest.mark.parametrize("voi_lut_sequence", [False, True])
def test_monochrome1_radiograph_comes_out_bone_bright(tmp_path: Path, voi_lut_sequence: bool) -> None:
    phantom = cr_dx_image(monochrome1=True, voi_lut_sequence=voi_lut_sequence)
    instance = read_instance(phantom.write(tmp_path)[0])
    (frame,) = frames_of(instance)
    image = frame_to_model_input(read_frames(instance)[0], frame, Normalisation(NormalisationKind.VOI))
    bone = phantom.truth_mask(0, label="bone")
    body = phantom.truth_mask(0, label="body") & ~bone
    assert image.dtype == np.float32
    assert image.min() >= 0
    assert image.max() <= 255
    assert image[bone].mean() > image[body].mean() + 20


def test_colour_ultrasound_comes_out_rgb(tmp_path: Path) -> None:
    phantom = us_rgb(frames=3)
    files = write_datasets([encode(phantom.datasets[0], pydicom.uid.JPEGBaseline8Bit)], tmp_path)
    instance = read_instance(files[0])
    assert instance.header.PhotometricInterpretation == "YBR_FULL_422"
    frames = frames_of(instance)
    stored = read_frames(instance, [2])
    image = frame_to_model_input(stored[0], frames[2], Normalisation(NormalisationKind.PERCENTILE))
    assert image.dtype == np.uint8
    assert image.shape == (instance.rows, instance.columns, 3)
    expected = phantom.datasets[0].pixel_array[2].astype(np.int32)
    assert np.abs(image.astype(np.int32) - expected).mean() < 4  # JPEG is lossy; YBR became RGB


def test_modality_lut_sequence_replaces_rescale(tmp_path: Path) -> None:
    ds = volume_phantom(slices=1, modality="MR").datasets[0]
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [min(65535, 3 * v + 7) for v in range(4096)])  # LUTData
    ds.ModalityLUTSequence = [item]
    path = tmp_path / "lut.dcm"
    ds.save_as(path, enforce_file_format=True)
    instance = read_instance(path)
    (frame,) = frames_of(instance)
    stored = read_frames(instance)[0]
    np.testing.assert_array_equal(modality_values(stored, frame), stored.astype(np.float32) * 3 + 7)
    assert uniform_rescale([frame]) is None  # the NIfTI path must not take the stored-integer shortcut
