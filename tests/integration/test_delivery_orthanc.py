"""C-STORE and STOW-RS of generated SEGs into Orthanc, checked through Orthanc's REST API.

One Orthanc for the module, with basic auth on (REST and DICOMweb) and the gateway's AE title
(MIPGW at 127.0.0.1) as its only known modality.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.peers import Orthanc, free_ports, write_sample_seg
from workers.delivery import StowSender, sender_for
from workers.errors import DeliveryError

pytestmark = pytest.mark.integration

USER, PASSWORD = "gateway", "S3cret-orthanc-pw"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    (gateway_port,) = free_ports()  # where Orthanc would send to us; nothing listens in these tests
    with Orthanc(
        tmp_path_factory.mktemp("orthanc"), {"mipgw": ("MIPGW", gateway_port)}, users={USER: PASSWORD}
    ) as peer:
        yield peer


@pytest.fixture(scope="module")
def segs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three different SEGs (one per way in), so each test finds only what it sent."""
    folder = tmp_path_factory.mktemp("segs")
    return [write_sample_seg(folder, seed=seed, name=f"seg{seed}.dcm") for seed in range(3)]


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _assert_stored(pacs: Orthanc, seg: Path) -> None:
    orthanc_id = pacs.find_instance(_uid(seg))
    assert orthanc_id is not None
    assert orthanc_id in pacs.instances()
    stored = pydicom.dcmread(io.BytesIO(pacs.instance_file(orthanc_id)))
    sent = pydicom.dcmread(seg)
    assert stored.SOPInstanceUID == sent.SOPInstanceUID
    assert stored.SOPClassUID == sent.SOPClassUID
    assert stored.PixelData == sent.PixelData


def test_c_store_into_orthanc(pacs: Orthanc, segs: list[Path]) -> None:
    assert pacs.find_instance(_uid(segs[0])) is None
    receipt = sender_for("orthanc", pacs.dicom_node(), calling_ae="MIPGW").send(segs[0], job_id="job-1")
    assert (receipt.destination, receipt.sop_instance_uid) == ("orthanc", _uid(segs[0]))
    assert receipt.detail == "C-STORE success (0x0000)"
    _assert_stored(pacs, segs[0])


def test_a_wrong_called_ae_is_refused_for_good(pacs: Orthanc, segs: list[Path]) -> None:
    with pytest.raises(DeliveryError) as caught:
        sender_for("orthanc", pacs.dicom_node(ae_title="NOT-ORTHANC"), calling_ae="MIPGW").send(segs[2])
    assert "association rejected (permanent) by the service user: called AE title not recognised" in str(
        caught.value
    )
    assert caught.value.retryable is False
    assert pacs.find_instance(_uid(segs[2])) is None


def test_an_unknown_calling_ae_is_refused_for_good(pacs: Orthanc, segs: list[Path]) -> None:
    with pytest.raises(DeliveryError) as caught:
        sender_for("orthanc", pacs.dicom_node(), calling_ae="STRANGER").send(segs[2])
    assert "calling AE title not recognised" in caught.value.reason
    assert caught.value.retryable is False


def test_stow_rs_into_orthanc_with_basic_auth(pacs: Orthanc, segs: list[Path]) -> None:
    assert pacs.find_instance(_uid(segs[1])) is None
    sender = sender_for(
        "orthanc-web", pacs.dicomweb_node(username=USER, password=PASSWORD), calling_ae="MIPGW"
    )
    assert isinstance(sender, StowSender)
    with sender:
        receipt = sender.send(segs[1], job_id="job-2")
        assert receipt.sop_instance_uid == _uid(segs[1])
        assert receipt.detail == (
            f"STOW to {pacs.dicomweb_url}/studies answered 200 OK: stored (ReferencedSOPSequence)"
        )
        _assert_stored(pacs, segs[1])
        again = sender.send(segs[1])  # a retried job sends the same instance again
    assert again.sop_instance_uid == _uid(segs[1])


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_stow_rs_with_bad_credentials_is_final(pacs: Orthanc, segs: list[Path], password: str | None) -> None:
    node = pacs.dicomweb_node(username=USER, password=password) if password else pacs.dicomweb_node()
    with StowSender("orthanc-web", node) as sender, pytest.raises(DeliveryError) as caught:
        sender.send(segs[2])
    assert caught.value.reason == "STOW server rejected the credentials (401)"
    assert caught.value.retryable is False
    assert "wrong-password" not in str(caught.value)


def test_stow_rs_to_a_wrong_path_is_final(pacs: Orthanc, segs: list[Path]) -> None:
    node = pacs.dicomweb_node(url=f"{pacs.http_url}/no-dicom-web", username=USER, password=PASSWORD)
    with StowSender("orthanc-web", node) as sender, pytest.raises(DeliveryError) as caught:
        sender.send(segs[2])
    assert "answered 404" in caught.value.reason
    assert caught.value.retryable is False
