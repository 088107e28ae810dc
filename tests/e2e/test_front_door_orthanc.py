"""The front door against a real PACS: Orthanc and dcmtk talking to the gateway's production processes.

One set-up for the module: ``mip-gateway scp``, ``api`` and ``worker`` as separate processes on one
data directory, Redis as the broker (a database of our own, flushed before and after), a fresh
PostgreSQL database as the job store (created and dropped here), ``mip-gateway mock-endpoint`` as the
3D model, and Orthanc (with DICOMweb and basic auth) as the PACS: the destination of DIMSE-routed
SEGs (C-STORE, node ``pacs``) and of STOW-routed SEGs (STOW-RS, node ``pacsweb``), a sender itself,
and the source ``POST /jobs`` pulls from (WADO-RS, node ``orthanc-web``; C-GET, node ``orthanc-dimse``;
C-MOVE into the gateway's listener, node ``orthanc-move``, which must not start a second job).

What goes in: dcmtk ``storescu`` and Orthanc's own C-STORE to the listener, ``dicomweb-client``
STOW-RS to the API, and ``POST /jobs`` for a study Orthanc holds. What must come back: a DICOM SEG in
Orthanc that references the source series and passes dciodvfy. What must be refused: a calling AE not
in the allow-list (at association), a wrong API key (401 problem JSON), and a StudyInstanceUID that
would climb out of the spool (``../``).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import SegmentationStorage

from dicom_io.testing.phantoms import volume_phantom
from tests.gateway_processes import GatewayProcesses, ProcessStartError, gateway_env
from tests.helpers import dciodvfy_errors, redis_test_url, require_tool
from tests.peers import Orthanc
from tests.unit.workers.store.backends import temporary_postgres_database

pytestmark = pytest.mark.integration

API_KEY = "e2e-front-door-key-7f3a"
ORTHANC_USER, ORTHANC_PASSWORD = "gateway", "e2e-Orthanc-pw"
GATEWAY_AET = "MIPGW"
SENDER_AET = "STORESCU"  # dcmtk storescu's calling AE in these tests
ALLOWED_CALLING_AES = (SENDER_AET, "ORTHANC")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk 3.6.7 leaves Nagle on otherwise
# POST /jobs sources: WADO-RS, C-GET, and C-MOVE into the gateway's own listener
WEB_SOURCE, DIMSE_SOURCE, MOVE_SOURCE = "orthanc-web", "orthanc-dimse", "orthanc-move"
SEG_TIMEOUT_S = 240.0  # a shared 2-core machine: generous, never a timing assertion

_SEG = (
    "endpoint: mip3d, model: 3d, prompts: [liver], window: soft_tissue, "
    "nifti: {intensity: uint8, layout: slices-first}, "
    'seg: {series_description: "AI liver (e2e)", series_number: 9901}'
)
RULES = f"""
version: 1
rules:
  - name: e2e-ct-liver-dimse
    match:
      all:
        - {{attribute: Modality, equals: CT}}
        - {{kind: volume}}
        - {{route: [dimse]}}
    action: {{{_SEG}, destinations: [pacs]}}
  - name: e2e-ct-liver-stow
    match:
      all:
        - {{attribute: Modality, equals: CT}}
        - {{kind: volume}}
        - {{route: [stow]}}
    action: {{{_SEG}, destinations: [pacsweb]}}
  - name: e2e-ct-liver-pulled
    match:
      all:
        - {{attribute: Modality, equals: CT}}
        - {{kind: volume}}
        - {{route: [api]}}
    action: {{{_SEG}, destinations: [pacs]}}
