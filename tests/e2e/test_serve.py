"""``mip-gateway serve`` as a user runs it: listener, API and worker from one command, on real sockets.

The gateway runs as a subprocess (its worker is its own child); both are stopped by PID, also when a
test fails. The segmentation model is stood in for by the mock endpoint (NOT a model).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import highdicom as hd
import httpx
import pytest
from pydicom import dcmread

from dicom_io.testing.phantoms import volume_phantom
from service.mock_endpoint import MockEndpointServer
from tests.helpers import dciodvfy_errors, require_tool
from tests.peers import Orthanc, StoreSCP

CLI = [sys.executable, "-m", "service.cli"]
KEY = "serve-test-key"
START_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 240.0
_FINAL = {"done", "no_findings", "failed", "rejected", "skipped", "delivery_failed"}


class Gateway:
    """A running ``mip-gateway serve``: its stdout lines as they come, its addresses, its worker's PID."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first stdout line matching ``pattern`` (fails if the process ends or time runs out)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"no line matching {pattern!r}; stdout so far:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.5))

    @property
    def http_url(self) -> str:
        return self.wait_for(r"^HTTP API on (http://\S+)$", START_TIMEOUT_S).group(1)

    @property
    def dicom_port(self) -> int:
        return int(self.wait_for(r"^DICOM listener \S+ on [\d.]+:(\d+)$", START_TIMEOUT_S).group(1))

    @property
    def worker_pid(self) -> int:
        return int(self.wait_for(r"^worker pid (\d+);", START_TIMEOUT_S).group(1))

    def stop(self) -> None:
        """SIGTERM (the gateway stops its worker); SIGKILL both process groups if that does not do."""
        worker = None
        with suppress(Exception):
            worker = next(
                int(m.group(1)) for line in self.lines if (m := re.search(r"^worker pid (\d+);", line))
            )
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if worker is not None:
            with suppress(ProcessLookupError):
                os.killpg(worker, signal.SIGKILL)  # only if the gateway failed to stop it
        self._reader.join(timeout=10)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # nothing from the developer's own gateway settings leaks into the test
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPGW_")}
    return env | {"MIPGW_DATA_DIR": str(tmp_path / "data"), "TCP_NODELAY": "1"} | extra


