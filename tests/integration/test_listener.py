"""The DICOM listener end to end: a real :class:`DicomListener` in process against dcmtk's echoscu/storescu.

Everything behind the listener is real too: the spool in a temporary data directory, the SQLite job
store, :class:`Intake` with its :class:`CompletionTracker` and idle timer. The queue is the boundary:
a recording enqueuer stands in for Celery and keeps the job ids it was handed. The peers are dcmtk's
echoscu and storescu, always by their system path (pynetdicom's look-alike scripts in the virtualenv
would shadow them) with ``TCP_NODELAY=1``; where an association must be held open while something
else happens, a pynetdicom requestor holds it. Images are small and series short: the whole module
runs in well under a minute.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from config.settings import ListenerSettings, Settings
from dicom_io.testing import Phantom, encode, volume_phantom, write_datasets
from service import scp_transport
from service.completion import CompletionTracker
from service.intake import Intake
from service.scp import DicomListener
from service.scp_status import Refusal, StoreOutcome
from service.scp_transport import ListenerAssociation
from tests.helpers import IntakeQueue, require_tool
from tests.peers import TLSFiles, make_tls_files
from workers.dicom_identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from workers.jobs import JobState
from workers.storage import DataDir
from workers.store import JobView, Store, list_jobs, open_store

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
OUR_AE = "MIPGW"
SENDER_AE = "STORESCU"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk 3.6.7 leaves Nagle on otherwise
WAIT_S = 30.0  # a bound for things that happen in the background, never a timing assertion


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Gateway:
    listener: DicomListener
    intake: Intake
    store: Store
    data: DataDir
    queue: IntakeQueue
    closed: bool = field(default=False)

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def spool(self) -> Path:
        return self.data.root / "incoming"

    def spool_files(self) -> list[Path]:
        """Every file in the spool, temp files included."""
        return sorted(p for p in self.spool.rglob("*") if p.is_file()) if self.spool.exists() else []

    def jobs(self, series_uid: str) -> list[JobView]:
        with self.store.session(readonly=True) as s:
            return list_jobs(s, series_uid=series_uid)

    def job(self, series_uid: str) -> JobView:
        """The one job of a series, once the intake made it."""
        wait_until(lambda: self.jobs(series_uid), f"a job for series {series_uid}")
        (job,) = self.jobs(series_uid)
        return job

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.listener.stop()
            self.intake.stop()
            self.store.close()


StartGateway = Callable[..., Gateway]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """Start listeners (stopped at teardown, also on failure); keyword arguments are ListenerSettings."""
    started: list[Gateway] = []

    def start(
        *, idle_s: float = 30.0, grace_s: float = 10.0, store_busy_s: float = 30.0, **listener: Any
    ) -> Gateway:
        root = tmp_path / f"gw{len(started)}"
        values: dict[str, Any] = {
            "bind": LOOPBACK,
            "port": 0,
            "allowed_calling_aes": (SENDER_AE,),
            "spool_reserve_bytes": 0,
            "completion_idle_s": idle_s,
        }
        settings = Settings(
            data_dir=root / "data",
            ae_title=OUR_AE,
            database_url=f"sqlite+pysqlite:///{root / 'jobs.sqlite3'}",
            listener=ListenerSettings(**(values | listener)),
        )
        data = DataDir(settings.data_dir)
        store = open_store(settings.database_url or "", migrate=True, busy_timeout_s=store_busy_s)
        queue = IntakeQueue()
        tracker = CompletionTracker(idle_s=settings.listener.completion_idle_s)
        intake = Intake(data, store, queue, tracker, actor="scp", tick_s=0.1)
        listener_ = DicomListener(settings, intake, data, grace_s=grace_s)
        gw = Gateway(listener_, intake, store, data, queue)
        started.append(gw)
        try:
            listener_.start()
        except BaseException:
            store.close()
            raise
        intake.start()
        return gw

    yield start
    for gw in reversed(started):
        gw.close()


@pytest.fixture
def storescu() -> str:
    return require_tool("storescu")


@pytest.fixture
def echoscu() -> str:
    return require_tool("echoscu")


def dcmtk(tool: str, *args: object, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, *map(str, args)], env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def send(
    storescu: str, port: int, files: list[Path], *options: str, calling: str = SENDER_AE
) -> subprocess.CompletedProcess[str]:
    return dcmtk(storescu, "-aet", calling, "-aec", OUR_AE, *options, LOOPBACK, port, *files)


def echo(
    echoscu: str, port: int, *options: str, calling: str = SENDER_AE
) -> subprocess.CompletedProcess[str]:
    return dcmtk(echoscu, "-aet", calling, "-aec", OUR_AE, *options, LOOPBACK, port, timeout=30)


def series(folder: Path, *, seed: int, slices: int = 5, **options: Any) -> tuple[Phantom, list[Path]]:
    """A small generated CT series written to ``folder`` (Explicit VR Little Endian)."""
    phantom = volume_phantom(rows=32, columns=32, slices=slices, seed=seed, **options)
    return phantom, phantom.write(folder)


def data_set_bytes(path: Path) -> bytes:
    """A Part 10 file's data set as written (everything after the file meta group)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", path
    group, element, vr = struct.unpack_from("<HH2s", raw, 132)
    assert (group, element, vr) == (0x0002, 0x0000, b"UL"), path
    (meta_length,) = struct.unpack_from("<I", raw, 140)
    return raw[144 + meta_length :]


