"""An object at (x, y, z) mm in the source lands at (x, y, z) mm in the SEG — through the 2D PNG path and
the 3D NIfTI path, for every orientation the generators make.

The "model" here is a plain threshold applied to exactly what the endpoint would receive (the 1024²
PNG, the NIfTI volume), so every transform on the way out and back is exercised. The SEG is written
to disk, validated with dciodvfy, and its geometry is read from the SEG's own functional groups.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_io.export2d import iter_model_images
from dicom_io.intensity import Normalisation
from dicom_io.nifti3d import NiftiLayout, VolumeIntensity, export_nifti
from dicom_io.nifti_masks import load_nifti, masks_from_nifti
from dicom_io.png2d import probability_to_masks
from dicom_io.seg import AlgorithmInfo, SegmentRequest, SegOptions, build_seg
from dicom_io.series import Series
from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.scene import Phantom
from tests.helpers import dciodvfy_errors, written_series

pytestmark = pytest.mark.integration

ORIENTATIONS = ["axial", "sagittal", "coronal", "oblique"]
# soft-tissue window: body 40 HU, liver 160 HU, marker 300 HU → the liver band of the 0..255 image
LIVER_2D = (175, 225)  # abdomen window [-150, 250]: liver ≈ 198, body ≈ 121, marker 255
LIVER_3D = (200, 245)  # soft tissue window [-160, 240]: liver ≈ 204, body ≈ 127, marker 255


def _with_calibration_rod(phantom: Phantom) -> Phantom:
    """Put one 1000 HU pixel in a corner of every slice, as bone or contrast does in a real CT.

    The reference min-maxes each slice after windowing, so a slice that never reaches the window's
    upper bound is stretched; a phantom slice without the marker would map the liver to 255.
    """
    for ds in phantom.datasets:
        pixels = ds.pixel_array.copy()
        pixels[0, 0] = round((1000 - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
        ds.PixelData = pixels.tobytes()
    return phantom


def _seg(series: Series, masks: np.ndarray, folder: Path) -> pydicom.Dataset:
    """Build, write, validate and re-read the SEG for ``masks`` [frames, rows, cols] on series.frames."""
    sources = list(series.instances)
    position = {inst.sop_instance_uid: i for i, inst in enumerate(sources)}
    refs = [(position[f.sop_instance_uid], f.index) for f in series.frames]
    result = build_seg(
        [inst.header for inst in sources],
        refs,
        masks[..., np.newaxis],
        [SegmentRequest("liver")],
        AlgorithmInfo("threshold stand-in", "1"),
        SegOptions(
            rule_name="geometry-test",
            software_version="test",
            device_serial_number="0",
            content_datetime=dt.datetime(2026, 1, 1, 12, 0, 0),
        ),
    )
    assert result.dataset is not None
    path = folder / "seg.dcm"
    result.dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    return pydicom.dcmread(path)


def _seg_points(seg: pydicom.Dataset) -> np.ndarray:
    """LPS (mm) of every segmented pixel, computed from the SEG's own geometry only."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    points = []
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, pixels, strict=True):
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        r, c = np.nonzero(frame)
        points.append(ipp + np.outer(c * column_spacing, iop[:3]) + np.outer(r * row_spacing, iop[3:]))
    return np.concatenate(points)


def _truth_points(phantom: Phantom) -> np.ndarray:
    points = []
    for i, planes in enumerate(phantom.planes):
        for f in range(len(planes)):
            points.append(phantom.pixel_to_patient(i, f)[phantom.truth_mask(i, f)])
    return np.concatenate(points)


def _assert_same_place(seg_points: np.ndarray, truth_points: np.ndarray, tolerance_mm: float) -> None:
    np.testing.assert_allclose(seg_points.mean(axis=0), truth_points.mean(axis=0), atol=tolerance_mm)
    assert abs(len(seg_points) / len(truth_points) - 1) < 0.15
    liver_center = truth_points.mean(axis=0)
    assert (
        np.linalg.norm(seg_points - liver_center, axis=1).max()
        < np.linalg.norm(truth_points - liver_center, axis=1).max() + 2 * tolerance_mm
    )


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_png_path_lands_on_the_object(tmp_path: Path, orientation: str) -> None:
    phantom = _with_calibration_rod(
        volume_phantom(orientation=orientation, reverse_order=True, slices=14, rows=60, columns=44, seed=4)
    )
    series = written_series(phantom, tmp_path / "dicom")
    masks = []
    for image in iter_model_images(series, Normalisation.named_window("abdomen", "2d")):
        sent = cv2.imdecode(np.frombuffer(image.png, np.uint8), cv2.IMREAD_UNCHANGED)[..., 0]
        probability = (((sent >= LIVER_2D[0]) & (sent <= LIVER_2D[1])) * 255).astype(np.uint8)
        masks.append(probability_to_masks(probability[np.newaxis], image.transform)[0])
    seg = _seg(series, np.stack(masks), tmp_path)
    _assert_same_place(_seg_points(seg), _truth_points(phantom), tolerance_mm=0.8)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("layout", list(NiftiLayout))
def test_nifti_path_lands_on_the_object(tmp_path: Path, orientation: str, layout: NiftiLayout) -> None:
    phantom = volume_phantom(
        orientation=orientation, reverse_order=True, slices=14, rows=60, columns=44, seed=4
    )
    series = written_series(phantom, tmp_path / "dicom")
    data, volume = export_nifti(
        series,
        intensity=VolumeIntensity.UINT8,
        normalisation=Normalisation.named_window("soft_tissue", "3d"),
        layout=layout,
    )
    sent = load_nifti(data)
    voxels = np.asarray(sent.dataobj)
    labels = ((voxels >= LIVER_3D[0]) & (voxels <= LIVER_3D[1])).astype(np.uint8)
    # the endpoint may answer in another axis order: return it reoriented to RAS, affine included
    answer = nib.as_closest_canonical(nib.Nifti1Image(labels, sent.affine))
    stream = io.BytesIO()
    answer.to_stream(stream)
    masks = masks_from_nifti(gzip.compress(stream.getvalue()), volume, 1)[0]
    seg = _seg(series, masks, tmp_path)
    _assert_same_place(_seg_points(seg), _truth_points(phantom), tolerance_mm=0.5)


def test_gantry_tilted_nifti_path_lands_on_the_object(tmp_path: Path) -> None:
    phantom = volume_phantom(gantry_tilt_deg=15.0, slices=14, rows=60, columns=44, seed=4)
    series = written_series(phantom, tmp_path / "dicom")
    data, volume = export_nifti(series, intensity=VolumeIntensity.UINT8)
    voxels = np.asarray(load_nifti(data).dataobj)
    labels = ((voxels >= LIVER_3D[0]) & (voxels <= LIVER_3D[1])).astype(np.uint8)
    stream = io.BytesIO()
    nib.Nifti1Image(labels, volume.affine).to_stream(stream)
    masks = masks_from_nifti(stream.getvalue(), volume, 1)[0]
    seg = _seg(series, masks, tmp_path)
    _assert_same_place(_seg_points(seg), _truth_points(phantom), tolerance_mm=0.5)