@contextmanager
def serve(tmp_path: Path, *args: str, env: dict[str, str]) -> Iterator[Gateway]:
    stderr = (tmp_path / "serve.stderr").open("w")
    proc = subprocess.Popen(
        [*CLI, "serve", "--dicom-port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        start_new_session=True,  # its own group, so a failed stop can kill whatever it left
    )
    gateway = Gateway(proc)
    try:
        yield gateway
    finally:
        gateway.stop()
        stderr.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers signal 0: it has exited, its parent just has not reaped it yet
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


def test_demo_sends_a_sample_study_to_itself_and_a_valid_seg_comes_out(tmp_path: Path) -> None:
    with serve(tmp_path, "--demo", "--demo-exit", env=_env(tmp_path)) as gateway:
        seg_file = Path(gateway.wait_for(r"^demo: SEG file (\S+)$", JOB_TIMEOUT_S).group(1))
        seg_url = gateway.wait_for(r"^demo: SEG (http://\S+)$", 5).group(1)
        worker = gateway.worker_pid
        assert gateway.proc.wait(timeout=120) == 0, (tmp_path / "serve.stderr").read_text()[-3000:]
    out = "\n".join(gateway.lines)
    assert "NOT A MODEL" in out
    assert "insecure" in out
    assert re.search(r"^demo: job \S+ rule ct-abdomen-organs-3d: done$", out, re.M), out
    assert re.search(r"^demo: sent to destination pacs: delivered$", out, re.M), out
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/jobs/[0-9a-f-]+/seg", seg_url)
    assert seg_file.is_relative_to(tmp_path / "data" / "seg")
    assert dciodvfy_errors(seg_file) == []
    seg = hd.seg.segread(seg_file)
    assert seg.SegmentSequence[0].SegmentLabel == "liver"
    # "back to the calling node": the demo node (AE DEMO) that sent the study received this SEG
    (returned,) = sorted((tmp_path / "data" / "demo-node").glob("*.dcm"))
    back = dcmread(returned)
    assert back.SOPInstanceUID == seg.SOPInstanceUID
    assert back.PixelData == seg.PixelData
    assert not _alive(worker)


def test_serve_receives_by_storescu_and_serves_the_seg_over_http(tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    study = tmp_path / "study"
    volume_phantom(slices=24, seed=5).write(study)  # the packaged CT abdomen 3D rule wants >= 20
    with (
        MockEndpointServer(key="mock-key") as mock,
        StoreSCP(tmp_path / "pacs", ae_title="PACS") as pacs,
    ):
        env = _env(
            tmp_path,
            MIPGW_API__KEYS=f'["{KEY}"]',
            MIPGW_DESTINATIONS__PACS__KIND="dicom",
            MIPGW_DESTINATIONS__PACS__AE_TITLE="PACS",
            MIPGW_DESTINATIONS__PACS__HOST="127.0.0.1",
            MIPGW_DESTINATIONS__PACS__PORT=str(pacs.port),
        )
        args = ["--bind", "127.0.0.1", "--endpoint", mock.score_url, "--endpoint-key", "mock-key"]
        with serve(tmp_path, *args, env=env) as gateway:
            http_url, port, worker = gateway.http_url, gateway.dicom_port, gateway.worker_pid
            sent = subprocess.run(
                [storescu, "-aet", "MODALITY", "-aec", "MIPGW", "127.0.0.1", str(port), "+sd", str(study)],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                check=False,
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            auth = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=http_url, timeout=30) as client:
                assert client.get("/jobs").status_code == 401  # no key, no jobs
                job = _wait_for_final_job(client, auth)
                assert job["state"] == "done", job
                assert job["calling_ae"] == "MODALITY"
                response = client.get(f"/jobs/{job['id']}/seg", headers=auth)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/dicom"
            seg_path = tmp_path / "seg.dcm"
            seg_path.write_bytes(response.content)
            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(timeout=120) == 0, (tmp_path / "serve.stderr").read_text()[-3000:]
            assert not _alive(worker)
        (delivered,) = pacs.received_files()
    assert dciodvfy_errors(seg_path) == []
    seg = dcmread(seg_path)
    assert seg.Modality == "SEG"
    assert dcmread(delivered).SOPInstanceUID == seg.SOPInstanceUID
    assert mock.app is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_gateway_does_not_leave_its_worker_running(tmp_path: Path) -> None:
    """SIGKILL gives serve no chance to stop its worker (in a session of its own): the kernel does."""
    with serve(tmp_path, "--demo", env=_env(tmp_path)) as gateway:  # the demo keeps the worker busy
        worker = gateway.worker_pid
        gateway.wait_for(r"^demo: ", START_TIMEOUT_S)
        assert _alive(worker)
        os.kill(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait(timeout=10)
        deadline = time.monotonic() + 60  # Celery's warm shutdown, on a busy machine
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)


def _wait_for_final_job(client: httpx.Client, auth: dict[str, str]) -> dict[str, object]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    jobs: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        response = client.get("/jobs", headers=auth)
        assert response.status_code == 200, response.text
        jobs = response.json()["jobs"]
        if jobs and all(job["state"] in _FINAL for job in jobs):
            (job,) = jobs
            return job
        time.sleep(0.5)
    pytest.fail(f"no final job within {JOB_TIMEOUT_S:g} s: {jobs}")


def test_the_compose_demo_pacs_routing_sends_series_to_the_gateway_and_gets_the_seg(tmp_path: Path) -> None:
    """deploy/orthanc/autoroute.lua in a real Orthanc: a series stored there reaches the gateway in one
    association, and the SEG the gateway sends to its "pacs" destination lands back in Orthanc."""
    lua = Path(__file__).resolve().parents[2] / "deploy" / "orthanc" / "autoroute.lua"
    study = tmp_path / "study"
    volume_phantom(slices=24, seed=6).write(study)
    config = {"LuaScripts": [str(lua)], "StableAge": 2}
    with (
        MockEndpointServer() as mock,
        Orthanc(tmp_path / "orthanc", {"mipgw": ("MIPGW", 1)}, config=config) as pacs,
    ):
        env = _env(
            tmp_path,
            MIPGW_DESTINATIONS__PACS__KIND="dicom",
            MIPGW_DESTINATIONS__PACS__AE_TITLE=pacs.aet,
            MIPGW_DESTINATIONS__PACS__HOST="127.0.0.1",
            MIPGW_DESTINATIONS__PACS__PORT=str(pacs.dicom_port),
        )
        args = ["--bind", "127.0.0.1", "--endpoint", mock.score_url, "--insecure-no-auth"]
        with serve(tmp_path, *args, env=env) as gateway:
            pacs.set_modality("mipgw", "MIPGW", gateway.dicom_port)
            for path in sorted(study.glob("*.dcm")):
                pacs.upload(path)
            with httpx.Client(base_url=gateway.http_url, timeout=30) as client:
                job = _wait_for_final_job(client, {})
            assert job["state"] == "done", job
            assert job["calling_ae"] == pacs.aet
            assert job["instance_count"] == 24  # the whole series, not a part judged complete early
            detail = httpx.get(f"{gateway.http_url}/jobs/{job['id']}", timeout=30).json()
            (result,) = detail["results"]
            assert [d["state"] for d in detail["deliveries"]] == ["delivered"]
            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(timeout=120) == 0
        seg_id = pacs.find_instance(result["seg_sop_instance_uid"])
        assert seg_id is not None, pacs.log_text()[-3000:]
        # the SEG's series is not routed back: once Orthanc calls it stable, the script has run on it
        seg_series = pacs.client.get(f"/instances/{seg_id}").json()["ParentSeries"]
        deadline = time.monotonic() + 60
        while not pacs.client.get(f"/series/{seg_series}").json()["IsStable"]:
            assert time.monotonic() < deadline, "Orthanc never called the SEG series stable"
            time.sleep(0.2)
        source_series = pacs.client.get("/series").json()
        log = pacs.log_text()
        assert sum(f"sending series {s}" in log for s in source_series) == 1, log[-3000:]
        assert f"sending series {seg_series}" not in log
