"""Small helpers the tests share (import as ``tests.helpers``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dicom_io.reading import scan
from dicom_io.series import Series, assemble
from dicom_io.testing.scene import ImagePhantom, Phantom
from workers.jobs import Priority

SHARED_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


def system_tool(name: str) -> str | None:
    """A tool from the system's PATH, never the virtualenv's: pynetdicom installs Python apps named
    storescp, storescu, echoscu... into it, which would shadow dcmtk's."""
    venv_bin = Path(sys.prefix) / "bin"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin)
    return shutil.which(name, path=path)


def require_tool(name: str) -> str:
    """Path of a Debian tool the test needs; skip with a visible reason when it is not installed."""
    path = system_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed (the test command installs it with apt-get when run as root)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dicom3tools' IOD validator reports for a file (skips when absent)."""
    tool = require_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("Error")]


def written_series(phantom: Phantom | ImagePhantom, folder: Path) -> Series:
    """Write a generated series to ``folder`` and read it back as the one series it is."""
    phantom.write(folder)
    (series,) = assemble(scan([folder]).instances)
    return series


class IntakeQueue:
    """The queue boundary as the intake sees it (workers.pipeline.Enqueuer): remembers the jobs it was
    asked to process; the intake never delivers or pulls, so those fail the test."""

    def __init__(self) -> None:
        self.processed: list[str] = []
        self._lock = threading.Lock()

    def process(self, job_id: str, priority: Priority) -> None:
        with self._lock:
            self.processed.append(job_id)

    def deliver(self, job_id: str, destination: str) -> None:
        raise AssertionError("the intake never delivers")

    def pull(self, job_id: str) -> None:
        raise AssertionError("the intake never pulls")


class InlineQueue:
    """The queue boundary recorded, not run: ("process", job), ("deliver", job, destination), ("pull",
    job) in the order asked; tests drain it themselves, as a worker would."""

    def __init__(self) -> None:
        self.items: list[tuple[str, ...]] = []

    def process(self, job_id: str, priority: Priority) -> None:
        self.items.append(("process", job_id))

    def deliver(self, job_id: str, destination: str) -> None:
        self.items.append(("deliver", job_id, destination))

    def pull(self, job_id: str) -> None:
        self.items.append(("pull", job_id))


LOCAL_REDIS = "redis://127.0.0.1:6379"


def redis_test_url(first_db: int, span: int) -> str:
    """A Redis database of this xdist worker's own (``first_db`` + worker number modulo ``span``), so
    parallel test processes never share queues; flushed first. Skips when Redis is not there."""
    redis = pytest.importorskip("redis")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    url = f"{LOCAL_REDIS}/{first_db + int(worker.removeprefix('gw') or 0) % span}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {LOCAL_REDIS} ({exc}); the test command starts redis-server")
    return url
