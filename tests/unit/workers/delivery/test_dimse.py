"""The C-STORE SCU against pynetdicom SCPs on loopback that answer as told (cheap, in process)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from pydicom import Dataset, dcmread
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SegmentationStorage,
)
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from config.settings import DicomNode
from tests.peers import free_ports
from tests.unit.workers.delivery.seg_files import minimal_seg_file
from workers.delivery import DimseSender, sender_for
from workers.errors import DeliveryError

PATIENT_NAME = "DOE^JANE"


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal Segmentation Storage object (the SCU only reads its file meta)."""
    folder = tmp_path_factory.mktemp("seg")
    return minimal_seg_file(
        folder, PatientName=PATIENT_NAME, Rows=16, Columns=16, NumberOfFrames=2, BitsAllocated=1,
        PixelData=bytes(range(64)),
    )  # fmt: skip


class Received:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.syntaxes: list[str] = []


@contextmanager
def scp(
    answer: Callable[[Event], Any] = lambda event: 0x0000,
    *,
    abstract_syntaxes: Sequence[str] = (SegmentationStorage,),
    transfer_syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    require_calling: Sequence[str] = (),
) -> Iterator[tuple[int, Received]]:
    received = Received()

    def handle(event: Event) -> Any:
        request = cast(C_STORE, event.request)
        received.raw.append(cast(BytesIO, request.DataSet).getvalue())
        received.syntaxes.append(event.context.transfer_syntax)
        return answer(event)

    ae = AE("TESTSCP")
    ae.require_called_aet = True
    ae.require_calling_aet = list(require_calling)
    for uid in abstract_syntaxes:
        ae.add_supported_context(uid, list(transfer_syntaxes))
    server = ae.make_server(("127.0.0.1", 0), evt_handlers=[(evt.EVT_C_STORE, handle)])
    # start_server() polls every 0.5 s, which is what each shutdown would wait
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        socketserver.TCPServer.shutdown(server)  # not pynetdicom's: it expects start_server()'s bookkeeping
        server.server_close()
        thread.join()


def _sender(port: int, **overrides: Any) -> DimseSender:
    values: dict[str, Any] = {"ae_title": "TESTSCP", "host": "127.0.0.1", "port": port, "timeout_s": 5}
    sender = sender_for("pacs", DicomNode(**(values | overrides)), calling_ae="MIPGW")
    assert isinstance(sender, DimseSender)
    return sender


def _dataset_bytes(path: Path) -> bytes:
    """The file's data set as stored, after the file meta."""
    with dcmread(path, stop_before_pixels=True) as ds:  # only to find the meta's length
        meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return path.read_bytes()[meta_end:]


def test_the_file_goes_out_as_stored(seg_file: Path) -> None:
    with scp() as (port, received):
        receipt = _sender(port).send(seg_file, job_id="job-1")
    assert receipt.destination == "pacs"
    assert receipt.sop_instance_uid == dcmread(seg_file).SOPInstanceUID
    assert receipt.detail == "C-STORE success (0x0000)"
    assert received.raw == [_dataset_bytes(seg_file)]
    assert received.syntaxes == [ExplicitVRLittleEndian]
    assert _config.STORE_SEND_CHUNKED_DATASET is False  # the process-wide switch is put back


def test_a_peer_taking_only_implicit_vr_gets_the_data_set_re_encoded(seg_file: Path) -> None:
    with scp(transfer_syntaxes=[ImplicitVRLittleEndian]) as (port, received):
        _sender(port).send(seg_file)
    assert received.syntaxes == [ImplicitVRLittleEndian]
    (raw,) = received.raw
    assert raw != _dataset_bytes(seg_file)
    assert b"1.2.840.10008.5.1.4.1.1.66.4" in raw  # the SOP class, now in implicit VR


def test_the_calling_ae_is_the_nodes_own_or_the_gateways(seg_file: Path) -> None:
    with scp(require_calling=["ROUTER"]) as (port, _):
        _sender(port, calling_ae_title="ROUTER").send(seg_file)
        with pytest.raises(DeliveryError, match="calling AE title not recognised"):
            _sender(port).send(seg_file)


def test_a_wrong_called_ae_is_final(seg_file: Path) -> None:
    with scp() as (port, _), pytest.raises(DeliveryError) as caught:
        _sender(port, ae_title="NOTTHEPACS").send(seg_file)
    assert "association rejected (permanent) by the service user: called AE title not recognised" in str(
        caught.value
    )
    assert caught.value.retryable is False
    assert caught.value.destination == "pacs"


def test_a_peer_without_the_sop_class_is_final(seg_file: Path) -> None:
    with scp(abstract_syntaxes=[CTImageStorage]) as (port, _), pytest.raises(DeliveryError) as caught:
        _sender(port).send(seg_file)
    assert "no accepted presentation context for Segmentation Storage" in caught.value.reason
    assert "abstract syntax not supported" in caught.value.reason
    assert caught.value.retryable is False


