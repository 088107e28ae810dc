"""``POST /jobs`` end to end against a real Orthanc: jobs made over HTTP (uvicorn on loopback), then the
real pull task's function fills the spool by WADO-RS, C-GET or C-MOVE (Orthanc storing into the
gateway's real listener, in process) and queues each job for processing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from config.rules_file import default_rules_path
from dicom_io.testing.modules import StudyInfo
from dicom_io.testing.phantoms import volume_phantom
from service.scp import DicomListener
from tests.peers import Orthanc, free_ports
from tests.unit.service.api.apps import AUTH, ApiServer, ApiUnderTest, make_api
from workers.context import build_deps
from workers.dicom_identity import IMPLEMENTATION_CLASS_UID
from workers.errors import DeliveryError
from workers.jobs import JobState, Route
from workers.pull import pull
from workers.pull_jobs import pull_job
from workers.rules_loader import RulesSource
from workers.store import get_job, list_jobs

pytestmark = pytest.mark.integration

OUR_AE = "MIPGW"  # the settings' default ae_title: the calling AE of C-FIND, C-GET and C-MOVE
LOOPBACK = "127.0.0.1"
WAIT_S = 30.0  # a bound for what happens in the background, never a timing assertion


class Study:
    def __init__(self, series: dict[str, list[pydicom.Dataset]]) -> None:
        self.series = series
        self.uid = str(next(iter(series.values()))[0].StudyInstanceUID)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, Study]]:
    # Orthanc answers C-FIND/C-GET only for a known modality (the port is never dialled)
    with Orthanc(tmp_path_factory.mktemp("orthanc"), {"mipgw": (OUR_AE, free_ports(1)[0])}) as orthanc:
        info = StudyInfo.seeded(
            11, patient_name="PULL^TEST", patient_id="PULL1", study_description="CT PULL", key="pull"
        )
        series = [
            volume_phantom(slices=5, seed=11, study=info, series_number=1),
            volume_phantom(slices=3, seed=12, study=info, series_number=2),
        ]
        elsewhere = volume_phantom(slices=2, seed=13)  # another study: must never come along
        upload = tmp_path_factory.mktemp("upload")
        for n, ds in enumerate([*series[0].datasets, *series[1].datasets, *elsewhere.datasets]):
            path = upload / f"{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            orthanc.client.post("/instances", content=path.read_bytes()).raise_for_status()
        yield orthanc, Study({str(p.datasets[0].SeriesInstanceUID): list(p.datasets) for p in series})


@pytest.fixture
def api(tmp_path: Path, pacs: tuple[Orthanc, Study]) -> ApiUnderTest:
    orthanc, _ = pacs
    return make_api(
        tmp_path,
        sources={
            "web": orthanc.dicomweb_node().model_dump(mode="json"),
            "dimse": orthanc.dicom_node().model_dump(mode="json"),
            "move": orthanc.dicom_node(retrieve="c-move").model_dump(mode="json"),
        },
        # Orthanc is not on the allow-list: a C-MOVE source is let in to store what it was asked for
        listener={
            "bind": LOOPBACK,
            "port": 0,
            "allowed_calling_aes": ["STORESCU"],
            "spool_reserve_bytes": 0,
            "completion_idle_s": 0.5,
        },
    )


@pytest.fixture
def listener(api: ApiUnderTest, pacs: tuple[Orthanc, Study]) -> Iterator[DicomListener]:
    """The gateway's listener on the API's data directory and store, known to Orthanc as the "mipgw"
    modality (the C-MOVE destination); its intake runs, so a series it took for a new one would
    become a job at release or after the short idle timer."""
    orthanc, _ = pacs
    running = DicomListener(api.settings, api.intake, api.data, grace_s=5)
    running.start()
    api.intake.start()
    orthanc.set_modality("mipgw", OUR_AE, running.port)
    try:
        yield running
    finally:
        running.stop()
        api.intake.stop()


@pytest.fixture
def server(api: ApiUnderTest) -> Iterator[ApiServer]:
    with ApiServer(api.app) as running:
        yield running


def post_jobs(server: ApiServer, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/jobs", json=body, headers={**AUTH, **headers}, timeout=60)


def run_pulls(api: ApiUnderTest) -> list[str]:
    """What the pull workers would do with the queue: the real ``pull_job``, real WADO-RS / C-GET."""
    deps = build_deps(
        api.settings, api.store, api.queue, actor="test-worker", rules=RulesSource(default_rules_path())
    )
    pulled = [item[1] for item in api.queue.items if item[0] == "pull"]
    api.queue.items[:] = [item for item in api.queue.items if item[0] != "pull"]
    for job_id in pulled:
        assert pull_job(job_id, deps) is JobState.QUEUED
    return pulled


def assert_spooled(api: ApiUnderTest, job_id: str, sent: list[pydicom.Dataset], how: str = "") -> None:
    with api.store.session(readonly=True) as s:
        job = get_job(s, job_id)
    assert job.spool_path is not None
    folder = api.data.resolve(job.spool_path)
    stored = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in folder.glob("*.dcm"))}
    assert set(stored) == {ds.SOPInstanceUID for ds in sent}
    for ds in sent:
        assert (stored[ds.SOPInstanceUID].pixel_array == ds.pixel_array).all()
    if how in ("C-GET", "C-MOVE"):  # stored as received, under the gateway's own Part 10 header
        for ds in stored.values():
            assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
            assert ds.file_meta.SourceApplicationEntityTitle == "ORTHANC"


@pytest.mark.parametrize(("source", "how"), [("web", "WADO-RS"), ("dimse", "C-GET")])
def test_a_study_is_pulled_as_one_queued_job_per_series(
    api: ApiUnderTest, server: ApiServer, pacs: tuple[Orthanc, Study], source: str, how: str
) -> None:
    _, study = pacs
    response = post_jobs(server, {"study_instance_uid": study.uid, "source": source})
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert sorted(j["series_instance_uid"] for j in jobs) == sorted(study.series)
    assert {(j["state"], j["route"], j["source"]) for j in jobs} == {("received", "api", source)}
    assert response.headers["location"] == f"/jobs/{jobs[0]['id']}"

    assert sorted(run_pulls(api)) == sorted(j["id"] for j in jobs)
    assert sorted(api.queue.items) == sorted(("process", j["id"]) for j in jobs)
    for job in jobs:
        sent = study.series[job["series_instance_uid"]]
        assert_spooled(api, job["id"], sent, how)
        detail = httpx.get(f"{server.url}/jobs/{job['id']}", headers=AUTH, timeout=30).json()
        assert detail["state"] == "queued"
        assert detail["completion_reason"].startswith(f"pulled by {how} from ")
        assert detail["completion_reason"].endswith(f": {len(sent)} instance(s)")
        assert [s["state"] for s in detail["states"]] == ["received", "queued"]


def test_a_study_is_pulled_by_c_move_into_our_own_listener_as_no_job_of_its_own(
    api: ApiUnderTest, server: ApiServer, pacs: tuple[Orthanc, Study], listener: DicomListener
) -> None:
    _, study = pacs
    response = post_jobs(server, {"study_instance_uid": study.uid, "source": "move"})
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert sorted(j["series_instance_uid"] for j in jobs) == sorted(study.series)

    assert sorted(run_pulls(api)) == sorted(j["id"] for j in jobs)
    for job in jobs:
        sent = study.series[job["series_instance_uid"]]
        assert_spooled(api, job["id"], sent, "C-MOVE")
        detail = httpx.get(f"{server.url}/jobs/{job['id']}", headers=AUTH, timeout=30).json()
        assert detail["state"] == "queued"
        assert detail["completion_reason"] == (
            f"pulled by C-MOVE from ORTHANC@127.0.0.1:{pacs[0].dicom_port}: {len(sent)} instance(s)"
        )
    stored = listener.counters.snapshot().total_instances
    assert stored == sum(len(sent) for sent in study.series.values())  # all came through the listener
    # Orthanc has released its association, and the idle timer (0.5 s) has had its chance: still only
    # the pull jobs, since every instance named us as its Move Originator
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with api.store.session(readonly=True) as s:
            assert sorted(job.id for job in list_jobs(s)) == sorted(j["id"] for j in jobs)
        time.sleep(0.1)
    assert api.intake.tracker.pending() == 0
    assert sorted(api.queue.items) == sorted(("process", j["id"]) for j in jobs)


@pytest.mark.parametrize("unreachable", [False, True], ids=["unknown-destination", "nobody-listening"])
def test_a_c_move_orthanc_cannot_carry_out_says_what_to_check(
    api: ApiUnderTest, pacs: tuple[Orthanc, Study], unreachable: bool
) -> None:
    """Orthanc answers 0xC000 with no sub-operations both when it does not know the destination and
    when nothing listens there: retried (a listener may be restarting), with both causes named."""
    orthanc, study = pacs
    orthanc.set_modality("mipgw", OUR_AE, free_ports(1)[0])  # nobody listens there
    destination = OUR_AE if unreachable else "NOBODY"
    series = sorted(study.series)[0]
    with pytest.raises(DeliveryError) as caught:
        pull(
            "move",
            orthanc.dicom_node(retrieve="c-move"),
            study.uid,
            series,
            api.data,
            calling_ae=OUR_AE,
            move_destination=destination,
        )
    assert caught.value.retryable is True
    assert caught.value.reason == (
        f"C-MOVE from ORTHANC@127.0.0.1:{orthanc.dicom_port} failed with 0xC000 (unable to process) "
        f"before sending anything: does move know AE {destination!r} (this gateway's listener, its host "
        "and port), and is the listener up?"
    )
    assert not api.data.incoming_series(study.uid, series).exists()


def test_one_series_with_an_idempotency_key(
    api: ApiUnderTest, server: ApiServer, pacs: tuple[Orthanc, Study]
) -> None:
    _, study = pacs
    series_uid, sent = sorted(study.series.items())[1]
    body = {"study_instance_uid": study.uid, "series_instance_uid": series_uid, "source": "dimse"}
    first = post_jobs(server, body, **{"Idempotency-Key": "ris-order-42"})
    assert first.status_code == 201, first.text
    again = post_jobs(server, body, **{"Idempotency-Key": "ris-order-42"})
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    (job,) = first.json()["jobs"]
    assert run_pulls(api) == [job["id"]]  # the replay queued nothing
    assert_spooled(api, job["id"], sent, "C-GET")
    with api.store.session(readonly=True) as s:
        pulled = get_job(s, job["id"])
    assert (pulled.state, pulled.route) == (JobState.QUEUED, Route.API)
    assert pulled.completion_reason is not None
    assert pulled.completion_reason.startswith("pulled by C-GET from ORTHANC@127.0.0.1:")
    other_study = api.data.incoming_series(study.uid, sorted(study.series)[0])
    assert not other_study.exists()  # only the series asked for was fetched

    changed = post_jobs(server, body | {"priority": "stat"}, **{"Idempotency-Key": "ris-order-42"})
    assert changed.status_code == 409, changed.text


def test_bad_requests_make_no_job(api: ApiUnderTest, server: ApiServer, pacs: tuple[Orthanc, Study]) -> None:
    _, study = pacs
    unknown = post_jobs(server, {"study_instance_uid": study.uid, "source": "nowhere"})
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "'nowhere' is not configured" in unknown.json()["detail"]
    for uid in ("../../etc/passwd", "1.2.3.", "01.2"):
        bad = post_jobs(server, {"study_instance_uid": uid, "source": "web"})
        assert bad.status_code == 422, uid
        assert bad.json()["errors"][0]["loc"] == ["body", "study_instance_uid"]
    body = {"study_instance_uid": study.uid, "source": "web"}
    refused = httpx.post(
        f"{server.url}/jobs", json=body, headers={"Authorization": "Bearer wrong"}, timeout=30
    )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    missing = post_jobs(server, {"study_instance_uid": "1.2.826.0.1.3680043.8.498.404", "source": "web"})
    assert missing.status_code == 404
    assert "holds no series" in missing.json()["detail"]
    assert api.queue.items == []
    listed = httpx.get(f"{server.url}/jobs", headers=AUTH, timeout=30).json()
    assert listed["jobs"] == []
