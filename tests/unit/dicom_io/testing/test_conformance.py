"""Generated objects pass dicom3tools' ``dciodvfy`` and serve highdicom as SEG sources."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_io.testing import (
    ImagePhantom,
    Orientation,
    Phantom,
    cr_dx_image,
    secondary_capture,
    us_rgb,
    volume_phantom,
)
from tests.unit.dicom_io.testing.part10 import reread

CASES: dict[str, Callable[[], Phantom | ImagePhantom]] = {
    "ct": lambda: volume_phantom(slices=3),
    "ct-int16-oblique-tilted": lambda: volume_phantom(
        slices=3, stored_dtype="int16", rescale_slope=0.5, orientation="oblique", gantry_tilt_deg=10.0
    ),
    "mr-sagittal-monochrome1": lambda: volume_phantom(
        modality="MR", orientation="sagittal", slices=3, monochrome1=True
    ),
    "enhanced-ct": lambda: volume_phantom(enhanced=True, slices=4, reverse_order=True),
    "enhanced-ct-gapped": lambda: volume_phantom(
        enhanced=True, slices=5, missing_slices=[2], gantry_tilt_deg=8.0
    ),
    "enhanced-mr": lambda: volume_phantom(modality="MR", enhanced=True, orientation="coronal", slices=4),
    "cr": lambda: cr_dx_image(rows=64, columns=48),
    "cr-voi-lut": lambda: cr_dx_image(rows=64, columns=48, voi_lut_sequence=True, monochrome1=False),
    "dx": lambda: cr_dx_image(modality="DX", rows=64, columns=48),
    "us": lambda: us_rgb(rows=32, columns=48),
    "us-multiframe": lambda: us_rgb(frames=3, rows=32, columns=48),
    "sc-rgb": lambda: secondary_capture(rgb=True, rows=32, columns=48),
}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed")
@pytest.mark.parametrize("case", CASES, ids=str)
def test_dciodvfy_finds_no_errors(case: str, tmp_path: Path) -> None:
    (path, *_) = CASES[case]().write(tmp_path)
    report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (report.stdout + report.stderr).splitlines()
    assert [line for line in lines if line.startswith("Error")] == []


def _segmentation(sources: list[Dataset], mask: np.ndarray) -> hd.seg.Segmentation:
    liver = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="liver",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[liver],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mip-gateway tests",
        manufacturer_model_name="phantom check",
        software_versions="0",
        device_serial_number="0",
    )
    return hd.seg.Segmentation.from_dataset(reread(seg))


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_highdicom_segments_a_classic_series(orientation: Orientation) -> None:
    phantom = volume_phantom(orientation=orientation, slices=12, reverse_order=True)
    sources = [reread(ds) for ds in phantom.datasets]
    truth = phantom.truth_volume("liver")
    seg = _segmentation(sources, truth)
    uids = [ds.SOPInstanceUID for ds in sources]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), truth)


def test_highdicom_segments_an_enhanced_instance() -> None:
    phantom = volume_phantom(enhanced=True, orientation="coronal", slices=12, reverse_order=True)
    (source,) = [reread(ds) for ds in phantom.datasets]
    truth = phantom.truth_volume("liver")
    seg = _segmentation([source], truth)
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID,
        source_frame_numbers=list(range(1, 13)),
        segment_numbers=[1],
        # highdicom leaves out frames with nothing segmented; the liver misses the end frames.
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), truth)
