from __future__ import annotations

import gzip
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dicom_io.errors import GeometryError, MaskError
from dicom_io.intensity import Normalisation
from dicom_io.nifti3d import (
    NiftiLayout,
    NiftiVolume,
    SliceCompressor,
    VolumeIntensity,
    export_nifti,
    gzip_parallel,
)
from dicom_io.nifti_header import nifti1_header
from dicom_io.nifti_masks import MaskEncoding, load_nifti, masks_from_nifti
from dicom_io.reading import scan
from dicom_io.series import Series, assemble
from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.scene import Phantom
from tests.helpers import written_series

ORIENTATIONS = ["axial", "sagittal", "coronal", "oblique"]


def _hu(phantom: Phantom, series: Series) -> np.ndarray:
    """[k, row, column] HU of the phantom in the series' slice order."""
    index = {ds.SOPInstanceUID: i for i, ds in enumerate(phantom.datasets)}
    out = []
    for frame in series.frames:
        ds = phantom.datasets[index[frame.sop_instance_uid]]
        pixels = ds.pixel_array if int(ds.get("NumberOfFrames", 1)) == 1 else ds.pixel_array[frame.index]
        slope = float(ds.get("RescaleSlope", 1))
        intercept = float(ds.get("RescaleIntercept", 0))
        if "SharedFunctionalGroupsSequence" in ds:
            pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
            slope, intercept = float(pvt.RescaleSlope), float(pvt.RescaleIntercept)
        out.append(pixels * slope + intercept)
    return np.stack(out)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("layout", list(NiftiLayout))
def test_affine_maps_every_voxel_to_its_patient_position(
    tmp_path: Path, orientation: str, layout: NiftiLayout
) -> None:
    phantom = volume_phantom(orientation=orientation, reverse_order=True, slices=9, seed=11)
    series = written_series(phantom, tmp_path)
    data, volume = export_nifti(series, layout=layout)
    image = load_nifti(data)
    index = {ds.SOPInstanceUID: i for i, ds in enumerate(phantom.datasets)}
    voxels = np.asarray(image.get_fdata())
    hu = _hu(phantom, series)
    for k, frame in enumerate(series.frames):
        lps = phantom.pixel_to_patient(index[frame.sop_instance_uid])  # [row, column, 3]
        rows, columns = np.indices(lps.shape[:2])
        ijk = (
            np.stack([columns, rows, np.full_like(rows, k)], -1)
            if layout is NiftiLayout.XYZ
            else np.stack([np.full_like(rows, k), rows, columns], -1)
        )
        ras = nib.affines.apply_affine(image.affine, ijk)
        np.testing.assert_allclose(ras * [-1, -1, 1], lps, atol=1e-3)
        picked = voxels[:, :, k].T if layout is NiftiLayout.XYZ else voxels[k]
        np.testing.assert_array_equal(picked, hu[k])
    assert volume.shape == image.shape


def test_header_carries_no_patient_data_and_raw_integers_with_scaling(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=4, patient_name="DOE^JANE", patient_id="MRN123")
    data, _ = export_nifti(written_series(phantom, tmp_path))
    header = load_nifti(data).header
    for field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert header[field].item() == b""
    raw = gzip.decompress(data)
    assert b"DOE" not in raw
    assert b"MRN123" not in raw
    assert header.get_data_dtype() == np.uint16
    assert load_nifti(data).dataobj.inter == -1024.0  # nibabel moves scl_* into the array proxy
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 1)


