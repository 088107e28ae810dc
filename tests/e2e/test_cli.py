"""The ``mip-gateway`` command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_io.testing.phantoms import volume_phantom

CLI = [sys.executable, "-m", "service.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture
def study(tmp_path: Path) -> dict[str, str]:
    """A folder with a good CT, a CT with a gap, a damaged MR and a stray text file."""
    root = tmp_path / "in"
    good = volume_phantom(slices=6, seed=1)
    gap = volume_phantom(slices=8, missing_slices=[3], seed=2, orientation="coronal")
    damaged = volume_phantom(modality="MR", slices=4, seed=3)
    good.write(root / "good")
    gap.write(root / "gap")
    files = damaged.write(root / "damaged")
    ds = pydicom.dcmread(files[2])
    ds.compress(pydicom.uid.RLELossless)
    ds.PixelData = ds.PixelData[:-64]
    ds.save_as(files[2], enforce_file_format=True)
    (root / "README.txt").write_text("not DICOM\n")
    return {
        "root": str(root),
        "good": good.datasets[0].SeriesInstanceUID,
        "gap": gap.datasets[0].SeriesInstanceUID,
        "damaged": damaged.datasets[0].SeriesInstanceUID,
        "damaged_sop": ds.SOPInstanceUID,
    }


def test_info_lists_each_series_and_its_problems(study: dict[str, str]) -> None:
    proc = _run("info", study["root"])
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "volume  6 slices  64x48" in lines[study["good"]]
    assert "problems: none" in lines[study["good"]]
    assert "missing-slices" in lines[study["gap"]]
    assert "README.txt" in proc.stderr


def test_convert_png_isolates_the_failing_series(study: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "png"
    proc = _run("convert", study["root"], "--to", "png", "--window", "abdomen", "--out", str(out))
    assert proc.returncode == 1
    assert f"failed series {study['damaged']}" in proc.stderr
    assert study["damaged_sop"] in proc.stderr
    assert "RLE Lossless" in proc.stderr
    # nothing half-written for the failed series, everything for the others
    assert sorted(p.name for p in out.iterdir()) == sorted([study["good"], study["gap"]])
    good = out / study["good"]
    manifest = json.loads((good / "transform.json").read_text())
    assert len(manifest["images"]) == 6
    for name, transform in manifest["images"].items():
        image = cv2.imread(str(good / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (1024, 1024, 3)
        assert (transform["rows"], transform["columns"]) == (64, 48)
        assert np.array_equal(image[..., 0], image[..., 2])


def test_convert_nifti_reports_gaps_and_writes_the_rest(study: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "nii"
    proc = _run("convert", study["root"], "--to", "nifti", "--layout", "slices-first", "--out", str(out))
    assert proc.returncode == 1
    assert f"failed series {study['gap']}" in proc.stderr
    assert "missing" in proc.stderr
    assert f"failed series {study['damaged']}" in proc.stderr
    (written,) = out.iterdir()
    assert written.name == f"{study['good']}.nii.gz"
    image = nib.load(written)
    assert image.shape == (6, 64, 48)


def test_convert_nifti_windowed_is_uint8(tmp_path: Path) -> None:
    volume_phantom(slices=5).write(tmp_path / "ct")
    proc = _run(
        "convert",
        str(tmp_path / "ct"),
        "--to",
        "nifti",
        "--window",
        "soft_tissue",
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 0, proc.stderr
    (written,) = (tmp_path / "o").iterdir()
    assert nib.load(written).get_data_dtype() == np.uint8


def test_unknown_window_is_a_readable_failure(tmp_path: Path) -> None:
    volume_phantom(slices=3).write(tmp_path / "ct")
    proc = _run(
        "convert", str(tmp_path / "ct"), "--to", "png", "--window", "brain", "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 1
    assert "unknown 2d CT window 'brain'" in proc.stderr


def test_sample_writes_a_readable_series(tmp_path: Path) -> None:
    proc = _run("sample", str(tmp_path / "s"), "--size", "64", "--slices", "5")
    assert proc.returncode == 0, proc.stderr
    assert "volume  5 slices" in _run("info", str(tmp_path / "s")).stdout
