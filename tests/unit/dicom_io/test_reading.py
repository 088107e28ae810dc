from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicom_io.errors import InvalidInstanceError, NotDicomError
from dicom_io.pixels import read_frames
from dicom_io.reading import ReadLimits, read_dataset, read_instance, scan
from dicom_io.testing import encode, write_datasets
from dicom_io.testing.phantoms import volume_phantom


@pytest.fixture
def ct_files(tmp_path: Path) -> list[Path]:
    return volume_phantom(slices=6, seed=3).write(tmp_path / "ct")


def test_reads_header_and_finds_raw_pixel_offset(ct_files: list[Path]) -> None:
    instance = read_instance(ct_files[0])
    ds = pydicom.dcmread(ct_files[0])
    assert instance.sop_instance_uid == ds.SOPInstanceUID
    assert instance.series_instance_uid == ds.SeriesInstanceUID
    assert (instance.rows, instance.columns, instance.number_of_frames) == (ds.Rows, ds.Columns, 1)
    assert "PixelData" not in instance.header
    assert instance.is_image
    assert instance.pixel_data_offset is not None
    with ct_files[0].open("rb") as fh:
        fh.seek(instance.pixel_data_offset)
        raw = fh.read(len(ds.PixelData))
    assert raw == ds.PixelData


def test_file_without_preamble_but_with_prefix(ct_files: list[Path], tmp_path: Path) -> None:
    stripped = tmp_path / "no-preamble.dcm"
    stripped.write_bytes(ct_files[0].read_bytes()[128:])
    instance = read_instance(stripped)
    assert instance.sop_instance_uid == pydicom.dcmread(ct_files[0]).SOPInstanceUID
    assert instance.pixel_data_offset == read_instance(ct_files[0]).pixel_data_offset - 128
    assert read_dataset(stripped).PixelData == pydicom.dcmread(ct_files[0]).PixelData


def test_raw_dataset_without_meta_header(ct_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(ct_files[0])
    bare = tmp_path / "bare.dcm"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    ds.save_as(bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert bare.read_bytes()[:2] == b"\x08\x00"
    instance = read_instance(bare)
    assert instance.transfer_syntax_uid == ImplicitVRLittleEndian
    assert instance.is_image


def test_non_dicom_files_are_skipped_with_a_reason(
    ct_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = ct_files[0].parent
    (folder / "notes.txt").write_text("radiology report draft\n")
    (folder / "DICOMDIR.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with caplog.at_level(logging.INFO, logger="dicom_io.reading"):
        result = scan([folder])
    assert len(result.instances) == len(ct_files)
    assert {s.path.name for s in result.skipped} == {"notes.txt", "DICOMDIR.png"}
    assert all(isinstance(s.error, NotDicomError) for s in result.skipped)
    assert "notes.txt" in caplog.text


def test_truncated_file_names_the_instance(ct_files: list[Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(ct_files[1].read_bytes()[:-500])
    with pytest.raises(InvalidInstanceError) as err:
        read_instance(truncated)
    uid = pydicom.dcmread(ct_files[1]).SOPInstanceUID
    assert uid in str(err.value)
    assert "truncated" in str(err.value)


def test_header_cut_short_is_an_invalid_instance(ct_files: list[Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(ct_files[0].read_bytes()[:400])
    with pytest.raises(InvalidInstanceError) as err:
        read_instance(cut)
    assert str(cut) in str(err.value)


def test_garbage_bytes_are_not_dicom(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(NotDicomError):
        read_instance(junk)


def test_garbage_after_a_valid_prefix(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(
        bytes(128) + b"DICM" + np.random.default_rng(2).integers(0, 256, 600, dtype=np.uint8).tobytes()
    )
    with pytest.raises(InvalidInstanceError):
        read_instance(junk)


def _rewrite(src: Path, dst: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst, enforce_file_format=False)
    return dst


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_invalid_uid_is_refused_with_the_reason(ct_files: list[Path], tmp_path: Path) -> None:
    bad = _rewrite(ct_files[0], tmp_path / "bad-uid.dcm", SeriesInstanceUID="1.2.03.abc")
    with pytest.raises(InvalidInstanceError, match=r"SeriesInstanceUID '1\.2\.03\.abc' is not a valid UID"):
        read_instance(bad)


def test_missing_sop_instance_uid(ct_files: list[Path], tmp_path: Path) -> None:
    bad = _rewrite(ct_files[0], tmp_path / "no-uid.dcm", SOPInstanceUID=None)
    with pytest.raises(InvalidInstanceError, match="missing SOPInstanceUID"):
        read_instance(bad)


def test_absurd_dimensions_are_refused_before_decoding(ct_files: list[Path], tmp_path: Path) -> None:
    bad = _rewrite(ct_files[0], tmp_path / "huge.dcm", Rows=65535, Columns=65535)
    with pytest.raises(InvalidInstanceError, match="65535x65535 exceeds"):
        read_instance(bad)
    with pytest.raises(InvalidInstanceError, match="GiB of pixel data exceeds"):
        read_instance(ct_files[0], ReadLimits(max_pixel_bytes=1000))


def test_big_endian_file_is_read_and_decoded(ct_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(ct_files[0])
    big = tmp_path / "big.dcm"
    write_datasets([encode(ds, ExplicitVRBigEndian)], big.parent)[0].rename(big)
    instance = read_instance(big)
    assert instance.transfer_syntax_uid == ExplicitVRBigEndian
    assert instance.pixel_data_offset is None  # decoded through pydicom, not read raw
    np.testing.assert_array_equal(read_frames(instance)[0], ds.pixel_array)


def test_one_bad_file_does_not_stop_the_scan(ct_files: list[Path]) -> None:
    folder = ct_files[0].parent
    (folder / "broken.dcm").write_bytes(ct_files[2].read_bytes()[:-100])
    result = scan([folder])
    assert len(result.instances) == len(ct_files)
    assert [s.path.name for s in result.skipped] == ["broken.dcm"]
    assert isinstance(result.skipped[0].error, InvalidInstanceError)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        scan([tmp_path / "absent"])
