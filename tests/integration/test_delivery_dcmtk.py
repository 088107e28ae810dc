"""C-STORE of a generated SEG into dcmtk's storescp, plain and over TLS; nothing listening."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from config.settings import DicomNode
from tests import peers
from tests.helpers import dciodvfy_errors
from tests.peers import StoreSCP, TLSFiles, free_ports, make_tls_files, write_sample_seg
from workers.delivery import DimseSender, sender_for
from workers.errors import DeliveryError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_seg(tmp_path_factory.mktemp("seg"))


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path_factory.mktemp("storescp")) as peer:
        yield peer


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_scp(tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path_factory.mktemp("storescp-tls"), tls=tls_files) as peer:
        yield peer


def _dataset_bytes(path: Path) -> bytes:
    """The data set of a Part 10 file as stored (everything after the file meta group)."""
    meta = pydicom.filereader.read_file_meta_info(path)
    return path.read_bytes()[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


def _received(scp: StoreSCP, seg: Path) -> Path:
    uid = pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID
    (path,) = [p for p in scp.received_files() if p.name.endswith(uid)]  # storescp names it SG.<uid>
    return path


def _assert_received_unchanged(scp: StoreSCP, seg: Path) -> None:
    sent = pydicom.dcmread(seg)
    received_path = _received(scp, seg)
    received = pydicom.dcmread(received_path)
    assert received.SOPInstanceUID == sent.SOPInstanceUID
    assert received.SOPClassUID == sent.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert received.PixelData == sent.PixelData
    assert _dataset_bytes(received_path) == _dataset_bytes(seg)  # not re-encoded on the way


def test_c_store_delivers_the_seg_unchanged(scp: StoreSCP, seg: Path) -> None:
    sender = sender_for("storescp", scp.dicom_node(), calling_ae="MIPGW")
    assert isinstance(sender, DimseSender)
    receipt = sender.send(seg, job_id="job-1")
    assert receipt.destination == "storescp"
    assert receipt.sop_instance_uid == pydicom.dcmread(seg).SOPInstanceUID
    assert receipt.detail == "C-STORE success (0x0000)"
    _assert_received_unchanged(scp, seg)


def test_what_the_pacs_received_is_a_valid_seg(scp: StoreSCP, seg: Path) -> None:
    sender_for("storescp", scp.dicom_node(), calling_ae="MIPGW").send(seg)
    assert dciodvfy_errors(_received(scp, seg)) == []


def test_c_store_over_tls(tls_scp: StoreSCP, seg: Path) -> None:
    receipt = sender_for("tls", tls_scp.dicom_node(), calling_ae="MIPGW").send(seg)
    assert receipt.detail == "C-STORE success (0x0000)"
    _assert_received_unchanged(tls_scp, seg)


def test_an_untrusted_tls_certificate_is_final(tls_scp: StoreSCP, seg: Path, tmp_path: Path) -> None:
    stranger = make_tls_files(tmp_path / "other-ca")  # a CA that did not sign the peer's certificate
    with pytest.raises(DeliveryError) as caught:
        sender_for("tls", tls_scp.dicom_node(tls_ca_file=stranger.ca_file), calling_ae="MIPGW").send(seg)
    assert caught.value.reason.startswith("TLS handshake failed")
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.reason
    assert caught.value.retryable is False


def test_a_peer_whose_port_was_taken_starts_again_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seg: Path
) -> None:
    """tests.peers: a port taken between picking and starting is left for a new one."""
    squatter = socket.create_server(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    offers = iter([[taken]])  # the first port offered is the squatter's
    monkeypatch.setattr(peers, "free_ports", lambda count=1: next(offers, None) or free_ports(count))
    with squatter, StoreSCP(tmp_path) as scp:
        assert scp.port != taken
        assert "Address already in use" in scp.log_text()
        assert (
            sender_for("scp", scp.dicom_node(), calling_ae="MIPGW")
            .send(seg)
            .detail.startswith("C-STORE success")
        )
    assert scp.pid is None  # stopped


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc (Linux)")
def test_a_peer_caught_exiting_listens_on_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests.peers: a descriptor that vanishes while /proc is read (the peer is exiting after a
    failed bind) means "not listening", never "cannot tell", which would fall back to a TCP probe
    that a squatter on the same port answers (a CI run once took the squatter for storescp)."""

    def vanished(path: object) -> str:
        raise FileNotFoundError(path)

    monkeypatch.setattr(peers.os, "readlink", vanished)
    assert peers._listening_ports(os.getpid()) == set()


def test_nothing_listening_is_a_retryable_connection_refused(seg: Path) -> None:
    (port,) = free_ports()
    node = DicomNode(ae_title="TESTSCP", host="127.0.0.1", port=port)
    with pytest.raises(DeliveryError) as caught:
        sender_for("down", node, calling_ae="MIPGW").send(seg)
    assert caught.value.reason.startswith(f"connection refused (TESTSCP@127.0.0.1:{port})")
    assert caught.value.retryable is True
