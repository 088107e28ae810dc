"""Every transfer syntax ``encode`` offers decodes, after a trip through a file, to the source pixels."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_io.testing import (
    SUPPORTED_TRANSFER_SYNTAXES,
    cr_dx_image,
    encode,
    secondary_capture,
    us_rgb,
    volume_phantom,
)
from tests.unit.dicom_io.testing.part10 import part10_bytes, reread

SOURCES: dict[str, Callable[[], Dataset]] = {
    "ct-uint16": lambda: volume_phantom(slices=3).datasets[1],
    "ct-int16-slope": lambda: volume_phantom(slices=3, stored_dtype="int16", rescale_slope=0.5).datasets[1],
    "enhanced-ct": lambda: volume_phantom(slices=3, enhanced=True).datasets[0],
    "mr": lambda: volume_phantom(modality="MR", slices=3).datasets[1],
    "cr-monochrome1": lambda: cr_dx_image(rows=64, columns=48).datasets[0],
    "us-rgb-frames": lambda: us_rgb(frames=3, rows=48, columns=64).datasets[0],
    "sc-grey": lambda: secondary_capture(rows=48, columns=64).datasets[0],
}
DCMTK = {JPEGLosslessSV1, JPEGExtended12Bit}
LOSSY = {JPEGLSNearLossless, JPEG2000, JPEGBaseline8Bit, JPEGExtended12Bit}


def _cannot_carry(ds: Dataset, syntax: UID) -> bool:
    if syntax == JPEGBaseline8Bit:
        return int(ds.BitsAllocated) != 8
    return syntax == JPEGExtended12Bit and int(ds.BitsStored) > 12


@pytest.mark.parametrize("syntax", SUPPORTED_TRANSFER_SYNTAXES, ids=lambda uid: UID(uid).keyword)
@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_round_trip(source: str, syntax: UID) -> None:
    if syntax in DCMTK and shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmtk's dcmcjpeg is not installed")
    original = SOURCES[source]()
    before = part10_bytes(original)
    if _cannot_carry(original, syntax):
        with pytest.raises(ValueError, match="JPEG"):
            encode(original, syntax)
        return
    encoded = encode(original, syntax)
    assert part10_bytes(original) == before, "encode() changed its input"
    read = reread(encoded)
    assert read.file_meta.TransferSyntaxUID == syntax
    assert read.SOPInstanceUID == original.SOPInstanceUID
    expected = original.pixel_array.astype(np.int64)
    actual = read.pixel_array.astype(np.int64)
    assert actual.shape == expected.shape
    if syntax not in LOSSY:
        np.testing.assert_array_equal(actual, expected)
        return
    assert read.LossyImageCompression == "01"
    error = np.abs(actual - expected)
    if syntax == JPEGLSNearLossless:
        assert error.max() <= 2
    else:
        # JPEG's error lives at the sharp edges of the shapes; on average it is a few levels.
        scale = 4095 if int(original.BitsStored) > 8 else 255
        assert error.mean() <= 0.02 * scale, error.mean()


def test_encoding_twice_starts_from_the_pixels() -> None:
    original = volume_phantom(slices=2, stored_dtype="int16").datasets[0]
    chained = encode(encode(encode(original, RLELossless), JPEGLSLossless), ExplicitVRBigEndian)
    np.testing.assert_array_equal(reread(chained).pixel_array, original.pixel_array)
    from_file = reread(encode(original, ImplicitVRLittleEndian))
    np.testing.assert_array_equal(
        reread(encode(from_file, ExplicitVRBigEndian)).pixel_array, original.pixel_array
    )


def test_rgb_jpeg_baseline_is_ybr_full_422() -> None:
    encoded = encode(us_rgb(frames=2, rows=32, columns=48).datasets[0], JPEGBaseline8Bit)
    assert encoded.PhotometricInterpretation == "YBR_FULL_422"
    assert encoded.LossyImageCompressionMethod == "ISO_10918_1"


def test_unknown_syntax_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode(secondary_capture().datasets[0], "1.2.840.10008.1.2.4.100")  # MPEG2
