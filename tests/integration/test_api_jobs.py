"""The jobs routes against a store filled by the real pipeline, in process: a series STOWed over HTTP,
run through rules, the mock endpoint (over HTTP) and SEG, delivered to dcmtk's storescp."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from dicom_io.testing.phantoms import volume_phantom
from service.api.preview import PALETTE
from service.mock_endpoint import MockEndpointServer
from tests.peers import StoreSCP
from tests.unit.service.api.apps import AUTH, KEY, ApiServer, ApiUnderTest, make_api
from tests.unit.workers.store.job_factory import move, new_job
from workers import pipeline
from workers.context import build_deps
from workers.jobs import JobState, Route, Stage

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: ct-liver-3d
    match: {all: [{attribute: Modality, equals: CT}, {kind: volume}]}
    action: {endpoint: mip3d, model: 3d, prompts: [liver, marker], window: soft_tissue, destinations: [pacs]}
"""


@pytest.fixture(scope="module")
def mock() -> Iterator[MockEndpointServer]:
    with MockEndpointServer() as server:
        yield server


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path / "pacs") as scp:
        yield scp


@pytest.fixture
def api(tmp_path: Path, mock: MockEndpointServer, pacs: StoreSCP) -> ApiUnderTest:
    (tmp_path / "rules.yaml").write_text(RULES)
    settings = Settings(
        data_dir=tmp_path / "data",
        rules_file=tmp_path / "rules.yaml",
        endpoints={"mip3d": {"url": mock.score_url, "model": "3d", "max_attempts": 2}},
        destinations={"pacs": pacs.dicom_node(max_attempts=2).model_dump()},
        api={"keys": [KEY]},
        listener={"spool_reserve_bytes": 0},
    )
    return make_api(tmp_path, settings=settings)


@pytest.fixture
def server(api: ApiUnderTest) -> Iterator[ApiServer]:
    with ApiServer(api.app) as running:
        yield running


def drain(api: ApiUnderTest) -> None:
    """What the workers would do with the queue, in this process."""
    deps = build_deps(api.settings, api.store, api.queue, actor="test-worker")
    while api.queue.items:
        kind, job_id, *rest = api.queue.items.pop(0)
        if kind == "process":
            pipeline.process_job(job_id, deps)
        else:
            pipeline.deliver(job_id, rest[0], deps)


def get(server: ApiServer, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params, headers=AUTH, timeout=30)


def post(server: ApiServer, path: str, **params: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", params=params, headers=AUTH, timeout=30)


@pytest.fixture
def done_job(api: ApiUnderTest, server: ApiServer) -> tuple[str, Any]:
    phantom = volume_phantom(slices=10, seed=3)
    client = DICOMwebClient(f"{server.url}/dicomweb", headers=AUTH)
    client.store_instances(list(phantom.datasets))
    ((_, job_id),) = api.queue.items
    drain(api)
    return job_id, phantom


def test_a_job_in_full_its_seg_and_its_preview(
    api: ApiUnderTest, server: ApiServer, pacs: StoreSCP, done_job: tuple[str, Any]
) -> None:
    job_id, phantom = done_job
    listed = get(server, "/jobs", state=["done", "failed"], study=phantom.datasets[0].StudyInstanceUID).json()
    assert [job["id"] for job in listed["jobs"]] == [job_id]
    assert get(server, "/jobs", state="failed").json()["jobs"] == []
    assert get(server, "/jobs", since="2999-01-01T00:00:00").json()["jobs"] == []

    job = get(server, f"/jobs/{job_id}").json()
    assert (job["state"], job["rule"], job["route"], job["calling_ae"]) == (
        "done",
        "ct-liver-3d",
        "stow",
        None,
    )
    assert job["completion_reason"] == "the STOW-RS request carried the series"
    assert [s["state"] for s in job["states"]] == ["queued", "running", "delivering", "done"]
    stages = {s["stage"]: s for s in job["stages"]}
    assert {"load", "match", "infer", "persist"} <= set(stages)
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in stages.values())
    (result,) = job["results"]
    segments = {s["prompt"]: s for s in result["segments"]}
    assert segments["liver"]["volume_ml"] > 0
    assert "category" in segments["liver"]
    assert [(d["destination"], d["state"]) for d in job["deliveries"]] == [("pacs", "delivered")]

    seg = get(server, f"/jobs/{job_id}/seg")
    assert seg.headers["content-type"] == "application/dicom"
    dataset = pydicom.dcmread(io.BytesIO(seg.content))
    assert dataset.SOPInstanceUID == result["seg_sop_instance_uid"]
    delivered = pydicom.dcmread(pacs.received_files()[0])  # storescp rewrites the meta header only
    assert (delivered.SOPInstanceUID, delivered.PixelData) == (dataset.SOPInstanceUID, dataset.PixelData)
    assert hd.seg.Segmentation.from_dataset(dataset).number_of_segments >= 1
    assert get(server, f"/jobs/{job_id}/seg", index=1).status_code == 404

    preview = get(server, f"/jobs/{job_id}/preview.png")
    assert preview.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(preview.content)))
    source = phantom.datasets[0]
    assert image.shape == (source.Rows, source.Columns, 3)
    outline = np.all(image == PALETTE[0], axis=2)  # segment 1 in the first colour
    assert 0 < outline.sum() < image.shape[0] * image.shape[1] / 4
    assert not np.array_equal(image[..., 0], image[..., 1])  # coloured, not grey
    assert preview.headers["x-preview-slice"] == "5/10"
    assert get(server, f"/jobs/{job_id}/preview.png", slice=99).status_code == 400


