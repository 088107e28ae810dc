"""STOW-RS over real HTTP: uvicorn on loopback, dicomweb-client as the sender, the spool and the intake.

The memory test runs ``mip-gateway api`` as a process of its own and reads its peak RSS from /proc.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from requests import HTTPError

from dicom_io.testing.phantoms import volume_phantom
from service.api.stow import STOW_COMPLETION_REASON
from tests.unit.service.api.apps import (
    AUTH,
    BOUNDARY,
    KEY,
    MULTIPART,
    ApiServer,
    ApiUnderTest,
    encode,
    make_api,
    multipart,
)
from workers.jobs import JobState, Route
from workers.store import get_job, list_jobs

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path) -> ApiUnderTest:
    return make_api(tmp_path)


@pytest.fixture
def server(api: ApiUnderTest) -> Iterator[ApiServer]:
    with ApiServer(api.app) as running:
        yield running


def dicomweb(server: ApiServer, key: str = KEY) -> DICOMwebClient:
    return DICOMwebClient(f"{server.url}/dicomweb", headers={"Authorization": f"Bearer {key}"})


def as_sent(ds: pydicom.Dataset) -> bytes:
    """The bytes dicomweb-client puts in a part."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


def post(server: ApiServer, body: bytes, path: str = "/dicomweb/studies", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=body,
        headers={**AUTH, "Content-Type": MULTIPART, **headers},
        timeout=30,
    )


def failures(response: httpx.Response) -> list[int]:
    return [item["00081197"]["Value"][0] for item in response.json().get("00081198", {}).get("Value", [])]


def test_a_ct_series_is_stored_byte_for_byte_and_queued_once(api: ApiUnderTest, server: ApiServer) -> None:
    phantom = volume_phantom(slices=12, seed=11)
    result = dicomweb(server).store_instances(list(phantom.datasets))
    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == [
        ds.SOPInstanceUID for ds in phantom.datasets
    ]
    assert "FailedSOPSequence" not in result
    first = phantom.datasets[0]
    folder = api.data.incoming_series(first.StudyInstanceUID, first.SeriesInstanceUID)
    for ds in phantom.datasets:
        assert (folder / f"{ds.SOPInstanceUID}.dcm").read_bytes() == as_sent(ds)
    assert not any((api.data.root / "incoming" / ".stow").iterdir())  # no temp file left
    with api.store.session() as s:
        (job,) = list_jobs(s)
        job = get_job(s, job.id)
    assert api.queue.items == [("process", job.id)]
    assert (job.state, job.route, job.instance_count) == (JobState.QUEUED, Route.STOW, 12)
    assert job.completion_reason == STOW_COMPLETION_REASON
    assert api.data.resolve(job.spool_path or "") == folder
    # the same request again stores the same files and queues nothing new
    dicomweb(server).store_instances(list(phantom.datasets))
    assert len(api.queue.items) == 1
    (tally,) = api.counters.snapshot()
    assert (tally.route, tally.instances) == (Route.STOW, 24)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the bad part, on purpose
def test_one_bad_part_gives_202_and_only_bad_parts_give_409(api: ApiUnderTest, server: ApiServer) -> None:
    phantom = volume_phantom(slices=4, seed=12)
    broken = phantom.datasets[1].copy()
    broken.SeriesInstanceUID = "1.2.3.abc"  # not a UID
    datasets = [phantom.datasets[0], broken, *phantom.datasets[2:]]
    result = dicomweb(server).store_instances(datasets)  # 202: dicomweb-client parses the answer
    assert len(result.ReferencedSOPSequence) == 3
    (failed,) = result.FailedSOPSequence
    assert failed.FailureReason == 0xA900
    assert failed.ReferencedSOPInstanceUID == broken.SOPInstanceUID

    response = post(server, multipart([b"not dicom at all", encode(broken)]))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/dicom+json"
    assert failures(response) == [0xC000, 0xA900]
    with pytest.raises(HTTPError, match="409"):
        dicomweb(server).store_instances([broken])


def test_parts_of_other_types_a_cut_body_and_parts_without_content_type(server: ApiServer) -> None:
    phantom = volume_phantom(slices=3, seed=13)
    good = [encode(ds) for ds in phantom.datasets]
    mixed = multipart([good[0], ("application/dicom+json", b"{}"), (None, good[1])])
    response = post(server, mixed)
    assert response.status_code == 202
    assert failures(response) == [0xC000]
    assert len(response.json()["00081199"]["Value"]) == 2  # the part without a type counts as DICOM
    cut = multipart([good[2]])[: -len(f"\r\n--{BOUNDARY}--\r\n") - 10]
    response = post(server, cut)
    assert (response.status_code, failures(response)) == (409, [0xC000])


