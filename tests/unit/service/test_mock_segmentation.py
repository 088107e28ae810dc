"""The mock's stand-in segmentation: deterministic, the documented rule, the input's geometry."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from service.mock.components import largest_component_2d, largest_component_3d
from service.mock.segment2d import ImageDecodeError, segment_png
from service.mock.segment3d import VolumeDecodeError, segment_nifti
from service.mock.thresholds import prompt_quantile, prompt_thresholds
from tests.unit.service import mock_samples

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _expected_region(
    values: npt.NDArray[np.generic], index: int, count: int, structure: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.bool_]:
    """The rule, written the slow obvious way with scipy: quantile of non-zero values, largest blob."""
    foreground = values[values != 0]
    threshold = np.quantile(foreground, prompt_quantile(index, count), method="lower")
    labels, n = ndimage.label(values >= threshold, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return np.asarray(labels == np.argmax(sizes))


def _load(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def test_quantile_formula() -> None:
    assert prompt_quantile(0, 1) == pytest.approx(0.7)
    assert [prompt_quantile(i, 3) for i in range(3)] == pytest.approx([0.6, 0.7, 0.8])
    with pytest.raises(ValueError, match="out of range"):
        prompt_quantile(2, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_thresholds_match_numpy_lower_quantile_of_nonzero(dtype: type) -> None:
    low = 0 if dtype == np.uint8 else -50
    values: npt.NDArray[np.generic] = np.random.default_rng(3).integers(low, 256, size=(37, 41)).astype(dtype)
    values[:10] = 0
    nonzero = values[values != 0]
    expected = [float(np.quantile(nonzero, prompt_quantile(i, 4), method="lower")) for i in range(4)]
    assert prompt_thresholds(values, 4) == expected


def test_no_foreground_means_nothing_found() -> None:
    for dtype in (np.uint8, np.int16, np.float32):
        assert prompt_thresholds(np.zeros((4, 4), dtype), 2) == [float("inf")] * 2
    assert prompt_thresholds(np.full(5, np.nan), 1) == [float("inf")]


def test_2d_is_deterministic_and_shaped_like_the_model() -> None:
    png = mock_samples.png_bytes(mock_samples.grey_image())
    first, second = segment_png(png, 2), segment_png(png, 2)
    assert first.shape == (2, 1024, 1024)
    assert first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert first.max() == 255
    assert np.count_nonzero((first > 0) & (first < 255)) > 0  # soft edges, like probabilities


@pytest.mark.parametrize("count", [1, 3])
def test_2d_masks_threshold_back_to_the_largest_component(count: int) -> None:
    image = mock_samples.grey_image()
    masks = segment_png(mock_samples.png_bytes(image), count)
    for i in range(count):
        expected = _expected_region(image, i, count, EIGHT_CONNECTED)
        got = masks[i] >= 128
        iou = np.count_nonzero(got & expected) / np.count_nonzero(got | expected)
        assert iou > 0.995
        assert not got[40:60, 900:920].any()  # the brightest speck is not the largest component


def test_2d_later_prompts_get_higher_quantiles() -> None:
    image = mock_samples.grey_image()
    masks = segment_png(mock_samples.png_bytes(image), 3) >= 128
    areas = [int(m.sum()) for m in masks]
    assert areas[0] > areas[1] > areas[2] > 0
    single = segment_png(mock_samples.png_bytes(image), 1)[0] >= 128
    assert np.array_equal(single, masks[1])  # q = 0.7 either way: 1st of 1, 2nd of 3


def test_2d_grey_and_rgb_pngs_give_the_same_masks() -> None:
    image = mock_samples.grey_image(256)
    rgb = segment_png(mock_samples.png_bytes(image), 1)
    grey = segment_png(mock_samples.png_bytes(image, rgb=False), 1)
    assert rgb.shape == (1, 256, 256)  # the output follows the input size, like the model
    assert np.array_equal(rgb, grey)


def test_2d_rejects_bytes_that_are_not_an_image() -> None:
    with pytest.raises(ImageDecodeError):
        segment_png(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 1)


def test_largest_component_2d_of_nothing_is_nothing() -> None:
    empty = np.zeros((8, 8), dtype=bool)
    assert not largest_component_2d(empty).any()


@pytest.mark.parametrize("fortran", [False, True])
def test_largest_component_3d_matches_scipy(fortran: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        shape = tuple(int(n) for n in rng.integers(2, 30, size=3))
        binary = rng.random(shape) < rng.uniform(0.15, 0.6)
        binary = np.asfortranarray(binary) if fortran else binary
        labels, count = ndimage.label(binary)
        found = largest_component_3d(binary)
        if count == 0:
            assert found is None
            continue
        assert found is not None
        box, inside = found
        got = np.zeros_like(binary)
        got[box] = inside
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        assert got.sum() == sizes.max()
        assert len(np.unique(labels[got])) == 1
        assert sizes[labels[got][0]] == sizes.max()


def test_3d_label_map_keeps_grid_and_affine() -> None:
    source = mock_samples.nifti_image()
    data = mock_samples.volume()
    result = _load(segment_nifti(mock_samples.nifti_gz(), 2))
    labels = np.asarray(result.dataobj)
    assert labels.shape == data.shape
    assert labels.dtype == np.uint8
    assert int(result.header["qform_code"]) == 1
    assert int(result.header["sform_code"]) == 2
    np.testing.assert_allclose(result.header.get_sform(), source.header.get_sform(), atol=1e-5)
    np.testing.assert_allclose(result.header.get_qform(), source.header.get_qform(), atol=1e-5)
    np.testing.assert_allclose(result.header.get_zooms(), source.header.get_zooms())
    assert set(np.unique(labels)) == {0, 1, 2}
    # the last prompt is painted last: its whole region carries its label
    assert np.array_equal(labels == 2, _expected_region(data, 1, 2))
    assert np.array_equal(labels >= 1, _expected_region(data, 0, 2) | (labels == 2))
    assert np.array_equal(labels, np.asarray(_load(segment_nifti(mock_samples.nifti_gz(), 2)).dataobj))


def test_3d_drop_affine_and_wrong_shape_faults() -> None:
    result = _load(segment_nifti(mock_samples.nifti_gz(), 1, keep_affine=False, drop_last_slice=True))
    assert int(result.header["qform_code"]) == 0
    assert int(result.header["sform_code"]) == 0
    assert result.shape == (40, 48, 31)


def test_3d_reads_plain_multi_member_and_4d_inputs() -> None:
    plain = mock_samples.nifti_image().to_bytes()
    members = gzip.compress(plain[:1000]) + gzip.compress(plain[1000:])  # as dicom_io writes in parallel
    expected = np.asarray(_load(segment_nifti(mock_samples.nifti_gz(), 1)).dataobj)
    assert np.array_equal(np.asarray(_load(segment_nifti(plain, 1)).dataobj), expected)
    assert np.array_equal(np.asarray(_load(segment_nifti(members, 1)).dataobj), expected)
    four_d = mock_samples.nifti_gz(mock_samples.volume()[..., np.newaxis])
    result = _load(segment_nifti(four_d, 1))
    assert result.shape == (40, 48, 32, 1)
    assert np.array_equal(np.asarray(result.dataobj)[..., 0], expected)


def test_3d_rejects_what_is_not_a_single_nifti1_volume() -> None:
    pair_header = bytearray(mock_samples.nifti_image().to_bytes()[:352])
    pair_header[344:348] = b"ni1\x00"
    for data, message in [
        (bytes(pair_header), "pair"),
        (gzip.compress(b"hello" * 100), "not a NIfTI-1"),
        (b"\x1f\x8b" + b"\x00" * 50, "gzip"),
        (mock_samples.nifti_gz(np.zeros((4, 4), np.int16)), "3 dimensions"),
    ]:
        with pytest.raises(VolumeDecodeError, match=message):
            segment_nifti(data, 1)
