"""The command sets the fast path reads and writes, checked against pydicom and pynetdicom."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode

from service.scp_dimse import encode_store_response, parse_command
from service.scp_status import StoreOutcome

CT = b"1.2.840.10008.5.1.4.1.1.2\0"
SOP = b"1.2.826.0.1.3680043.8.498.1\0"


def _implicit(ds: Dataset) -> bytes:
    # a command set is always Implicit VR Little Endian (PS3.7 §6.3.1)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_a_c_store_request_from_pydicom_parses() -> None:
    ds = Dataset()
    ds.CommandGroupLength = 0  # value irrelevant to the parser
    ds.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.CommandField = 0x0001
    ds.MessageID = 7
    ds.Priority = 0
    ds.CommandDataSetType = 0x0000
    ds.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    command = parse_command(_implicit(ds))
    assert command[0x0100] == b"\x01\x00"
    assert command[0x0110] == b"\x07\x00"
    assert command[0x1000].rstrip(b"\0") == b"1.2.826.0.1.3680043.8.498.1"
    with pytest.raises(ValueError, match="malformed"):
        parse_command(_implicit(ds)[:-3])


@pytest.mark.parametrize("outcome", [StoreOutcome.STORED, StoreOutcome.INVALID_UID])
def test_the_response_decodes_as_pynetdicom_would(outcome: StoreOutcome) -> None:
    encoded = encode_store_response(CT, SOP, 7, outcome.status, "StudyInstanceUID is not a valid UID")
    ds = decode(io.BytesIO(encoded), True, True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 7
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == outcome.status
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.AffectedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    if outcome.stored:
        assert "ErrorComment" not in ds  # only failures carry a comment
    else:
        assert ds.ErrorComment == "StudyInstanceUID is not a valid UID"
    primitive = C_STORE()  # what an SCU built on pynetdicom makes of it
    primitive.Status = ds.Status
    assert primitive.Status == outcome.status


def test_long_comments_are_cut_to_the_vr() -> None:
    encoded = encode_store_response(CT, SOP, 1, 0xC000, "x" * 100)
    assert len(decode(io.BytesIO(encoded), True, True).ErrorComment) == 64