def spooled(gw: Gateway, ds: pydicom.Dataset) -> Path:
    return gw.data.incoming_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def assert_stored_as_sent(gw: Gateway, files: list[Path]) -> None:
    """Each sent file is in the spool under its UIDs, its data set byte for byte as sent."""
    for path in files:
        sent = pydicom.dcmread(path, stop_before_pixels=True)
        stored = spooled(gw, sent)
        assert stored.is_file(), f"{path.name} was not stored"
        assert data_set_bytes(stored) == data_set_bytes(path), f"{path.name} changed on the way"
        meta = pydicom.filereader.read_file_meta_info(stored)
        assert meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
        assert str(meta.SourceApplicationEntityTitle).strip() == SENDER_AE


def connection_ends(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once a connection to the listener has ended and the listener has handled its end."""
    ended = threading.Event()
    association_ended = gw.listener.association_ended  # the server calls it after the connection's thread

    def record(assoc: ListenerAssociation) -> None:
        association_ended(assoc)
        ended.set()

    monkeypatch.setattr(gw.listener, "association_ended", record)
    return ended


def test_c_echo_is_answered(gateway: StartGateway, echoscu: str) -> None:
    gw = gateway()
    result = echo(echoscu, gw.port, "-d")
    assert result.returncode == 0, result.stderr
    # the peer's log names the gateway, not the networking library under it
    dialogue = result.stdout + result.stderr
    assert f"Their Implementation Class UID:    {IMPLEMENTATION_CLASS_UID}" in dialogue
    assert f"Their Implementation Version Name: {IMPLEMENTATION_VERSION_NAME}" in dialogue
    snapshot = gw.listener.counters.snapshot()
    assert (snapshot.associations, snapshot.refusals, snapshot.total_instances) == (1, {}, 0)


def test_a_series_is_spooled_as_sent_and_queued_on_release(
    gateway: StartGateway, storescu: str, tmp_path: Path
) -> None:
    gw = gateway()
    phantom, files = series(tmp_path / "ct", seed=1, slices=6)
    result = send(storescu, gw.port, files)
    assert result.returncode == 0, result.stderr
    assert_stored_as_sent(gw, files)
    first = phantom.datasets[0]
    assert {p.name for p in gw.spool_files()} == {f"{ds.SOPInstanceUID}.dcm" for ds in phantom.datasets}
    job = gw.job(first.SeriesInstanceUID)
    assert job.state is JobState.QUEUED
    assert job.instance_count == 6
    assert job.calling_ae_title == SENDER_AE
    assert job.study_instance_uid == first.StudyInstanceUID
    assert "association released" in (job.completion_reason or ""), job.completion_reason
    assert gw.data.resolve(job.spool_path or "") == gw.data.incoming_series(
        first.StudyInstanceUID, first.SeriesInstanceUID
    )
    assert gw.queue.processed == [job.id]
    snapshot = gw.listener.counters.snapshot()
    assert snapshot.instances == {SENDER_AE: 6}
    assert snapshot.bytes[SENDER_AE] == sum(len(data_set_bytes(f)) for f in files)
    assert (snapshot.failures, snapshot.repeats) == ({}, {})


def test_a_series_with_a_gap_is_completed_by_the_idle_timer_not_the_release(
    gateway: StartGateway, storescu: str, tmp_path: Path
) -> None:
    gw = gateway(idle_s=0.5)
    phantom, files = series(tmp_path / "gap", seed=2, slices=6, missing_slices=(3,))
    result = send(storescu, gw.port, files)
    assert result.returncode == 0, result.stderr
    job = gw.job(phantom.datasets[0].SeriesInstanceUID)
    # the association was open until the release, so only the timer after it can have completed it
    assert "association released" not in (job.completion_reason or "")
    assert job.completion_reason == "no new instance for 0.5 s"
    assert job.instance_count == 5
    assert gw.queue.processed == [job.id]


@pytest.mark.parametrize(
    ("settings", "calling", "options", "refusal"),
    [
        ({}, "INTRUDER", (), Refusal.CALLING_AE_NOT_RECOGNISED),
        ({"check_called_ae": True}, SENDER_AE, ("-aec", "SOMEONE_ELSE"), Refusal.CALLED_AE_NOT_RECOGNISED),
        ({"spool_reserve_bytes": 1 << 60}, SENDER_AE, (), Refusal.SPOOL_RESERVE),
    ],
    ids=["calling-ae", "called-ae", "spool-reserve"],
)
def test_association_refusals_are_sent_and_counted(
    gateway: StartGateway,
    echoscu: str,
    settings: dict[str, Any],
    calling: str,
    options: tuple[str, ...],
    refusal: Refusal,
) -> None:
    gw = gateway(**settings)
    result = echo(echoscu, gw.port, *options, calling=calling)
    assert result.returncode != 0
    assert "Rejected" in result.stderr or "rejected" in result.stderr, result.stderr
    snapshot = gw.listener.counters.snapshot()
    assert snapshot.refusals == {refusal.name: 1}
    assert snapshot.associations == 0
    # the listener itself is fine: a request it should take is taken
    if refusal is not Refusal.SPOOL_RESERVE:
        assert echo(echoscu, gw.port).returncode == 0


def test_a_wrong_called_ae_is_accepted_when_the_check_is_off(gateway: StartGateway, echoscu: str) -> None:
    gw = gateway(check_called_ae=False)
    assert echo(echoscu, gw.port, "-aec", "ANYONE").returncode == 0
    assert gw.listener.counters.snapshot().refusals == {}


def test_a_connection_closed_before_an_association_request_holds_nothing(
    gateway: StartGateway, echoscu: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway()
    ended = connection_ends(gw, monkeypatch)
    socket.create_connection((LOOPBACK, gw.port)).close()  # a TCP health check, a port scan
    # pynetdicom alone waits acse_timeout (30 s) for the request that never comes, and stop() waits
    # with it; a fraction of that shows the connection ended because the peer closed
    wait_until(ended.is_set, "the probe's connection to end", timeout=10)
    assert echo(echoscu, gw.port).returncode == 0
    assert gw.listener.counters.snapshot().associations == 1


@pytest.mark.parametrize("pdu_type", [0x01, 0x04], ids=["associate-rq", "p-data-tf"])
def test_a_pdu_header_claiming_gigabytes_reserves_nothing_before_the_bytes_come(
    gateway: StartGateway, monkeypatch: pytest.MonkeyPatch, pdu_type: int
) -> None:
    gw = gateway()
    ended = connection_ends(gw, monkeypatch)
    # the process's peak (KiB on Linux): a buffer of the claimed size raises it for good, so when one
    # case allocated, the next cannot see it — either failing shows the fault
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with socket.create_connection((LOOPBACK, gw.port)) as unknown:  # no association, no AE title
        unknown.sendall(struct.pack(">BxI", pdu_type, 2 << 30) + b"\x00" * 64)
    # the listener read the header before it saw the connection close; the end comes long before
    # the 30 s pynetdicom would wait for an association request
    wait_until(ended.is_set, "the connection to end", timeout=10)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 256 * 1024, f"the process grew by {grown_kib // 1024} MiB for a 6-byte header"


def test_an_instance_in_one_pdu_of_several_megabytes_is_stored_whole(
    gateway: StartGateway, tmp_path: Path
) -> None:
    gw = gateway()  # max_pdu 0: no limit, and pynetdicom then sends each data set in a single PDU
    phantom = volume_phantom(rows=1024, columns=1024, slices=1, seed=16)
    (path,) = phantom.write(tmp_path / "big")
    sender = AE(SENDER_AE)
    sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = sender.associate(LOOPBACK, gw.port, ae_title=OUR_AE)
    assert assoc.is_established
    try:
        assert assoc.acceptor.maximum_length == 0
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    finally:
        assoc.release()
    stored = spooled(gw, phantom.datasets[0])
    assert data_set_bytes(stored) == data_set_bytes(path)  # pydicom writes it as pynetdicom sent it


def test_associations_beyond_the_maximum_are_refused(gateway: StartGateway, echoscu: str) -> None:
    gw = gateway(max_associations=1)
    holder = AE(SENDER_AE)
    holder.add_requested_context(Verification)
    assoc = holder.associate(LOOPBACK, gw.port, ae_title=OUR_AE)
    assert assoc.is_established
    try:
        refused = echo(echoscu, gw.port)
        assert refused.returncode != 0
        assert gw.listener.counters.snapshot().refusals == {Refusal.TOO_MANY_ASSOCIATIONS.name: 1}
    finally:
        assoc.release()
    # the slot is free again once the held association has ended on the listener's side too
    wait_until(lambda: echo(echoscu, gw.port).returncode == 0, "an echo after the release")


def test_idle_connections_beyond_the_cap_are_closed_at_once(gateway: StartGateway, echoscu: str) -> None:
    """Connections that never ask for an association (a port scanner, a flood) hold a thread each
    until the ACSE timeout: beyond max_associations + max_pending_connections they are not let in."""
    gw = gateway(max_associations=1, max_pending_connections=2)
    server = gw.listener._server
    assert server is not None
    idle = [socket.create_connection((LOOPBACK, gw.port), timeout=5) for _ in range(3)]
    try:
        wait_until(lambda: server.connections() == 3, "three idle connections held")
        with socket.create_connection((LOOPBACK, gw.port), timeout=5) as extra:
            assert extra.recv(1) == b""  # closed by the listener, not left waiting
        assert gw.listener.counters.snapshot().dropped_connections == 1
        assert server.connections() == 3
    finally:
        for sock in idle:
            sock.close()
    # the idle ones end as soon as their peer closes: room for a real association again
    wait_until(lambda: server.connections() == 0, "the idle connections to end")
    assert echo(echoscu, gw.port).returncode == 0


def test_invalid_uids_are_refused_and_the_association_goes_on(
    gateway: StartGateway, storescu: str, tmp_path: Path
) -> None:
    gw = gateway()
    phantom = volume_phantom(rows=32, columns=32, slices=4, seed=3)
    datasets = list(phantom.datasets)
    # pydicom warns about each invalid UID, and writes it all the same
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        datasets[1].StudyInstanceUID = "../../etc"
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        datasets[2].SeriesInstanceUID = "1.2.03.4"  # a leading zero breaks the UID grammar
    files = write_datasets(datasets, tmp_path / "bad")
    result = send(storescu, gw.port, files, "-nh", "-v")  # -nh: go on after a failed store
    assert result.returncode == 0, result.stderr
    # 0xC002 is in dcmtk's "cannot understand" range (0xCxxx); the counters name it exactly below
    answers = re.findall(r"Received Store Response \((.*)\)", result.stderr)
    assert answers == ["Success", "Error: CannotUnderstand", "Error: CannotUnderstand", "Success"]
    good = [datasets[0], datasets[3]]
    assert sorted(p.name for p in gw.spool_files()) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in good)
    assert list(tmp_path.rglob("etc")) == []  # ../../etc from incoming/ is <data>/../etc
    assert {p.name for p in tmp_path.rglob("*")}.isdisjoint(
        {f"{ds.SOPInstanceUID}.dcm" for ds in datasets[1:3]}
    )
    assert_stored_as_sent(gw, [files[0], files[3]])
    snapshot = gw.listener.counters.snapshot()
    assert snapshot.failures == {StoreOutcome.INVALID_UID.name: 2}
    assert snapshot.instances == {SENDER_AE: 2}


def test_an_instance_sent_twice_is_one_file_counted_as_repeated(
    gateway: StartGateway, storescu: str, tmp_path: Path
) -> None:
    gw = gateway()
    phantom, files = series(tmp_path / "ct", seed=4, slices=3)
    result = send(storescu, gw.port, [files[0], *files, files[0]])
    assert result.returncode == 0, result.stderr
    assert len(gw.spool_files()) == 3
    assert_stored_as_sent(gw, files)
    snapshot = gw.listener.counters.snapshot()
    assert snapshot.instances == {SENDER_AE: 5}
    assert snapshot.repeats == {SENDER_AE: 2}
    job = gw.job(phantom.datasets[0].SeriesInstanceUID)
    assert job.instance_count == 3


@pytest.mark.parametrize(
    ("transfer_syntax", "proposal"),
    [(RLELossless, "-xr"), (JPEGLSLossless, "-xt"), (JPEG2000Lossless, "-xv")],
    ids=["rle", "jpeg-ls", "jpeg2000"],
)
def test_compressed_instances_are_stored_as_received(
    gateway: StartGateway, storescu: str, tmp_path: Path, transfer_syntax: UID, proposal: str
) -> None:
    phantom = volume_phantom(rows=32, columns=32, slices=3, seed=5)
    try:
        encoded = [encode(ds, transfer_syntax) for ds in phantom.datasets]
    except (ImportError, RuntimeError) as exc:  # the optional encoder plugin is not installed
        pytest.skip(f"cannot encode {transfer_syntax.name}: {exc}")
    files = write_datasets(encoded, tmp_path / "compressed")
    gw = gateway()
    result = send(storescu, gw.port, files, proposal)
    assert result.returncode == 0, result.stderr
    assert_stored_as_sent(gw, files)
    for source, sent in zip(phantom.datasets, encoded, strict=True):
        stored = pydicom.dcmread(spooled(gw, sent))
        assert stored.file_meta.TransferSyntaxUID == transfer_syntax
        np.testing.assert_array_equal(stored.pixel_array, source.pixel_array)
    assert "association released" in (gw.job(phantom.datasets[0].SeriesInstanceUID).completion_reason or "")


def only_proposing(folder: Path, transfer_syntax: UID) -> tuple[str, ...]:
    """storescu options to propose CT Image Storage in ``transfer_syntax`` alone (a -xf profile).

    With its -x options storescu proposes a list the acceptor picks from, and ours prefers Explicit
    VR Little Endian; a one-syntax context makes the others reachable.
    """
    config = folder / "storescu.cfg"
    config.write_text(
        "[[TransferSyntaxes]]\n[Only]\n"
        f"TransferSyntax1 = {transfer_syntax}\n"
        "[[PresentationContexts]]\n[Only]\n"
        f"PresentationContext1 = {CTImageStorage}\\Only\n"
        "[[Profiles]]\n[Only]\nPresentationContexts = Only\n"
    )
    return ("-xf", str(config), "Only")


@pytest.mark.parametrize(
    "transfer_syntax",
    [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
    ids=["implicit", "big-endian", "deflated"],
)
def test_other_uncompressed_syntaxes_are_stored_as_received(
    gateway: StartGateway, storescu: str, tmp_path: Path, transfer_syntax: UID
) -> None:
    gw = gateway()
    phantom, files = series(tmp_path / "ct", seed=8, slices=3)
    # storescu converts the files to the one syntax proposed
    result = send(storescu, gw.port, files, *only_proposing(tmp_path, transfer_syntax), "-v")
    assert result.returncode == 0, result.stderr
    for ds in phantom.datasets:
        stored = pydicom.dcmread(spooled(gw, ds))
        assert stored.file_meta.TransferSyntaxUID == transfer_syntax, result.stderr
        assert stored.SeriesInstanceUID == ds.SeriesInstanceUID
        np.testing.assert_array_equal(stored.pixel_array, ds.pixel_array)
    # positions were read from the header in this encoding too: the stack is recognised on release
    assert "3 slices" in (gw.job(phantom.datasets[0].SeriesInstanceUID).completion_reason or "")


def test_an_aborted_association_leaves_its_series_to_the_idle_timer(
    gateway: StartGateway, storescu: str, tmp_path: Path
) -> None:
    gw = gateway(idle_s=0.5)
    phantom, files = series(tmp_path / "ct", seed=9, slices=4)
    send(storescu, gw.port, files, "--abort")  # sends everything, then A-ABORT instead of a release
    assert_stored_as_sent(gw, files)
    job = gw.job(phantom.datasets[0].SeriesInstanceUID)
    assert job.completion_reason == "no new instance for 0.5 s"
    assert job.instance_count == 4


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path / "tls")


def test_tls_is_served_and_plain_tcp_is_turned_away_without_holding_others(
    gateway: StartGateway,
    storescu: str,
    echoscu: str,
    tmp_path: Path,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the silent client below must outlive this test's work, however slow the machine
    monkeypatch.setattr(scp_transport, "_TLS_HANDSHAKE_S", 120.0)
    gw = gateway(tls_cert_file=tls_files.cert_file, tls_key_file=tls_files.key_file)
    # storescu must present a certificate with +tls; the server's own serves (no client CA configured)
    tls = ("+tls", str(tls_files.key_file), str(tls_files.cert_file), "+cf", str(tls_files.ca_file))
    # a client that connects and says nothing keeps its handshake waiting in its own thread
    with socket.create_connection((LOOPBACK, gw.port)) as silent:
        phantom, files = series(tmp_path / "ct", seed=6, slices=3)
        result = send(storescu, gw.port, files, *tls)
        assert result.returncode == 0, result.stderr
        plain = echo(echoscu, gw.port)
        assert plain.returncode != 0
        assert echo(echoscu, gw.port, *tls).returncode == 0
        # still waiting in its handshake, not given up on: the others were served alongside it
        silent.settimeout(0)
        with pytest.raises(BlockingIOError):
            silent.recv(1)
    assert_stored_as_sent(gw, files)
    assert "association released" in (gw.job(phantom.datasets[0].SeriesInstanceUID).completion_reason or "")
    assert gw.listener.counters.snapshot().associations == 2


def test_four_concurrent_associations_are_all_stored_and_completed(
    gateway: StartGateway, storescu: str, tmp_path: Path
) -> None:
    gw = gateway()
    sent = [series(tmp_path / f"ct{n}", seed=10 + n, slices=4) for n in range(4)]
    senders = [
        subprocess.Popen(
            [storescu, "-aet", SENDER_AE, "-aec", OUR_AE, LOOPBACK, str(gw.port), *map(str, files)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _, files in sent
    ]
    try:
        errors = [sender.communicate(timeout=60)[1] for sender in senders]
    finally:
        for sender in senders:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
    assert [sender.returncode for sender in senders] == [0] * 4, errors
    for phantom, files in sent:
        assert_stored_as_sent(gw, files)
        job = gw.job(phantom.datasets[0].SeriesInstanceUID)
        assert job.instance_count == 4
        assert "association released" in (job.completion_reason or "")
    assert len(gw.queue.processed) == 4
    assert gw.listener.counters.snapshot().associations == 4


def test_a_series_split_across_parallel_associations_waits_for_all_of_them(
    gateway: StartGateway, storescu: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway()
    ended = connection_ends(gw, monkeypatch)
    phantom, files = series(tmp_path / "ct", seed=14, slices=8)
    series_uid = phantom.datasets[0].SeriesInstanceUID
    # the sender's second association is open before the first one releases; every other slice is
    # a regular stack too, so only knowing about the sibling keeps the series from completing half
    sibling_ae = AE(SENDER_AE)
    sibling_ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    sibling = sibling_ae.associate(LOOPBACK, gw.port, ae_title=OUR_AE)
    assert sibling.is_established
    try:
        result = send(storescu, gw.port, files[0::2])
        assert result.returncode == 0, result.stderr
        wait_until(ended.is_set, "storescu's association to end")
        assert gw.jobs(series_uid) == []
        for path in files[1::2]:
            assert sibling.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    finally:
        sibling.release()
    job = gw.job(series_uid)
    assert job.instance_count == 8
    assert job.completion_reason == "association released; 8 slices 1.5 mm apart with no gap"


def test_a_series_completed_while_the_database_is_locked_is_queued_once_it_is_free(
    gateway: StartGateway, storescu: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway(store_busy_s=0.2)
    ended = connection_ends(gw, monkeypatch)
    phantom, files = series(tmp_path / "ct", seed=15, slices=4)
    series_uid = phantom.datasets[0].SeriesInstanceUID
    database = gw.store.engine.url.database
    assert database is not None
    locker = sqlite3.connect(database, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's only write lock
        result = send(storescu, gw.port, files)
        assert result.returncode == 0, result.stderr
        wait_until(ended.is_set, "storescu's association to end")
        assert gw.jobs(series_uid) == []  # the release could not write its job
    finally:
        locker.close()  # the lock goes: the intake's next tick writes it
    job = gw.job(series_uid)
    assert job.completion_reason == "association released; 4 slices 1.5 mm apart with no gap"
    assert gw.queue.processed == [job.id]


def test_stop_ends_an_association_in_flight_and_leaves_no_temp_files(
    gateway: StartGateway, storescu: str, echoscu: str, tmp_path: Path
) -> None:
    gw = gateway(grace_s=10.0)
    port = gw.port
    phantom = volume_phantom(rows=256, columns=256, slices=4, seed=7)
    files = phantom.write(tmp_path / "ct")
    # the same four files over and over in one association: it is still sending when stop() comes
    sender = subprocess.Popen(
        [storescu, "-aet", SENDER_AE, "-aec", OUR_AE, "--repeat", "100000", LOOPBACK, str(gw.port)]
        + [str(f) for f in files],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: gw.listener.counters.snapshot().total_instances >= 8, "instances to arrive")
        gw.listener.stop()
        sender.communicate(timeout=30)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert sender.returncode != 0, "storescu finished 400000 stores: stop() did not end the association"
    assert [p.name for p in gw.spool_files() if p.suffix != ".dcm"] == []
    # storescu --repeat sends each file that often in turn: the first one, over and over
    assert [p.name for p in gw.spool_files()] == [f"{phantom.datasets[0].SOPInstanceUID}.dcm"]
    assert_stored_as_sent(gw, files[:1])
    # an association that did not release does not complete its series
    assert gw.jobs(phantom.datasets[0].SeriesInstanceUID) == []
    assert echo(echoscu, port).returncode != 0  # nothing listens any more


def test_client_certificates_from_the_configured_ca_are_required(
    gateway: StartGateway, echoscu: str, tls_files: TLSFiles
) -> None:
    gw = gateway(
        tls_cert_file=tls_files.cert_file, tls_key_file=tls_files.key_file, tls_ca_file=tls_files.ca_file
    )
    trust_server = ("+cf", str(tls_files.ca_file))
    ours = ("+tls", str(tls_files.client_key_file), str(tls_files.client_cert_file), *trust_server)
    stranger = ("+tls", str(tls_files.stranger_key_file), str(tls_files.stranger_cert_file), *trust_server)
    anonymous = ("+tla", *trust_server)  # TLS without a client certificate
    assert echo(echoscu, gw.port, *ours).returncode == 0
    assert echo(echoscu, gw.port, *stranger).returncode != 0
    assert echo(echoscu, gw.port, *anonymous).returncode != 0
    assert gw.listener.counters.snapshot().associations == 1
