"""A series completed while Redis is down is queued as soon as Redis is back — not hours later.

The intake's real Celery enqueuer points at a port where no Redis runs yet; the job goes to the store
(SQLite) and its task is held; then a real ``redis-server`` starts on that port (stopped by PID
afterwards) and the task message must arrive in the routine queue, naming the job.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from dicom_io.testing.phantoms import volume_phantom
from service.completion import CompletedSeries, CompletionTracker
from service.intake import Intake
from tests.helpers import require_tool
from tests.peers import free_ports
from workers.celery_app import create_celery, inference_queue
from workers.jobs import JobState, Priority, Route
from workers.storage import DataDir, store_instance
from workers.store import get_job, open_store
from workers.tasks import CeleryEnqueuer

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # a bound for what happens in the background, never a timing assertion


@pytest.fixture
def port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def late_redis(port: int, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A redis-server for ``port``, started by the test when it calls ``start``; stopped by PID."""
    server = require_tool("redis-server")
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_series_completed_while_redis_is_down_is_queued_when_it_comes_back(
    tmp_path: Path, port: int, late_redis: Callable[[], subprocess.Popen[bytes]]
) -> None:
    redis = pytest.importorskip("redis")
    settings = Settings(data_dir=tmp_path / "data", broker_url=f"redis://127.0.0.1:{port}/0")
    data = DataDir(settings.data_dir)
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'jobs.sqlite3'}", migrate=True)
    phantom = volume_phantom(slices=3, seed=41)
    for ds in phantom.datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        store_instance(data, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, buffer.getvalue())
    first = phantom.datasets[0]
    intake = Intake(
        data, store, CeleryEnqueuer(create_celery(settings)), CompletionTracker(), actor="scp", tick_s=0.1
    )
    intake.start()
    try:
        job = intake.submit(
            CompletedSeries(
                first.StudyInstanceUID, first.SeriesInstanceUID, Route.DIMSE, "CT1", 3, "association released"
            )
        )  # no exception: the series is in the spool and the job in the store
        with store.session(readonly=True) as s:
            assert get_job(s, job.id).state is JobState.QUEUED
        assert intake.enqueue.held() == 1

        late_redis()
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        queue = inference_queue(Priority.ROUTINE)
        deadline = time.monotonic() + WAIT_S
        messages: list[bytes] = []
        while time.monotonic() < deadline and not messages:
            with contextlib.suppress(redis.exceptions.ConnectionError):  # still starting
                messages = client.lrange(queue, 0, -1)
            time.sleep(0.1)
        assert messages, f"nothing reached {queue} in {WAIT_S} s"
        (raw,) = messages
        message = json.loads(raw)
        assert message["headers"]["task"] == "mipgw.process_job"
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        assert args == [job.id]
        assert intake.enqueue.held() == 0
    finally:
        intake.stop()
        store.close()