"""


@dataclass
class FrontDoor:
    work: Path
    data_dir: Path
    pacs: Orthanc
    gateway: GatewayProcesses
    scp_port: int
    api_url: str

    def api(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=60)

    def logs(self) -> str:
        return self.gateway.logs() + "\n----- orthanc -----\n" + self.pacs.log_text()[-3000:]


@pytest.fixture(scope="module")
def front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    require_tool("storescu")
    require_tool("echoscu")
    work = tmp_path_factory.mktemp("front-door")
    broker = redis_test_url(2, 5)  # databases no other test module uses
    try:
        with (
            temporary_postgres_database() as database,
            # the gateway's port is known once it listens: a placeholder now, set_modality later
            Orthanc(
                work / "orthanc",
                {"mipgw": (GATEWAY_AET, 1)},
                users={ORTHANC_USER: ORTHANC_PASSWORD},
            ) as pacs,
        ):
            (work / "rules.yaml").write_text(RULES)
            env = gateway_env(
                work / "data",
                broker_url=broker,
                database_url=database,
                rules_file=work / "rules.yaml",
                settings={
                    "MIPGW_AE_TITLE": GATEWAY_AET,
                    "MIPGW_LISTENER__COMPLETION_IDLE_S": "2",
                    "MIPGW_LISTENER__ALLOWED_CALLING_AES": json.dumps(ALLOWED_CALLING_AES),
                    "MIPGW_API__KEYS": json.dumps([API_KEY]),
                    "MIPGW_ENDPOINTS__MIP3D__MODEL": "3d",
                    "MIPGW_DESTINATIONS__PACS__KIND": "dicom",
                    "MIPGW_DESTINATIONS__PACS__AE_TITLE": pacs.aet,
                    "MIPGW_DESTINATIONS__PACS__HOST": "127.0.0.1",
                    "MIPGW_DESTINATIONS__PACS__PORT": str(pacs.dicom_port),
                    "MIPGW_DESTINATIONS__PACSWEB__KIND": "dicomweb",
                    "MIPGW_DESTINATIONS__PACSWEB__URL": pacs.dicomweb_url,
                    "MIPGW_DESTINATIONS__PACSWEB__USERNAME": ORTHANC_USER,
                    "MIPGW_DESTINATIONS__PACSWEB__PASSWORD": ORTHANC_PASSWORD,
                    # POST /jobs pulls from the same Orthanc: WADO-RS, and C-GET as the "mipgw" modality
                    "MIPGW_SOURCES": json.dumps(
                        {
                            # not model_dump: it would write the password as "**********"
                            WEB_SOURCE: {
                                "kind": "dicomweb",
                                "url": pacs.dicomweb_url,
                                "username": ORTHANC_USER,
                                "password": ORTHANC_PASSWORD,
                            },
                            DIMSE_SOURCE: pacs.dicom_node().model_dump(mode="json"),
                            MOVE_SOURCE: pacs.dicom_node(retrieve="c-move").model_dump(mode="json"),
                        }
                    ),
                },
            )
            with GatewayProcesses(work, env) as gateway:
                try:
                    mock_url = gateway.start_mock_endpoint()
                    gateway.env["MIPGW_ENDPOINTS__MIP3D__URL"] = f"{mock_url}/score"
                    scp_port = gateway.start_scp()
                    pacs.set_modality("mipgw", GATEWAY_AET, scp_port)
                    api_url = gateway.start_api()
                    gateway.start_worker()
                except ProcessStartError as exc:
                    pytest.fail(f"the gateway did not start: {exc}")
                yield FrontDoor(work, work / "data", pacs, gateway, scp_port, api_url)
    finally:
        import redis

        redis.Redis.from_url(broker).flushdb()


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, front_door: FrontDoor) -> Iterator[None]:
    """Print every process's stderr when the test failed (shown in pytest's report of the test)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(front_door.logs())


# --- helpers ---------------------------------------------------------------------------------------


def _ct(folder: Path, seed: int) -> tuple[list[Path], pydicom.Dataset]:
    """A small generated axial CT (24 slices of 128²); its files and its first header."""
    phantom = volume_phantom(
        rows=128,
        columns=128,
        slices=24,
        pixel_spacing=(2.5, 2.5),
        slice_spacing=2.5,
        reverse_order=True,
        seed=seed,
        study_description="CT ABDOMEN (e2e phantom)",
    )
    files = phantom.write(folder)
    return sorted(Path(f) for f in files), phantom.datasets[0]