def test_retry_one_and_replay_in_bulk(
    api: ApiUnderTest, server: ApiServer, done_job: tuple[str, Any]
) -> None:
    job_id, _ = done_job
    retried = post(server, f"/jobs/{job_id}/retry", from_stage="infer")
    assert retried.status_code == 202
    assert retried.json()["state"] == "queued"
    assert api.queue.items == [("process", job_id)]
    again = post(server, f"/jobs/{job_id}/retry")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert "final" in again.json()["detail"]
    drain(api)
    assert get(server, f"/jobs/{job_id}").json()["state"] == "done"
    assert post(server, "/jobs/no-such-job/retry").status_code == 404

    failed = []
    for _ in range(3):
        job = new_job(api.store, route=Route.STOW, instance_count=1, state=JobState.QUEUED)
        move(api.store, job.id, JobState.RUNNING, stage=Stage.LOAD)
        move(api.store, job.id, JobState.FAILED, stage=Stage.INFER, error="endpoint said no")
        failed.append(job.id)
    bulk = post(server, "/jobs/retry", state="failed")
    assert bulk.status_code == 202
    assert sorted(bulk.json()["retried"]) == sorted(failed)
    assert sorted(item[1] for item in api.queue.items) == sorted(failed)
    assert post(server, "/jobs/retry", state="failed").json()["retried"] == []


def test_metrics_parse_and_count_what_happened(
    api: ApiUnderTest, server: ApiServer, done_job: tuple[str, Any]
) -> None:
    text = get(server, "/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("mipgw_instances_received_total", (("calling_ae", ""), ("route", "stow")))] == 10
    assert samples[("mipgw_received_bytes_total", (("calling_ae", ""), ("route", "stow")))] > 10 * 5000
    assert samples[("mipgw_jobs", (("state", "done"),))] == 1
    assert samples[("mipgw_stage_duration_seconds_count", (("stage", "infer"),))] == 1
    assert samples[("mipgw_endpoint_latency_seconds_count", (("endpoint", "mip3d"),))] == 1
    assert samples[("mipgw_deliveries", (("destination", "pacs"), ("state", "delivered")))] == 1
    for queue in ("mipgw.stat", "mipgw.routine", "mipgw.delivery"):
        assert samples[("mipgw_queue_depth", (("queue", queue),))] == 0
    assert samples[("mipgw_scrape_ok", (("source", "store"),))] == 1
    assert samples[("mipgw_scrape_ok", (("source", "broker"),))] == 1
    stow = (("method", "POST"), ("route", "/dicomweb/studies"), ("status", "200"))
    assert samples[("mipgw_http_requests_total", stow)] == 1
