"""Reading the few header elements from received bytes, in every uncompressed encoding."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_preamble
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from dicom_io.testing.encode import encode
from dicom_io.testing.phantoms import volume_phantom
from service.completion import facts_from_header
from service.scp_header import HeaderError, HeaderIncompleteError, read_header
from workers.jobs import Route

SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


def _data_set_bytes(ds: Dataset, syntax: str) -> bytes:
    encoded = encode(ds, syntax)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, encoded, enforce_file_format=True)
    buffer.seek(0)
    read_preamble(buffer, False)
    pydicom.filereader._read_file_meta_info(buffer)
    return buffer.read()


def _with_awkward_sequences(ds: Dataset) -> Dataset:
    """Undefined-length sequences, nested, before the UIDs the reader needs (group 0008-0020)."""
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "T-62000", "SRT", "Liver"
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds["ReferencedImageSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.add_new(0x00091010, "LO", "PRIVATE")  # a private element, before the UIDs of group 0020
    return ds


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_uids_and_completion_facts_in_every_encoding(syntax: str) -> None:
    ds = _with_awkward_sequences(volume_phantom(slices=3, rows=16, columns=16, seed=5).datasets[1])
    ds.ImagesInAcquisition = 3
    body = _data_set_bytes(ds, syntax)
    header = read_header([body], syntax)
    assert header.sop_class_uid == ds.SOPClassUID
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.study_instance_uid == ds.StudyInstanceUID
    assert header.series_instance_uid == ds.SeriesInstanceUID
    _same_facts(header.arrival_facts(route=Route.DIMSE, calling_ae="CT", association="a1"), ds)
    # the raw elements decode, through pydicom, to what completion would read from the file
    _same_facts(header.arrival_facts(route=Route.DIMSE, calling_ae="CT", association="a1"), header.dataset())


def _same_facts(facts: object, ds: Dataset) -> None:
    expected = facts_from_header(ds, route=Route.DIMSE, calling_ae="CT", association="a1")
    for field in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "route", "announced"):
        assert getattr(facts, field) == getattr(expected, field), field
    assert facts.position == pytest.approx(expected.position, abs=1e-9)


def test_an_enhanced_object_announces_itself_whole() -> None:
    ds = volume_phantom(slices=4, rows=16, columns=16, enhanced=True).datasets[0]
    header = read_header([_data_set_bytes(ds, ExplicitVRLittleEndian)], ExplicitVRLittleEndian)
    facts = header.arrival_facts(route=Route.DIMSE, calling_ae=None, association=None)
    assert facts.announced == 1
    assert facts == facts_from_header(ds, route=Route.DIMSE, calling_ae=None, association=None)


def test_a_header_split_over_many_fragments_and_compressed_pixels() -> None:
    ds = volume_phantom(slices=1, rows=16, columns=16).datasets[0]
    body = _data_set_bytes(ds, RLELossless)
    fragments = [body[i : i + 7] for i in range(0, len(body), 7)]
    header = read_header([memoryview(f) for f in fragments], RLELossless)
    assert header.sop_instance_uid == ds.SOPInstanceUID
    # fragments that may not be all of it: ending on an element boundary proves nothing
    boundary = body.index(b"\x20\x00\x0d\x00")  # (0020,000D) starts here
    with pytest.raises(HeaderIncompleteError):
        read_header([body[:boundary]], RLELossless, complete=False)
    assert read_header([body[:boundary]], RLELossless).study_instance_uid is None  # all there was


def test_truncated_and_malformed_data_sets() -> None:
    ds = volume_phantom(slices=1, rows=16, columns=16).datasets[0]
    body = _data_set_bytes(ds, ExplicitVRLittleEndian)
    with pytest.raises(HeaderIncompleteError):
        read_header([body[:61]], ExplicitVRLittleEndian)  # ends inside an element
    with pytest.raises(HeaderError, match="valid VR"):
        read_header([b"\x08\x00\x16\x00\x01\x02\x04\x00abcd"], ExplicitVRLittleEndian)
    with pytest.raises(HeaderError):
        read_header([b"\x78\x9c garbage"], DeflatedExplicitVRLittleEndian)
    with pytest.raises(HeaderError, match="empty"):
        read_header([], ExplicitVRLittleEndian)


def test_missing_and_non_ascii_uids() -> None:
    body = (
        b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.2\x00"
        + b"\x08\x00\x18\x00UI\x06\x001.2.\xff\x00"  # not ASCII: reported, so the grammar check refuses it
    )
    header = read_header([body], ExplicitVRLittleEndian)
    assert header.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert header.sop_instance_uid == "\ufffd"
    assert header.study_instance_uid is None
    assert header.series_instance_uid is None
    facts = header.arrival_facts(route=Route.DIMSE, calling_ae=None, association=None)
    assert facts.position is None
    assert facts.announced is None
