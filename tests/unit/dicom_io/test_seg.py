"""build_seg: every SEG is written, validated with dciodvfy (when installed) and read back."""

from __future__ import annotations

import copy
import datetime as dt
import io
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file

from dicom_io.errors import SegBuildError
from dicom_io.seg import (
    AlgorithmInfo,
    SegmentationType,
    SegmentRequest,
    SegOptions,
    SegResult,
    build_seg,
)
from dicom_io.uids import seg_instance_uid, seg_series_uid
from tests.helpers import dciodvfy_errors
from tests.unit.dicom_io.seg_sources import ct_stack, radiographs

# highdicom warns about single-component patient names it copies from real sources
pytestmark = pytest.mark.filterwarnings(
    "ignore:The string .* is unlikely to represent the intended person name"
)

ALGORITHM = AlgorithmInfo("MedImageParse", "2024.09", "Microsoft")
WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
OPTIONS = SegOptions(
    rule_name="abdomen-ct", software_version="0.1.0", device_serial_number="GW-1", content_datetime=WHEN
)
FRACTIONAL = SegOptions(
    rule_name="abdomen-ct",
    software_version="0.1.0",
    device_serial_number="GW-1",
    content_datetime=WHEN,
    segmentation_type="FRACTIONAL",  # type: ignore[arg-type]  # str input is coerced
)


