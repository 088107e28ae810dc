"""Real Celery worker processes on a real Redis, the mock endpoint over HTTP, dcmtk storescp as the PACS.

Each test gets its own Redis database (flushed before and after), data directory and job store.
Workers are ``mip-gateway worker`` processes started here and stopped (or killed) by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from dicom_io.testing.phantoms import volume_phantom
from service.mock_endpoint import FaultPlan, MockEndpointServer
from tests.helpers import redis_test_url
from tests.peers import StoreSCP
from workers.celery_app import create_celery
from workers.jobs import FINAL_STATES, JobState, Priority, Route
from workers.storage import DataDir
from workers.store import create_job, get_job, open_store, results_for
from workers.tasks import CeleryEnqueuer

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: ct-liver-3d
    match: {attribute: Modality, equals: CT}
    action: {endpoint: mip3d, model: 3d, prompts: [liver], window: soft_tissue, destinations: [pacs]}
"""


class Gateway:
    """Settings as environment variables, a store, and worker processes for one test."""

    def __init__(self, tmp: Path, mock: MockEndpointServer, pacs: StoreSCP, broker: str | None) -> None:
        (tmp / "rules.yaml").write_text(RULES)
        node = pacs.dicom_node()
        self.env = {
            **os.environ,
            "MIPGW_DATA_DIR": str(tmp / "data"),
            "MIPGW_DATABASE_URL": f"sqlite+pysqlite:///{tmp / 'jobs.sqlite3'}",
            "MIPGW_RULES_FILE": str(tmp / "rules.yaml"),
            "MIPGW_ENDPOINTS__MIP3D__URL": mock.score_url,
            "MIPGW_ENDPOINTS__MIP3D__MODEL": "3d",
            "MIPGW_DESTINATIONS__PACS__KIND": "dicom",
            "MIPGW_DESTINATIONS__PACS__AE_TITLE": node.ae_title,
            "MIPGW_DESTINATIONS__PACS__HOST": node.host,
            "MIPGW_DESTINATIONS__PACS__PORT": str(node.port),
            "MIPGW_VISIBILITY_TIMEOUT_S": "10",
            "MIPGW_SWEEP_INTERVAL_S": "1",
        }
        if broker is not None:  # None: the embedded SQLite broker under the data directory
            self.env["MIPGW_BROKER_URL"] = broker
        self.settings = Settings(
            data_dir=tmp / "data", broker_url=broker, database_url=self.env["MIPGW_DATABASE_URL"]
        )
        self.store = open_store(self.env["MIPGW_DATABASE_URL"], migrate=True)
        self.enqueue = CeleryEnqueuer(create_celery(self.settings))
        self.tmp = tmp
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--name", f"test-{uuid.uuid4().hex[:8]}"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def submit_ct(self, seed: int) -> str:
        phantom = volume_phantom(slices=8, seed=seed)
        ds = phantom.datasets[0]
        data = DataDir(self.tmp / "data")
        folder = data.incoming_series(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        phantom.write(folder)
        with self.store.session() as s:
            job = create_job(
                s,
                actor="test",
                source="MODALITY",
                route=Route.DIMSE,
                study_instance_uid=ds.StudyInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                instance_count=8,
                spool_path=data.relative(folder),
                state=JobState.QUEUED,
            )
        self.enqueue.process(job.id, Priority.ROUTINE)
        return job.id

    def wait(self, job_id: str, states: frozenset[JobState] = FINAL_STATES, timeout: float = 90) -> JobState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.session(readonly=True) as s:
                state = get_job(s, job_id).state
            if state in states:
                return state
            time.sleep(0.2)
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("worker-*.log"))
        raise AssertionError(f"job {job_id} still {state} after {timeout} s; worker logs:\n{logs}")

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path / "pacs") as scp:
        yield scp


@pytest.fixture
def gateway(tmp_path: Path, pacs: StoreSCP, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    marker = request.node.get_closest_marker("mock_faults")
    faults = FaultPlan.parse(marker.args[0]) if marker else None
    broker = None if request.node.get_closest_marker("embedded_broker") else redis_test_url(10, 6)
    with MockEndpointServer(faults=faults) as mock:
        gateway = Gateway(tmp_path, mock, pacs, broker)
        try:
            yield gateway
        finally:
            gateway.stop()
            if broker is not None:
                import redis

                redis.Redis.from_url(broker).flushdb()


def test_two_workers_deliver_every_series_once(gateway: Gateway, pacs: StoreSCP) -> None:
    gateway.start_worker()
    gateway.start_worker()
    jobs = [gateway.submit_ct(seed) for seed in range(4)]
    assert {gateway.wait(job) for job in jobs} == {JobState.DONE}
    with gateway.store.session() as s:
        segs = {r.seg_sop_instance_uid for job in jobs for r in results_for(s, job)}
    received = pacs.received_files()
    assert len(received) == 4
    assert len(segs) == 4


@pytest.mark.mock_faults("latency=4000")
def test_a_worker_killed_mid_task_is_taken_over(gateway: Gateway, pacs: StoreSCP) -> None:
    first = gateway.start_worker()
    job = gateway.submit_ct(7)
    gateway.wait(job, frozenset({JobState.RUNNING}))
    time.sleep(1.5)  # inside the slow endpoint call
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, mid-task
    first.wait()
    with gateway.store.session() as s:
        assert get_job(s, job).state is JobState.RUNNING  # what a dead worker leaves behind
    gateway.start_worker()
    assert gateway.wait(job) is JobState.DONE
    assert len(pacs.received_files()) == 1


@pytest.mark.embedded_broker
def test_the_embedded_broker_keeps_work_queued_while_no_worker_runs(gateway: Gateway, pacs: StoreSCP) -> None:
    job = gateway.submit_ct(11)  # queued in the SQLite broker file: no server, no worker yet
    time.sleep(1.0)
    with gateway.store.session() as s:
        assert get_job(s, job).state is JobState.QUEUED
    assert (gateway.tmp / "data" / "broker.sqlite3").exists()
    gateway.start_worker()
    assert gateway.wait(job) is JobState.DONE
    assert len(pacs.received_files()) == 1
