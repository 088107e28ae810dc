"""Our NIfTI against dcm2niix's for the same files: same world grid (within 1e-3 mm), same voxels."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dicom_io.nifti3d import NiftiLayout, export_nifti
from dicom_io.nifti_masks import load_nifti
from dicom_io.reading import scan
from dicom_io.series import assemble
from dicom_io.testing import write_datasets
from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.phases import phased_series
from tests.helpers import require_tool

pytestmark = pytest.mark.integration


def _dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    tool = require_tool("dcm2niix")
    out.mkdir()
    subprocess.run(
        [tool, "-w", "1", "-z", "y", "-b", "n", "-f", "ref", "-o", str(out), str(folder)],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    (produced,) = [p for p in out.glob("*.nii.gz") if "Tilt" not in p.name]
    return nib.load(produced)


def _compare(ours: nib.Nifti1Image, reference: nib.Nifti1Image) -> None:
    a, b = nib.as_closest_canonical(ours), nib.as_closest_canonical(reference)
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
@pytest.mark.parametrize("layout", list(NiftiLayout))
def test_phantom_matches_dcm2niix(tmp_path: Path, orientation: str, layout: NiftiLayout) -> None:
    folder = tmp_path / "dicom"
    volume_phantom(orientation=orientation, reverse_order=orientation != "axial", slices=16, seed=8).write(
        folder
    )
    reference = _dcm2niix(folder, tmp_path / "ref")
    (series,) = assemble(scan([folder]).instances)
    ours = load_nifti(export_nifti(series, layout=layout)[0])
    _compare(ours, reference)


def test_enhanced_phantom_matches_dcm2niix(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    volume_phantom(enhanced=True, orientation="sagittal", slices=12, seed=3).write(folder)
    (series,) = assemble(scan([folder]).instances)
    _compare(load_nifti(export_nifti(series)[0]), _dcm2niix(folder, tmp_path / "ref"))


def test_real_ct_matches_dcm2niix(tmp_path: Path, shared_dicom: Path) -> None:
    folder = shared_dicom / "ct-philips-head-phantom"
    (series,) = assemble(scan([folder]).instances)
    _compare(load_nifti(export_nifti(series)[0]), _dcm2niix(folder, tmp_path / "ref"))


def _phase_frames(reference: nib.Nifti1Image) -> list[nib.Nifti1Image]:
    """dcm2niix's 4D image as one 3D image per volume (its 4th axis)."""
    data = np.asanyarray(reference.dataobj)
    assert data.ndim == 4
    return [nib.Nifti1Image(data[..., t], reference.affine) for t in range(data.shape[3])]


def test_a_4d_phantom_matches_dcm2niix_volume_by_volume(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    write_datasets(phased_series((1, 2, 3), slices=10, reverse_order=True, seed=5), folder)
    (series,) = assemble(scan([folder]).instances)
    volumes = _phase_frames(_dcm2niix(folder, tmp_path / "ref"))
    assert len(series.phases) == len(volumes) == 3
    for phase, reference in zip(series.phases, volumes, strict=True):
        _compare(load_nifti(export_nifti(phase)[0]), reference)


def test_real_ge_fmri_matches_dcm2niix_volume_by_volume(tmp_path: Path, shared_dicom: Path) -> None:
    """GE's EPI names no temporal attribute: only NumberOfTemporalPositions and the instance numbers
    say which of the 10 images at each of the 15 positions belongs to which volume."""
    folder = shared_dicom / "mr-ge-brain-epi-axial"
    (series,) = assemble(scan([folder]).instances)
    volumes = _phase_frames(_dcm2niix(folder, tmp_path / "ref"))
    assert len(series.phases) == len(volumes) == 10
    for phase, reference in zip(series.phases, volumes, strict=True):
        _compare(load_nifti(export_nifti(phase)[0]), reference)


def test_real_siemens_enhanced_4d_matches_dcm2niix_volume_by_volume(
    tmp_path: Path, shared_dicom: Path
) -> None:
    """Four enhanced MR objects, one per temporal position (TemporalPositionIndex in each frame)."""
    folder = shared_dicom / "enhanced-multiframe" / "siemens-xa10"
    (series,) = assemble(scan([folder]).instances)
    volumes = _phase_frames(_dcm2niix(folder, tmp_path / "ref"))
    assert [phase.phase_label for phase in series.phases] == [
        f"TemporalPositionIndex {k}" for k in (1, 2, 3, 4)
    ]
    for phase, reference in zip(series.phases, volumes, strict=True):
        _compare(load_nifti(export_nifti(phase)[0]), reference)