def _storescu(port: int, files: list[Path], *, aet: str = SENDER_AET) -> subprocess.CompletedProcess[str]:
    storescu = require_tool("storescu")
    return subprocess.run(
        [storescu, "-v", "-aet", aet, "-aec", GATEWAY_AET, "127.0.0.1", str(port), *map(str, files)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _final_job(door: FrontDoor, series_uid: str, timeout: float = SEG_TIMEOUT_S) -> dict[str, Any]:
    """GET /jobs/{id} of the series' job once it is in a final state."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    with door.api() as api:
        while time.monotonic() < deadline:
            response = api.get("/jobs", params={"series": series_uid})
            response.raise_for_status()
            seen = response.json()["jobs"]
            final = {"done", "no_findings", "failed", "rejected", "skipped", "delivery_failed"}
            if seen and all(job["state"] in final for job in seen):
                assert len(seen) == 1, seen
                detail = api.get(f"/jobs/{seen[0]['id']}")
                detail.raise_for_status()
                return dict(detail.json())
            time.sleep(0.25)
    raise AssertionError(f"no final job for series {series_uid} in {timeout} s (jobs: {seen})\n{door.logs()}")


def _seg_in_orthanc(door: FrontDoor, study_uid: str, source_series_uid: str) -> tuple[pydicom.Dataset, str]:
    """The SEG stored in Orthanc that references ``source_series_uid``, and its Orthanc ID."""
    deadline = time.monotonic() + SEG_TIMEOUT_S
    while time.monotonic() < deadline:
        response = door.pacs.client.post(
            "/tools/find",
            json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid, "Modality": "SEG"}},
        )
        response.raise_for_status()
        for series_id in response.json():
            instances = door.pacs.client.get(f"/series/{series_id}/instances")
            instances.raise_for_status()
            for instance in instances.json():
                seg = pydicom.dcmread(io.BytesIO(door.pacs.instance_file(instance["ID"])))
                referenced = {item.SeriesInstanceUID for item in seg.get("ReferencedSeriesSequence", [])}
                if source_series_uid in referenced:
                    return seg, str(instance["ID"])
        time.sleep(0.25)
    raise AssertionError(f"no SEG of series {source_series_uid} reached Orthanc\n{door.logs()}")


def _assert_seg_of(seg: pydicom.Dataset, files: list[Path], tmp_path: Path) -> None:
    """A valid SEG whose references all point into the source series."""
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    source_uids = {str(ds.SOPInstanceUID) for ds in sources}
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    (referenced_series,) = seg.ReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    referenced = {str(item.ReferencedSOPInstanceUID) for item in referenced_series.ReferencedInstanceSequence}
    assert referenced
    assert referenced <= source_uids
    frame_sources = {
        str(source.ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for source in derivation.SourceImageSequence
    }
    assert frame_sources
    assert frame_sources <= source_uids
    assert [str(s.SegmentLabel).lower() for s in seg.SegmentSequence] == ["liver"]
    path = tmp_path / "seg-from-orthanc.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def _assert_done(job: dict[str, Any], seg: pydicom.Dataset, *, route: str, destination: str) -> None:
    assert job["state"] == "done", job
    assert job["route"] == route
    assert [r["seg_sop_instance_uid"] for r in job["results"]] == [seg.SOPInstanceUID]
    assert [(d["destination"], d["state"]) for d in job["deliveries"]] == [(destination, "delivered")]
    entered = [change["state"] for change in job["states"]]
    assert entered[-1] == "done"
    assert "running" in entered


def _files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _escaping_instance(folder: Path, marker: str) -> tuple[Path, str]:
    """A CT slice whose StudyInstanceUID climbs out of any folder built from it (``../../<marker>``).

    Written with pydicom's validation off: a sender that does not check is exactly what is modelled.
    """
    phantom = volume_phantom(rows=32, columns=32, slices=2, seed=99)
    ds = phantom.datasets[0]
    settings = pydicom.config.settings
    mode = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        bad = f"1.2/../../../../{marker}"
        ds.add(DataElement(0x0020000D, "UI", bad, validation_mode=pydicom.config.IGNORE))
        path = folder / "escaping.dcm"  # the marker only in the data set: a file named by it is the bug
        folder.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    finally:
        settings.writing_validation_mode = mode
    assert f"/../../../../{marker}".encode() in path.read_bytes()
    return path, str(ds.SOPInstanceUID)


def _multipart(files: list[Path], boundary: str) -> bytes:
    body = b""
    for path in files:
        body += (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


def _stow(door: FrontDoor, files: list[Path], *, key: str | None = API_KEY) -> httpx.Response:
    boundary = uuid.uuid4().hex
    with door.api(key) as api:
        return api.post(
            "/dicomweb/studies",
            content=_multipart(files, boundary),
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        )


# --- the ways in -----------------------------------------------------------------------------------


def test_storescu_series_comes_back_as_a_seg_in_orthanc(front_door: FrontDoor, tmp_path: Path) -> None:
    files, first = _ct(tmp_path / "ct", seed=21)
    sent = _storescu(front_door.scp_port, files)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    seg, orthanc_id = _seg_in_orthanc(front_door, first.StudyInstanceUID, first.SeriesInstanceUID)
    _assert_seg_of(seg, files, tmp_path)
    job = _final_job(front_door, first.SeriesInstanceUID)
    _assert_done(job, seg, route="dimse", destination="pacs")
    assert job["calling_ae"] == SENDER_AET
    assert job["instance_count"] == len(files)
    origin = front_door.pacs.client.get(f"/instances/{orthanc_id}/metadata/RemoteAET")
    assert origin.status_code == 200
    assert origin.text == GATEWAY_AET  # it came by C-STORE, from us


def test_orthanc_sends_a_study_and_gets_a_seg_back(front_door: FrontDoor, tmp_path: Path) -> None:
    files, first = _ct(tmp_path / "ct", seed=22)
    study_ids = {front_door.pacs.upload(path)["ParentStudy"] for path in files}
    (study_id,) = study_ids

    response = front_door.pacs.client.post(
        "/modalities/mipgw/store", json={"Resources": [study_id], "Synchronous": True}, timeout=120
    )
    assert response.status_code == 200, response.text

    seg, _ = _seg_in_orthanc(front_door, first.StudyInstanceUID, first.SeriesInstanceUID)
    _assert_seg_of(seg, files, tmp_path)
    job = _final_job(front_door, first.SeriesInstanceUID)
    _assert_done(job, seg, route="dimse", destination="pacs")
    assert job["calling_ae"] == "ORTHANC"


def test_stow_rs_in_seg_stored_back_by_stow_rs(front_door: FrontDoor, tmp_path: Path) -> None:
    from dicomweb_client.api import DICOMwebClient

    files, first = _ct(tmp_path / "ct", seed=23)
    client = DICOMwebClient(
        url=f"{front_door.api_url}/dicomweb", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    answer = client.store_instances([pydicom.dcmread(path) for path in files])
    assert "FailedSOPSequence" not in answer
    stored = {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence}
    assert stored == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}

    seg, orthanc_id = _seg_in_orthanc(front_door, first.StudyInstanceUID, first.SeriesInstanceUID)
    _assert_seg_of(seg, files, tmp_path)
    job = _final_job(front_door, first.SeriesInstanceUID)
    _assert_done(job, seg, route="stow", destination="pacsweb")
    assert job["calling_ae"] is None
    # STOW-RS into Orthanc leaves no calling AE behind (a C-STORE would have left ours)
    origin = front_door.pacs.client.get(f"/instances/{orthanc_id}/metadata/RemoteAET")
    assert origin.status_code == 404 or origin.text != GATEWAY_AET


@pytest.mark.parametrize(
    ("source", "how", "seed"),
    [(WEB_SOURCE, "WADO-RS", 26), (DIMSE_SOURCE, "C-GET", 27), (MOVE_SOURCE, "C-MOVE", 28)],
    ids=["wado-rs", "c-get", "c-move"],
)
def test_post_jobs_pulls_a_study_from_orthanc_and_stores_a_seg_back(
    front_door: FrontDoor, tmp_path: Path, source: str, how: str, seed: int
) -> None:
    files, first = _ct(tmp_path / "ct", seed=seed)
    (study_id,) = {front_door.pacs.upload(path)["ParentStudy"] for path in files}
    study = front_door.pacs.client.get(f"/studies/{study_id}")
    study.raise_for_status()
    assert len(study.json()["Series"]) == 1  # only the CT: the series the request must resolve to

    with front_door.api() as api:
        response = api.post("/jobs", json={"study_instance_uid": first.StudyInstanceUID, "source": source})
    assert response.status_code == 201, response.text
    (created,) = response.json()["jobs"]
    assert created["series_instance_uid"] == first.SeriesInstanceUID
    assert (created["state"], created["route"], created["source"]) == ("received", "api", source)

    # the SEG is a new series of the same study in Orthanc: waited for by the series it references
    seg, orthanc_id = _seg_in_orthanc(front_door, first.StudyInstanceUID, first.SeriesInstanceUID)
    _assert_seg_of(seg, files, tmp_path)
    job = _final_job(front_door, first.SeriesInstanceUID)
    assert job["id"] == created["id"]
    _assert_done(job, seg, route="api", destination="pacs")
    assert job["source"] == source
    assert job["instance_count"] == len(files)
    assert job["completion_reason"].startswith(f"pulled by {how} from "), job["completion_reason"]
    assert job["completion_reason"].endswith(f": {len(files)} instance(s)")
    assert [state["state"] for state in job["states"]][:2] == ["received", "queued"]
    origin = front_door.pacs.client.get(f"/instances/{orthanc_id}/metadata/RemoteAET")
    assert origin.status_code == 200
    assert origin.text == GATEWAY_AET  # delivered by C-STORE, from us


# --- refusals --------------------------------------------------------------------------------------


def test_an_unknown_calling_ae_is_refused_at_association(front_door: FrontDoor, tmp_path: Path) -> None:
    echoscu = require_tool("echoscu")
    stranger = f"STRANGER{secrets.randbelow(1000)}"

    def echo(aet: str) -> subprocess.CompletedProcess[str]:
        command = [echoscu, "-aet", aet, "-aec", GATEWAY_AET, "127.0.0.1", str(front_door.scp_port)]
        return subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, timeout=60, check=False)

    assert echo(SENDER_AET).returncode == 0  # the same call from an allowed AE goes through
    refused = echo(stranger)
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stdout + refused.stderr

    files, first = _ct(tmp_path / "ct", seed=24)
    sent = _storescu(front_door.scp_port, files[:2], aet=stranger)
    assert sent.returncode != 0
    assert "Association Rejected" in sent.stdout + sent.stderr
    assert not list(front_door.data_dir.rglob(f"*{first.SeriesInstanceUID}*"))

    deadline = time.monotonic() + 10  # the log line is written as the rejection goes out
    refusals: list[str] = []
    while time.monotonic() < deadline and len(refusals) < 2:
        log = front_door.gateway.process("scp").stderr_text()
        refusals = [line for line in log.splitlines() if "association_refused" in line and stranger in line]
        time.sleep(0.1)
    assert len(refusals) == 2, front_door.gateway.logs("scp")
    assert all("CALLING_AE_NOT_RECOGNISED" in line for line in refusals)
    assert all("calling AE title not in the allow-list" in line for line in refusals)


@pytest.mark.parametrize("key", ["wrong-key", None], ids=["wrong-key", "no-key"])
def test_a_wrong_api_key_gets_401_problem_json(
    front_door: FrontDoor, tmp_path: Path, key: str | None
) -> None:
    with front_door.api(key) as api:
        jobs = api.get("/jobs")
    files, first = _ct(tmp_path / "ct", seed=25)
    stow = _stow(front_door, files[:2], key=key)
    for response in (jobs, stow):
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 401
        assert problem["title"]
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
        assert "wrong-key" not in response.text
    assert not list(front_door.data_dir.rglob(f"*{first.SeriesInstanceUID}*"))


def test_a_stow_part_whose_study_uid_climbs_out_is_refused(front_door: FrontDoor, tmp_path: Path) -> None:
    marker = f"escaped-{uuid.uuid4().hex[:12]}"
    path, sop_uid = _escaping_instance(tmp_path / "bad", marker)
    before = _files_under(front_door.work)

    response = _stow(front_door, [path])

    assert response.status_code == 409, response.text  # its only part failed
    body = response.json()
    assert "00081199" not in body  # nothing stored
    (failed,) = body["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [sop_uid]
    assert failed["00081197"]["Value"] == [0xA900]  # data set invalid
    _assert_nothing_escaped(front_door, before, marker)


def test_a_c_store_whose_study_uid_climbs_out_gets_a_failure_status(
    front_door: FrontDoor, tmp_path: Path
) -> None:
    marker = f"escaped-{uuid.uuid4().hex[:12]}"
    path, sop_uid = _escaping_instance(tmp_path / "bad", marker)
    before = _files_under(front_door.work)

    sent = _storescu(front_door.scp_port, [path])

    output = sent.stdout + sent.stderr
    assert sent.returncode != 0, output  # storescu says so in its exit status too
    assert "Received Store Response (Error: CannotUnderstand)" in output, output
    refusal = [
        line
        for line in front_door.gateway.process("scp").stderr_text().splitlines()
        if "scp.instance_refused" in line and sop_uid in line
    ]
    assert len(refusal) == 1, front_door.gateway.logs("scp")
    assert "outcome=INVALID_UID" in refusal[0]
    assert "status=0xC002" in refusal[0]
    _assert_nothing_escaped(front_door, before, marker)


def _assert_nothing_escaped(door: FrontDoor, before: set[Path], marker: str) -> None:
    """No path anywhere in the set-up names the marker, and nothing new appeared outside the data dir."""
    after = _files_under(door.work)
    for root in (door.work, door.work.parent, door.data_dir.parent):
        assert not list(root.rglob(f"*{marker}*")), f"{marker} written under {root}"
    outside = {
        p
        for p in after - before
        if not p.is_relative_to(door.data_dir)
        and not p.is_relative_to(door.gateway.log_dir)
        and not p.is_relative_to(door.pacs.tmp_dir)
    }
    assert outside == set()