def test_wrong_content_types_are_415(server: ApiServer) -> None:
    body = multipart([encode(volume_phantom(slices=1).datasets[0])])
    for content_type in (
        "application/dicom",
        "multipart/mixed; boundary=x",
        'multipart/related; type="image/jpeg"',
    ):
        response = post(server, body, **{"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.headers["content-type"] == "application/problem+json"


def test_the_study_route_refuses_instances_of_other_studies(api: ApiUnderTest, server: ApiServer) -> None:
    ours, other = volume_phantom(slices=3, seed=14), volume_phantom(slices=2, seed=15)
    study = ours.datasets[0].StudyInstanceUID
    result = dicomweb(server).store_instances(list(ours.datasets), study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 3
    response = post(
        server,
        multipart([encode(ds) for ds in (*other.datasets, ours.datasets[0])]),
        f"/dicomweb/studies/{study}",
    )
    assert response.status_code == 202
    assert failures(response) == [0xA901, 0xA901]
    assert not (api.data.root / "incoming" / other.datasets[0].StudyInstanceUID).exists()


def test_keys_over_http(server: ApiServer) -> None:
    body = multipart([encode(volume_phantom(slices=1).datasets[0])])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = httpx.post(
            f"{server.url}/dicomweb/studies", content=body, headers={"Content-Type": MULTIPART, **headers}
        )
        assert response.status_code == 401
        assert response.json()["status"] == 401
    with pytest.raises(HTTPError, match="401"):
        dicomweb(server, key="wrong").store_instances(list(volume_phantom(slices=1).datasets))


def test_requests_over_the_size_limit_are_413(tmp_path: Path) -> None:
    api = make_api(tmp_path, api={"keys": [KEY], "max_request_bytes": 64 * 1024})
    datasets = volume_phantom(slices=30, rows=64, columns=64, seed=16).datasets
    body = multipart([encode(ds) for ds in datasets])
    assert len(body) > 64 * 1024
    with ApiServer(api.app) as server:
        declared = post(server, body)
        assert declared.status_code == 413
        assert not (api.data.root / "incoming" / datasets[0].StudyInstanceUID).exists()  # nothing read

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        streamed = httpx.post(
            f"{server.url}/dicomweb/studies", content=chunked(), headers={**AUTH, "Content-Type": MULTIPART}
        )
        assert streamed.status_code == 413
        assert streamed.json()["type"].endswith("request-too-large")


# ---------------------------------------------------------------------------------------------------
# memory: a 300 MB request through `mip-gateway api` in a process of its own

CLI = str(Path(sys.executable).with_name("mip-gateway"))
ROWS, COLUMNS = 512, 1024  # 1 MiB of 16-bit pixels per instance


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _big_parts(count: int) -> Iterator[bytes]:
    """``count`` 1 MiB CT instances of one series, encoded one at a time as the body is sent."""
    template = volume_phantom(slices=1, seed=17).datasets[0]
    template.Rows, template.Columns = ROWS, COLUMNS
    template.PixelData = bytes(range(256)) * (2 * ROWS * COLUMNS // 256)
    series = generate_uid()
    for n in range(count):
        ds = template.copy()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(n)]
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield encode(ds)
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {
        **os.environ,
        "MIPGW_DATA_DIR": str(tmp_path / "data"),
        "MIPGW_DATABASE_URL": f"sqlite+pysqlite:///{tmp_path / 'jobs.sqlite3'}",
        "MIPGW_API__KEYS": f'["{KEY}"]',
        "MIPGW_LISTENER__SPOOL_RESERVE_BYTES": "0",
    }
    env.pop("MIPGW_BROKER_URL", None)
    process = subprocess.Popen(
        [CLI, "api", "--bind", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on" in line, line
        yield process, line.rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.slow
def test_a_300_mb_request_does_not_grow_the_api_process(
    api_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = api_process
    headers = {**AUTH, "Content-Type": MULTIPART}
    warm = httpx.post(f"{url}/dicomweb/studies", content=_big_parts(20), headers=headers, timeout=60)
    assert warm.status_code == 200
    before = _vm(process.pid, "VmHWM")
    started = time.perf_counter()
    response = httpx.post(f"{url}/dicomweb/studies", content=_big_parts(300), headers=headers, timeout=120)
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["00081199"]["Value"]) == 300
    peak = _vm(process.pid, "VmHWM")
    growth = peak - before
    print(f"300 MiB in {seconds:.1f} s; API peak RSS {before / 2**20:.0f} → {peak / 2**20:.0f} MiB")
    assert growth < 48 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB for a 300 MiB request"
    # graceful stop on SIGTERM
    process.terminate()
    assert process.wait(timeout=20) == 0