def _status(code: int, comment: str | None = None) -> Callable[[Event], Dataset]:
    def answer(event: Event) -> Dataset:
        status = Dataset()
        status.Status = code
        if comment:
            status.ErrorComment = comment
        return status

    return answer


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0xB000, "C-STORE delivered with a warning: coercion of data elements (0xB000): PatientID coerced"),
        (
            0xB007,
            "C-STORE delivered with a warning: data set does not match SOP class (stored anyway) (0xB007)",
        ),
    ],
)
def test_warnings_are_delivered_with_the_warning_named(seg_file: Path, code: int, text: str) -> None:
    with scp(_status(code, "PatientID coerced" if code == 0xB000 else None)) as (port, _):
        assert _sender(port).send(seg_file).detail == text


@pytest.mark.parametrize(
    ("code", "text", "retryable"),
    [
        (0xA700, "refused: out of resources (0xA700)", True),
        (0xA702, "refused: out of resources (0xA702)", True),
        (0xA900, "data set does not match SOP class (0xA900)", False),
        (0xC000, "cannot understand (0xC000)", False),
        (0xC123, "cannot understand (0xC123)", False),
        (0x0122, "SOP class not supported (0x0122)", False),
        (0x0110, "processing failure (0x0110)", True),
    ],
)
def test_failures_are_named_and_classified(seg_file: Path, code: int, text: str, retryable: bool) -> None:
    with scp(_status(code)) as (port, _), pytest.raises(DeliveryError) as caught:
        _sender(port).send(seg_file)
    assert caught.value.reason.startswith(f"C-STORE failed with {text}")
    assert caught.value.retryable is retryable


def test_no_answer_to_the_c_store_is_retryable(seg_file: Path) -> None:
    release = threading.Event()

    def stall(event: Event) -> int:
        release.wait(5)
        return 0x0000

    with scp(stall) as (port, _):
        try:
            with pytest.raises(DeliveryError) as caught:
                _sender(port, timeout_s=0.3).send(seg_file)
        finally:
            release.set()
    assert caught.value.reason.startswith("no C-STORE response within 0.3 s")
    assert caught.value.retryable is True


def test_an_abort_during_the_c_store_is_retryable(seg_file: Path) -> None:
    def abort(event: Event) -> int:
        event.assoc.abort()
        return 0x0000

    with scp(abort) as (port, _), pytest.raises(DeliveryError) as caught:
        _sender(port).send(seg_file)
    assert caught.value.reason.startswith("association aborted during C-STORE")
    assert caught.value.retryable is True


@contextmanager
def _listener(behaviour: str) -> Iterator[int]:
    """A TCP port that stays silent ("silent") or hangs up at once ("hang-up")."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    if behaviour == "hang-up":
        thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        server.close()


def test_a_peer_that_never_answers_the_association_request_is_retryable(seg_file: Path) -> None:
    started = time.monotonic()
    with _listener("silent") as port, pytest.raises(DeliveryError) as caught:
        _sender(port, timeout_s=0.3).send(seg_file)
    assert time.monotonic() - started < 3
    assert caught.value.reason.startswith("no answer to the association request within 0.3 s")
    assert caught.value.retryable is True


def test_a_peer_that_hangs_up_is_retryable(seg_file: Path) -> None:
    with _listener("hang-up") as port, pytest.raises(DeliveryError) as caught:
        _sender(port).send(seg_file)
    assert caught.value.reason.startswith("association aborted while associating")
    assert caught.value.retryable is True


def test_nothing_listening_is_a_retryable_connection_refused(seg_file: Path) -> None:
    (port,) = free_ports()
    with pytest.raises(DeliveryError) as caught:
        _sender(port).send(seg_file)
    assert caught.value.reason.startswith(f"connection refused (TESTSCP@127.0.0.1:{port})")
    assert caught.value.retryable is True


def test_an_unreadable_file_is_final(tmp_path: Path) -> None:
    path = tmp_path / "not-dicom.dcm"
    path.write_bytes(b"hello")
    with pytest.raises(DeliveryError, match=r"cannot read the file meta of not-dicom\.dcm") as caught:
        _sender(1).send(path)
    assert caught.value.retryable is False


def test_missing_tls_files_are_final(seg_file: Path, tmp_path: Path) -> None:
    sender = _sender(1, tls=True, tls_ca_file=tmp_path / "missing-ca.pem")
    with pytest.raises(DeliveryError, match="cannot load the TLS files") as caught:
        sender.send(seg_file)
    assert caught.value.retryable is False


def test_logs_name_destination_job_and_instance_never_the_patient(seg_file: Path) -> None:
    uid = dcmread(seg_file).SOPInstanceUID
    with scp() as (port, _), structlog.testing.capture_logs() as logs:
        _sender(port).send(seg_file, job_id="job-7")
        with pytest.raises(DeliveryError):
            _sender(port, ae_title="WRONG").send(seg_file, job_id="job-8")
    sent, failed = logs
    assert sent["event"] == "dicom.store.sent"
    assert (sent["destination"], sent["job_id"], sent["sop_instance_uid"]) == ("pacs", "job-7", uid)
    assert failed["event"] == "dicom.store.failed"
    assert (failed["job_id"], failed["retryable"]) == ("job-8", False)
    assert PATIENT_NAME not in repr(logs)
