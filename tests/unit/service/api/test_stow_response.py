"""The Store Instances Response as DICOM JSON, and the status it comes with."""

from __future__ import annotations

import json

import pydicom
import pytest

from service.api.problems import BadRequestError, UnsupportedMediaTypeError
from service.api.stow import stow_boundary, stow_response, stow_status
from service.api.stow_parts import FailureReason, PartOutcome, cut_off, refused_media_type

CT = "1.2.840.10008.5.1.4.1.1.2"


def stored(n: int) -> PartOutcome:
    return PartOutcome(n, 100, CT, f"1.2.3.{n}", "1.2.3", "1.2.3.9")


def failed(n: int, reason: FailureReason = FailureReason.STUDY_MISMATCH) -> PartOutcome:
    return PartOutcome(n, 100, CT, f"1.2.4.{n}", failure=reason, reason="x")


def test_the_response_reads_back_with_pydicom() -> None:
    outcomes = [stored(0), failed(1), cut_off(2, 10), stored(3)]
    ds = pydicom.Dataset.from_json(json.dumps(stow_response(outcomes)))
    assert [item.ReferencedSOPInstanceUID for item in ds.ReferencedSOPSequence] == ["1.2.3.0", "1.2.3.3"]
    assert all(item.ReferencedSOPClassUID == CT for item in ds.ReferencedSOPSequence)
    assert all("FailureReason" not in item for item in ds.ReferencedSOPSequence)
    first, second = ds.FailedSOPSequence
    assert (first.ReferencedSOPInstanceUID, first.FailureReason) == ("1.2.4.1", 0xA901)
    # a part that never showed its UIDs still gets an item, with empty UIDs
    assert second.FailureReason == FailureReason.CANNOT_UNDERSTAND
    assert second.ReferencedSOPInstanceUID == ""


def test_sequences_appear_only_when_they_have_items() -> None:
    assert list(stow_response([stored(0)])) == ["00081199"]
    assert list(stow_response([failed(0)])) == ["00081198"]
    body = stow_response([failed(0, FailureReason.OUT_OF_RESOURCES)])
    assert body["00081198"]["Value"][0]["00081197"] == {"vr": "US", "Value": [0xA700]}


def test_status_follows_ps3_18() -> None:
    assert stow_status([stored(0), stored(1)]) == 200
    assert stow_status([stored(0), failed(1)]) == 202
    assert stow_status([failed(0), failed(1)]) == 409
    assert stow_status([failed(0), refused_media_type(1, 5, "image/jpeg")]) == 409
    with pytest.raises(UnsupportedMediaTypeError):
        stow_status([refused_media_type(0, 5, "application/dicom+json")])
    with pytest.raises(BadRequestError, match="no part"):
        stow_status([])


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc', "abc"),
        ('Multipart/Related; boundary="a b"; type=application/dicom', "a b"),
        ("multipart/related; boundary=abc", "abc"),  # no type: the parts say what they are
    ],
)
def test_accepted_content_types(content_type: str, boundary: str) -> None:
    assert stow_boundary(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        (None, UnsupportedMediaTypeError),
        ("application/dicom", UnsupportedMediaTypeError),
        ("multipart/form-data; boundary=abc", UnsupportedMediaTypeError),
        ('multipart/related; type="application/dicom+json"; boundary=abc', UnsupportedMediaTypeError),
        ('multipart/related; type="application/dicom"; boundary="unterminated', UnsupportedMediaTypeError),
        ('multipart/related; type="application/dicom"', BadRequestError),
    ],
)
def test_refused_content_types(content_type: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        stow_boundary(content_type)
