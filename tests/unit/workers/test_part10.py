"""The Part 10 header written from a template: pydicom and dciodvfy read the files it makes."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_preamble
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless

from dicom_io.testing.phantoms import volume_phantom
from tests.helpers import dciodvfy_errors
from workers.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, part10_header


def _data_set_bytes(ds: pydicom.Dataset, syntax: str) -> bytes:
    """The data set alone, encoded as a C-STORE carries it (no preamble, no file meta)."""
    buffer = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = syntax
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    read_preamble(buffer, False)
    pydicom.filereader._read_file_meta_info(buffer)
    return buffer.read()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_pydicom_reads_the_file_and_the_data_set_is_untouched(tmp_path: Path, syntax: str) -> None:
    ds = volume_phantom(slices=1, rows=16, columns=16).datasets[0]
    body = _data_set_bytes(ds, syntax)
    path = tmp_path / "x.dcm"
    path.write_bytes(part10_header(ds.SOPClassUID, ds.SOPInstanceUID, syntax, "CT_SCANNER") + body)
    back = pydicom.dcmread(path)
    meta = back.file_meta
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.TransferSyntaxUID == syntax
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "CT_SCANNER"
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert (back.pixel_array == ds.pixel_array).all()
    # preamble + DICM + the group length element (12 bytes) + the group it counts
    header_length = len(path.read_bytes()) - len(body)
    assert meta.FileMetaInformationGroupLength == header_length - 132 - 12


def test_odd_length_values_are_padded_and_no_source_ae_is_left_out() -> None:
    header = part10_header("1.2.3", "1.2.34", JPEG2000Lossless)  # odd lengths: padded with NUL
    buffer = io.BytesIO(header)
    read_preamble(buffer, False)
    meta = pydicom.filereader._read_file_meta_info(buffer)
    assert buffer.read() == b""  # the group ends where the header does
    assert meta.MediaStorageSOPClassUID == "1.2.3"
    assert meta.MediaStorageSOPInstanceUID == "1.2.34"
    assert "SourceApplicationEntityTitle" not in meta
    assert len(header) % 2 == 0
    assert header[:132] == b"\0" * 128 + b"DICM"


def test_dciodvfy_accepts_the_file(tmp_path: Path) -> None:
    ds = volume_phantom(slices=1, rows=32, columns=24, seed=3).datasets[0]
    path = tmp_path / "ct.dcm"
    path.write_bytes(
        part10_header(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, "MODALITY")
        + _data_set_bytes(ds, ExplicitVRLittleEndian)
    )
    assert dciodvfy_errors(path) == []