def test_uint8_mode_windows_with_the_3d_preset(tmp_path: Path) -> None:
    phantom = volume_phantom(slices=5)
    series = written_series(phantom, tmp_path)
    data, volume = export_nifti(
        series, intensity=VolumeIntensity.UINT8, normalisation=Normalisation.named_window("soft_tissue", "3d")
    )
    voxels = np.asarray(load_nifti(data).dataobj)
    assert voxels.dtype == np.uint8
    hu = _hu(phantom, series)
    clipped = np.clip(hu, -160, 240)
    expected = np.rint((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255)
    np.testing.assert_array_equal(voxels.transpose(2, 1, 0), expected)
    assert "soft_tissue" in volume.normalisation


def test_tilted_stack_keeps_its_shear_in_the_sform_only(tmp_path: Path) -> None:
    phantom = volume_phantom(gantry_tilt_deg=20.0, slices=6)
    series = written_series(phantom, tmp_path)
    image = load_nifti(export_nifti(series)[0])
    assert int(image.header["qform_code"]) == 0
    assert int(image.header["sform_code"]) == 1
    lps = phantom.pixel_to_patient(0)
    k = [f.sop_instance_uid for f in series.frames].index(phantom.datasets[0].SOPInstanceUID)
    np.testing.assert_allclose(
        nib.affines.apply_affine(image.affine, [3, 5, k]) * [-1, -1, 1], lps[5, 3], atol=1e-3
    )


def test_gap_series_refused_with_the_reason(tmp_path: Path) -> None:
    series = written_series(volume_phantom(missing_slices=[3], slices=8), tmp_path)
    with pytest.raises(GeometryError, match="missing"):
        export_nifti(series)


def test_parallel_gzip_is_one_valid_stream() -> None:
    payload = np.random.default_rng(0).integers(0, 50, 20_000_000, dtype=np.uint8).tobytes()
    packed = gzip_parallel([b"head", payload], threads=2)
    assert gzip.decompress(packed) == b"head" + payload


# --- masks back ---------------------------------------------------------------------------


def _volume(
    tmp_path: Path, orientation: str = "oblique", layout: NiftiLayout = NiftiLayout.XYZ
) -> tuple[Phantom, Series, NiftiVolume]:
    phantom = volume_phantom(orientation=orientation, slices=10, reverse_order=True, seed=21)
    series = written_series(phantom, tmp_path)
    return phantom, series, export_nifti(series, layout=layout)[1]


def _truth(phantom: Phantom, series: Series, label: str | None = None) -> np.ndarray:
    index = {ds.SOPInstanceUID: i for i, ds in enumerate(phantom.datasets)}
    return np.stack([phantom.truth_mask(index[f.sop_instance_uid], label=label) for f in series.frames])


def _encode(array: np.ndarray, affine: np.ndarray | None) -> bytes:
    image = nib.Nifti1Image(array, affine)  # no affine: both codes stay 0
    stream = io.BytesIO()
    image.to_stream(stream)
    return gzip.compress(stream.getvalue())


@pytest.mark.parametrize("layout", list(NiftiLayout))
def test_label_map_round_trip_through_reoriented_masks(tmp_path: Path, layout: NiftiLayout) -> None:
    phantom, series, volume = _volume(tmp_path, layout=layout)
    target, marker = _truth(phantom, series), _truth(phantom, series, "marker")
    labels = np.zeros(target.shape, dtype=np.uint8)  # [k, row, column]
    labels[target] = 1
    labels[marker] = 2
    sent = labels.transpose(2, 1, 0) if layout is NiftiLayout.XYZ else labels
    image = nib.Nifti1Image(sent, volume.affine)
    # the endpoint may hand back any axis order / flips, as long as its affine says so
    canonical = nib.as_closest_canonical(image)
    # (nibabel's slicer[::-1] keeps the old origin, so flip by hand: data and affine together)
    n0, _, n2 = canonical.shape
    flip = np.array([[-1, 0, 0, n0 - 1], [0, 1, 0, 0], [0, 0, -1, n2 - 1], [0, 0, 0, 1]], dtype=float)
    flipped = nib.Nifti1Image(np.asarray(canonical.dataobj)[::-1, :, ::-1].copy(), canonical.affine @ flip)
    for returned in (image, canonical, flipped):
        masks = masks_from_nifti(_encode(np.asarray(returned.dataobj), returned.affine), volume, 2)
        np.testing.assert_array_equal(masks[0], labels == 1)
        np.testing.assert_array_equal(masks[1], labels == 2)


def test_mask_without_affine_is_taken_on_the_sent_grid(tmp_path: Path) -> None:
    phantom, series, volume = _volume(tmp_path, layout=NiftiLayout.SLICES_FIRST)
    truth = _truth(phantom, series)
    masks = masks_from_nifti(_encode(truth.astype(np.uint8), None), volume, 1)
    np.testing.assert_array_equal(masks[0], truth)
    with pytest.raises(GeometryError, match="not the source grid"):
        masks_from_nifti(_encode(truth.transpose(2, 1, 0).astype(np.uint8), None), volume, 1)


@pytest.mark.parametrize(
    ("values", "encoding"),
    [
        (lambda t: t.astype(np.float32) * 0.9, MaskEncoding.PROBABILITY),
        (lambda t: t.astype(np.uint8) * 200, MaskEncoding.UINT8_PROBABILITY),
        (lambda t: t.astype(np.int16), MaskEncoding.LABELS),
    ],
)
def test_probability_encodings(tmp_path: Path, values, encoding: MaskEncoding) -> None:  # type: ignore[no-untyped-def]
    phantom, series, volume = _volume(tmp_path, orientation="axial")
    truth = _truth(phantom, series)
    data = _encode(values(truth).transpose(2, 1, 0), volume.affine)
    np.testing.assert_array_equal(masks_from_nifti(data, volume, 1)[0], truth)
    np.testing.assert_array_equal(masks_from_nifti(data, volume, 1, encoding)[0], truth)


def test_wrong_grid_and_garbage_are_rejected(tmp_path: Path) -> None:
    phantom, series, volume = _volume(tmp_path, orientation="axial")
    truth = _truth(phantom, series).transpose(2, 1, 0).astype(np.uint8)
    shifted = volume.affine.copy()
    shifted[:3, 3] += 2.5
    with pytest.raises(GeometryError, match=series.series_instance_uid):
        masks_from_nifti(_encode(truth, shifted), volume, 1)
    with pytest.raises(GeometryError):
        masks_from_nifti(_encode(truth[:, :, :-1], volume.affine), volume, 1)
    with pytest.raises(MaskError, match="not a readable NIfTI"):
        masks_from_nifti(b"\x1f\x8b garbage", volume, 1)
    with pytest.raises(MaskError, match=r"outside 0\.\.2|cannot tell"):
        masks_from_nifti(_encode(truth * 7, volume.affine), volume, 2)


@pytest.mark.parametrize("seed", range(6))
def test_header_qform_and_sform_read_back_with_nibabel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # any proper or improper rotation
    affine = np.eye(4)
    affine[:3, :3] = rotation * rng.uniform(0.3, 3.0, 3)
    affine[:3, 3] = rng.uniform(-200, 200, 3)
    raw = nifti1_header(np.dtype(np.int16), (7, 5, 3), affine, with_qform=True, slope=2.0, intercept=-3.0)
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    np.testing.assert_allclose(header.get_sform(), affine, atol=1e-4)
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-4)
    assert header.get_data_shape() == (7, 5, 3)
    assert header.get_data_dtype() == np.int16
    assert header.get_slope_inter() == (2.0, -3.0)
    assert header.get_xyzt_units() == ("mm", "sec")


def test_slices_compressed_during_the_scan_give_the_same_volume(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    volume_phantom(orientation="sagittal", reverse_order=True, slices=9, seed=13).write(folder)
    with ThreadPoolExecutor(2) as pool:
        slices = SliceCompressor(pool)
        (series,) = assemble(scan([folder], on_instance=slices.submit).instances)
        streamed, _ = export_nifti(series, slices=slices)
    plain, _ = export_nifti(series)
    assert streamed != plain  # one gzip member per slice instead of large blocks...
    assert gzip.decompress(streamed) == gzip.decompress(plain)  # ...holding the very same file