def _blobs(n_frames: int, rows: int, columns: int, n_segments: int, seed: int = 0) -> np.ndarray:
    """Random rectangles, a different pattern per frame and segment, some frames left empty."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_frames, rows, columns, n_segments), dtype=bool)
    for f in range(n_frames):
        for s in range(n_segments):
            if rng.random() < 0.3:
                continue
            r0, c0 = rng.integers(0, rows // 2), rng.integers(0, columns // 2)
            masks[f, r0 : r0 + rng.integers(1, rows // 2), c0 : c0 + rng.integers(1, columns // 2), s] = True
    return masks


def _write_and_read(result: SegResult, tmp_path: Path, name: str = "seg.dcm") -> hd.seg.Segmentation:
    assert result.dataset is not None
    path = tmp_path / name
    result.dataset.save_as(path)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(path) == []
    return hd.seg.segread(path)


def _kept(masks: np.ndarray, result: SegResult) -> np.ndarray:
    return masks[..., [i for i, s in enumerate(result.segments) if not s.empty]]


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


# --- a CT volume as single-frame instances ---------------------------------------------------


def test_ct_stack_subset_in_any_order_round_trips(tmp_path: Path) -> None:
    sources = ct_stack(10, 32, 24)
    before = copy.deepcopy(sources)
    refs = [(i, 0) for i in (7, 2, 5, 1, 8, 3)]  # a subset, not in spatial order
    masks = _blobs(len(refs), 32, 24, 3, seed=1)
    masks[..., 1] = False  # one empty segment
    masks[2] = False  # one frame without anything: its instance is still referenced
    prompts = [SegmentRequest("left kidney"), SegmentRequest("spleen"), SegmentRequest("tumor core", "tumor")]
    result = build_seg(sources, refs, masks, prompts, ALGORITHM, OPTIONS, voxel_volume_mm3=1.4)

    seg = _write_and_read(result, tmp_path)
    assert sources == before
    uids = [sources[i].SOPInstanceUID for i, _ in refs]
    got = seg.get_pixels_by_source_instance(
        uids, combine_segments=False, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(got.astype(bool), masks[..., [0, 2]])

    assert [s.segment_number for s in result.segments] == [1, None, 2]
    assert [s.empty for s in result.segments] == [False, True, False]
    assert [s.prompt for s in result.segments] == ["left kidney", "spleen", "tumor core"]
    for s, stats in enumerate(result.segments):
        assert stats.pixel_count == int(masks[..., s].sum())
        assert stats.frames == int(masks[..., s].any(axis=(1, 2)).sum())
        assert stats.volume_ml == pytest.approx(stats.pixel_count * 1.4 / 1000)

    ds = seg
    assert [item.SegmentLabel for item in ds.SegmentSequence] == ["left kidney", "tumor core"]
    kidney = ds.SegmentSequence[0]
    assert kidney.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert kidney.SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"
    modifier = kidney.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert (modifier.CodeValue, modifier.CodeMeaning) == ("7771000", "Left")
    assert kidney.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = kidney.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("MedImageParse", "2024.09")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert ds.SegmentSequence[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"

    # OHIF needs ReferencedSeriesSequence: the source series, with every referenced instance
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence] == uids
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    # patient/study copied, series ours
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber"):
        assert ds[keyword].value == sources[0][keyword].value
    assert ds.SeriesDescription == "MedImageParse AI segmentation"
    assert ds.SeriesNumber == 9900
    assert ds.SeriesInstanceUID == seg_series_uid(
        sources[0].SeriesInstanceUID, "abdomen-ct", ALGORITHM.name, ALGORITHM.version
    )
    content_key = ["BINARY", "left kidney", "spleen", "tumor core"]
    assert ds.SOPInstanceUID == seg_instance_uid(ds.SeriesInstanceUID, uids, content_key)
    assert ds.SegmentationType == "BINARY"
    assert ds.ContentLabel == "MIPSEG"
    # the referenced slices (z = 2.5·{1,2,3,5,7,8}) are not evenly spaced: no SpacingBetweenSlices
    assert "SpacingBetweenSlices" not in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    purposes = [e.PurposeOfReferenceCodeSequence[0].CodeMeaning for e in ds.ContributingEquipmentSequence]
    assert "Processing Algorithm" in purposes


def test_dates_come_from_the_options_and_output_is_byte_identical(tmp_path: Path) -> None:
    sources = ct_stack(6, 16, 16)
    refs = [(i, 0) for i in range(6)]
    masks = _blobs(6, 16, 16, 2, seed=4)
    masks[0, 0, 0, 0] = masks[5, 0, 0, 1] = True
    masks[2:4] = False  # content on z = 0, 2.5, 10, 12.5 mm only
    prompts = [SegmentRequest("liver"), SegmentRequest("lesion")]
    first = build_seg(sources, refs, masks, prompts, ALGORITHM, OPTIONS)
    second = build_seg(sources, refs, masks.copy(), prompts, ALGORITHM, OPTIONS)
    assert first.dataset is not None
    assert second.dataset is not None
    assert _encode(first.dataset) == _encode(second.dataset)
    ds = first.dataset
    assert ds.NumberOfFrames == int(masks.any(axis=(1, 2)).sum())
    # spacing of the whole referenced set, not of the frames that happened to have content
    assert float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices) == 2.5
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        assert str(ds[keyword].value) == "20240506"
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        assert str(ds[keyword].value).startswith("070809")
    for item in ds.ContributingEquipmentSequence:
        if "ContributionDateTime" in item and item.Manufacturer != "Synthetic":
            assert str(item.ContributionDateTime).startswith("20240506070809")

    # a changed source set: new instance, same series
    fewer = build_seg(sources, refs[:-1], masks[:-1], prompts, ALGORITHM, OPTIONS)
    assert fewer.dataset is not None
    assert fewer.dataset.SeriesInstanceUID == ds.SeriesInstanceUID
    assert fewer.dataset.SOPInstanceUID != ds.SOPInstanceUID
    # a new model version: new series
    newer = build_seg(sources, refs, masks, prompts, AlgorithmInfo("MedImageParse", "2025.01"), OPTIONS)
    assert newer.dataset is not None
    assert newer.dataset.SeriesInstanceUID != ds.SeriesInstanceUID


def test_all_empty_segments_give_no_dataset() -> None:
    sources = ct_stack(3, 16, 16)
    masks = np.zeros((3, 16, 16, 2), dtype=bool)
    result = build_seg(
        sources, [(i, 0) for i in range(3)], masks, [SegmentRequest("liver"), SegmentRequest("tumor")],
        ALGORITHM, OPTIONS,
    )  # fmt: skip
    assert result.dataset is None
    assert [(s.empty, s.segment_number, s.pixel_count, s.frames) for s in result.segments] == [
        (True, None, 0, 0),
        (True, None, 0, 0),
    ]


def test_fractional_round_trip(tmp_path: Path) -> None:
    sources = ct_stack(4, 16, 16)
    refs = [(i, 0) for i in range(4)]
    masks = np.zeros((4, 16, 16, 2), dtype=np.uint8)
    masks[..., 0] = np.arange(4 * 16 * 16).reshape(4, 16, 16) % 256  # every value 0..255
    masks[1, :3, :3, 1] = 100  # below the 0.5 threshold only: reported empty and left out
    result = build_seg(
        sources, refs, masks, [SegmentRequest("liver"), SegmentRequest("cyst")], ALGORITHM, FRACTIONAL
    )
    assert result.segments[1].empty
    assert result.segments[0].pixel_count == int((masks[..., 0] >= 128).sum())

    seg = _write_and_read(result, tmp_path)
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.MaximumFractionalValue == 255
    uids = [s.SOPInstanceUID for s in sources]
    stored = seg.get_pixels_by_source_instance(
        uids, combine_segments=False, rescale_fractional=False, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(stored[..., 0], masks[..., 0])
    scaled = seg.get_pixels_by_source_instance(
        uids, combine_segments=False, assert_missing_frames_are_empty=True
    )
    assert np.abs(scaled[..., 0] - masks[..., 0] / 255.0).max() <= 1 / 255


# --- pydicom's bundled single images -----------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_bundled_single_images(name: str, tmp_path: Path) -> None:
    source = pydicom.dcmread(str(get_testdata_file(name)))
    masks = _blobs(1, source.Rows, source.Columns, 2, seed=2)
    masks[0, 0, 0, :] = True  # never empty
    result = build_seg(
        [source], [(0, 0)], masks, [SegmentRequest("brain"), SegmentRequest("edema")], ALGORITHM, OPTIONS
    )
    seg = _write_and_read(result, tmp_path)
    got = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)
    assert np.array_equal(got.astype(bool), masks)


# --- sources without patient coordinates -------------------------------------------------------


def test_several_radiographs_without_frame_of_reference(tmp_path: Path) -> None:
    sources = radiographs(3, 40, 24)
    before = copy.deepcopy(sources)
    refs = [(2, 0), (0, 0), (1, 0)]
    masks = _blobs(3, 40, 24, 2, seed=3)
    masks[:, 0, 0, :] = True
    result = build_seg(
        sources, refs, masks, [SegmentRequest("left lung"), SegmentRequest("nodule")], ALGORITHM, OPTIONS
    )
    seg = _write_and_read(result, tmp_path)
    assert sources == before  # proxies, not the caller's datasets, carried the invented geometry
    ds = result.dataset
    assert ds is not None
    assert "FrameOfReferenceUID" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert "PlaneOrientationSequence" not in shared
    assert "PixelMeasuresSequence" not in shared
    for item in ds.PerFrameFunctionalGroupsSequence:
        assert "PlanePositionSequence" not in item
    uids = [sources[i].SOPInstanceUID for i, _ in refs]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=False)
    assert np.array_equal(got.astype(bool), masks)


def test_radiographs_of_different_sizes_are_refused_with_the_sizes() -> None:
    big, small = radiographs(1, 40, 24, seed=5)[0], radiographs(2, 20, 20, seed=5)[1]
    masks = np.ones((2, 40, 24, 1), dtype=bool)
    with pytest.raises(SegBuildError, match=r"40x24 \(1 instance\), 20x20 \(1 instance\)") as info:
        build_seg([big, small], [(0, 0), (1, 0)], masks, [SegmentRequest("lung")], ALGORITHM, OPTIONS)
    assert info.value.series_instance_uid == big.SeriesInstanceUID


# --- invalid input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("masks", "refs", "options", "match"),
    [
        (np.zeros((2, 16, 16, 1), bool), [(0, 0)], OPTIONS, r"shape \(2, 16, 16, 1\)"),
        (np.zeros((1, 16, 15, 1), bool), [(0, 0)], OPTIONS, "expected"),
        (np.zeros((1, 16, 16, 2), bool), [(0, 0)], OPTIONS, "segments"),
        (np.zeros((1, 16, 16), bool), [(0, 0)], OPTIONS, "shape"),
        (np.zeros((1, 16, 16, 1), np.uint8), [(0, 0)], OPTIONS, "BINARY masks must have dtype bool"),
        (
            np.zeros((1, 16, 16, 1), np.float32),
            [(0, 0)],
            FRACTIONAL,
            "FRACTIONAL masks must have dtype uint8",
        ),
        (np.zeros((1, 16, 16, 1), bool), [(9, 0)], OPTIONS, "names no source image"),
        (np.zeros((1, 16, 16, 1), bool), [(0, 1)], OPTIONS, "1 frame"),
        (np.zeros((2, 16, 16, 1), bool), [(0, 0), (0, 0)], OPTIONS, "more than once"),
        (np.zeros((0, 16, 16, 1), bool), [], OPTIONS, "no frame references"),
    ],
)
def test_bad_masks_and_references_raise_seg_build_error(
    masks: np.ndarray, refs: list[tuple[int, int]], options: SegOptions, match: str
) -> None:
    sources = ct_stack(2, 16, 16)
    with pytest.raises(SegBuildError, match=match) as info:
        build_seg(sources, refs, masks, [SegmentRequest("liver")], ALGORITHM, options)
    assert info.value.series_instance_uid == sources[0].SeriesInstanceUID


def test_empty_prompt_and_no_segments_are_refused() -> None:
    sources = ct_stack(1, 16, 16)
    with pytest.raises(SegBuildError, match="empty prompt"):
        build_seg(sources, [(0, 0)], np.ones((1, 16, 16, 1), bool), [SegmentRequest(" ")], ALGORITHM, OPTIONS)
    with pytest.raises(SegBuildError, match="no segments"):
        build_seg(sources, [(0, 0)], np.ones((1, 16, 16, 0), bool), [], ALGORITHM, OPTIONS)


def test_highdicom_errors_are_wrapped() -> None:
    sources = ct_stack(2, 16, 16)
    sources[1].ImagePositionPatient = sources[0].ImagePositionPatient  # two slices at one position
    with pytest.raises(SegBuildError, match="highdicom could not build the SEG") as info:
        build_seg(
            sources,
            [(0, 0), (1, 0)],
            np.ones((2, 16, 16, 1), bool),
            [SegmentRequest("liver")],
            ALGORITHM,
            OPTIONS,
        )
    assert info.value.series_instance_uid == sources[0].SeriesInstanceUID
    assert isinstance(info.value.__cause__, ValueError)


def test_multiframe_header_without_functional_groups_is_a_seg_build_error() -> None:
    source = ct_stack(1, 16, 16)[0]
    source.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT, but no functional groups
    source.NumberOfFrames = 2
    with pytest.raises(SegBuildError, match="cannot use the sources"):
        build_seg(
            [source], [(0, 0)], np.ones((1, 16, 16, 1), bool), [SegmentRequest("liver")], ALGORITHM, OPTIONS
        )


def test_sources_from_two_series_are_refused() -> None:
    first, second = ct_stack(1, 16, 16, seed=1)[0], ct_stack(1, 16, 16, seed=2)[0]
    with pytest.raises(SegBuildError, match="differ in"):
        build_seg(
            [first, second],
            [(0, 0), (1, 0)],
            np.ones((2, 16, 16, 1), bool),
            [SegmentRequest("liver")],
            ALGORITHM,
            OPTIONS,
        )


# --- labels, text, options ---------------------------------------------------------------------


def test_long_and_non_ascii_prompts(tmp_path: Path) -> None:
    sources = ct_stack(1, 16, 16)
    long = "enhancing tumor in the left temporal lobe adjacent to the lateral ventricle, FLAIR-hyperintense"
    masks = np.ones((1, 16, 16, 2), dtype=bool)
    result = build_seg(
        sources,
        [(0, 0)],
        masks,
        [SegmentRequest(long), SegmentRequest("Œdème péri-tumoral")],
        ALGORITHM,
        OPTIONS,
    )
    seg = _write_and_read(result, tmp_path)
    first, second = seg.SegmentSequence
    assert first.SegmentLabel == long[:64]
    assert first.SegmentDescription == long
    assert second.SegmentLabel == "Œdème péri-tumoral"
    local = second.SegmentedPropertyTypeCodeSequence[0]
    assert (local.CodingSchemeDesignator, local.CodeMeaning) == ("99MIPGW", "œdème péri tumoral")
    assert "99MIPGW" in [item.CodingSchemeDesignator for item in seg.CodingSchemeIdentificationSequence]
    assert seg.SpecificCharacterSet == "ISO_IR 192"
    assert seg.PatientName == sources[0].PatientName


def test_options_validate_content_label() -> None:
    with pytest.raises(ValueError, match="content_label"):
        SegOptions(
            rule_name="r",
            software_version="1",
            device_serial_number="1",
            content_datetime=WHEN,
            content_label="mip seg",
        )
    assert OPTIONS.segmentation_type is SegmentationType.BINARY
    assert FRACTIONAL.segmentation_type is SegmentationType.FRACTIONAL


def test_dicom_io_seg_stays_pure() -> None:
    banned = ("fastapi", "celery", "redis", "httpx", "pynetdicom", "sqlalchemy")
    code = (
        f"import sys, dicom_io.seg; bad = [m for m in {banned!r} if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- real data (skips without /work/shared) ----------------------------------------------------


def _frames_round_trip(
    source: Dataset, frames: Sequence[int], prompts: Sequence[str], tmp_path: Path, seed: int
) -> tuple[SegResult, hd.seg.Segmentation, np.ndarray]:
    masks = _blobs(len(frames), source.Rows, source.Columns, len(prompts), seed=seed)
    masks[:, 1, 1, :] = True
    refs = [(0, f) for f in frames]
    result = build_seg([source], refs, masks, [SegmentRequest(p) for p in prompts], ALGORITHM, OPTIONS)
    seg = _write_and_read(result, tmp_path)
    got = seg.get_pixels_by_source_frame(
        source.SOPInstanceUID,
        [f + 1 for f in frames],
        combine_segments=False,
        assert_missing_frames_are_empty=True,
    )
    assert np.array_equal(got.astype(bool), masks)
    return result, seg, masks


@pytest.mark.parametrize(
    ("relative", "frames"),
    [
        ("enhanced-multiframe/siemens-xa10/6_1.dcm", [5, 4, 3, 2, 1, 0]),  # per-frame geometry groups
        ("enhanced-multiframe/philips/IM_0027_fMAP.dcm", [0, 9, 3, 30]),  # two frames per position
        ("enhanced-multiframe/demo-enhanced-ct/eCT_Supplemental.dcm", [1, 0]),
    ],
)
def test_enhanced_multiframe(shared_dicom: Path, relative: str, frames: list[int], tmp_path: Path) -> None:
    source = pydicom.dcmread(shared_dicom / relative, stop_before_pixels=True)
    before = copy.deepcopy(source)
    _, seg, _ = _frames_round_trip(source, frames, ["liver", "right kidney"], tmp_path, seed=6)
    assert source == before  # highdicom edits the shared geometry it is given: it gets copies
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert [i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence] == [
        source.SOPInstanceUID
    ]


def test_multiframe_colour_ultrasound_without_frame_of_reference(shared_dicom: Path, tmp_path: Path) -> None:
    source = pydicom.dcmread(shared_dicom / "us-color/color3d_jpeg_baseline.dcm", stop_before_pixels=True)
    before = copy.deepcopy(source)
    _, seg, _ = _frames_round_trip(source, [40, 3, 77, 4], ["left heart ventricle", "cyst"], tmp_path, seed=7)
    assert source == before
    assert "FrameOfReferenceUID" not in seg
    labels = {item.FrameContentSequence[0].FrameLabel for item in seg.PerFrameFunctionalGroupsSequence}
    assert labels <= {"frame 41", "frame 4", "frame 78", "frame 5"}


@pytest.mark.parametrize("relative", ["us-color/US1_UNCR.dcm", "cr-chest-pa-mono1/RG1_UNCR.dcm"])
def test_single_2d_images(shared_dicom: Path, relative: str, tmp_path: Path) -> None:
    source = pydicom.dcmread(shared_dicom / relative, stop_before_pixels=True)
    masks = _blobs(1, source.Rows, source.Columns, 2, seed=8)
    masks[0, 2, 2, :] = True
    result = build_seg(
        [source], [(0, 0)], masks, [SegmentRequest("lung"), SegmentRequest("nodule")], ALGORITHM, OPTIONS
    )
    seg = _write_and_read(result, tmp_path)
    got = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)
    assert np.array_equal(got.astype(bool), masks)


@pytest.mark.parametrize("overlap", [False, True])
def test_overlapping_and_disjoint_segments_both_round_trip(tmp_path: Path, overlap: bool) -> None:
    sources = ct_stack(6)
    masks = np.zeros((6, sources[0].Rows, sources[0].Columns, 2), dtype=bool)
    masks[1:5, 4:20, 4:20, 0] = True  # an organ
    if overlap:
        masks[2:4, 8:12, 8:12, 1] = True  # a lesion inside it
    else:
        masks[2:4, 24:28, 24:28, 1] = True  # something beside it
    refs = [(i, 0) for i in range(6)]
    result = build_seg(
        sources, refs, masks, [SegmentRequest("liver"), SegmentRequest("lesion")], ALGORITHM, OPTIONS
    )
    seg = _write_and_read(result, tmp_path)
    uids = [ds.SOPInstanceUID for ds in sources]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=False)
    assert np.array_equal(got.astype(bool), masks)
