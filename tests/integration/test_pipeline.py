"""Jobs through the whole pipeline in this process: real store, mock endpoint over HTTP, dcmtk storescp.

The queue is a list run inline (the Celery tests run the same functions in worker processes).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from config.rules_schema import Action, action_problems
from config.settings import Settings, WebhookSettings
from dicom_io.testing import write_datasets
from dicom_io.testing.phantoms import volume_phantom
from dicom_io.testing.phases import phased_series
from dicom_io.uids import seg_series_uid
from service.mock_endpoint import MockEndpointServer
from tests.helpers import InlineQueue
from tests.peers import WEBHOOK_SECRET, Receiver, StoreSCP, webhook_receiver
from tests.unit.workers.store.backends import database_url_for
from workers import pipeline
from workers.context import build_deps
from workers.errors import DeliveryError
from workers.job_rules import action_document, inline_rule_name
from workers.jobs import DeliveryState, JobState, Priority, Route, Stage
from workers.storage import DataDir
from workers.store import (
    audit_for,
    completed_stages,
    create_job,
    deliveries_for,
    get_job,
    open_store,
    results_for,
)

pytestmark = pytest.mark.integration
_keys = itertools.count()

RULES = """
version: 1
rules:
  - name: ct-liver-3d
    match: {all: [{attribute: Modality, equals: CT}, {kind: volume}]}
    action:
      endpoint: mip3d
      model: 3d
      prompts: [liver]
      window: soft_tissue
      destinations: [pacs]
  - name: ct-liver-2d
    match: {attribute: SeriesDescription, regex: "TWO-D"}
    action: {endpoint: mip2d, model: 2d, prompts: [liver], window: abdomen, destinations: [pacs]}
  - name: ct-liver-3d-phases
    match: {kind: phases}
    action: {endpoint: mip3d, model: 3d, prompts: [liver], window: soft_tissue, destinations: [pacs]}
"""


@pytest.fixture(scope="module")
def mock() -> Iterator[MockEndpointServer]:
    with MockEndpointServer() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as server:
        yield server


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path / "pacs") as scp:
        yield scp


def _settings(tmp_path: Path, mock: MockEndpointServer, pacs: StoreSCP, fault: str | None = None) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    headers = {"X-Mock-Fault": fault, "X-Mock-Fault-Key": f"pipeline-{next(_keys)}"} if fault else {}
    endpoint = {"url": mock.score_url, "max_attempts": 2, "backoff_initial_s": 0.01, "headers": headers}
    return Settings(
        data_dir=tmp_path / "data",
        rules_file=rules,
        endpoints={"mip3d": {**endpoint, "model": "3d"}, "mip2d": {**endpoint, "model": "2d"}},
        destinations={"pacs": pacs.dicom_node(max_attempts=3).model_dump()},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url_for(request.param, tmp_path) as url:  # PostgreSQL: a throwaway database
        yield url


def _received(settings: Settings, series_description: str = "AXIAL") -> tuple[str, str, str]:
    """A CT series as the listener would spool it: (study, series, spool path relative)."""
    phantom = volume_phantom(slices=10, seed=3, series_description=series_description)
    data = DataDir(settings.data_dir)
    ds = phantom.datasets[0]
    folder = data.incoming_series(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    phantom.write(folder)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, data.relative(folder)


def _job(deps: pipeline.Deps, study: str, series: str, spool: str) -> str:
    with deps.store.session() as s:
        job = create_job(
            s,
            actor="test",
            source="MODALITY",
            route=Route.DIMSE,
            calling_ae_title="MODALITY",
            study_instance_uid=study,
            series_instance_uid=series,
            instance_count=10,
            spool_path=spool,
            state=JobState.QUEUED,
            idempotency_key=f"test-{series}",
        )
    return job.id


def _drain(queue: InlineQueue, deps: pipeline.Deps) -> list[Exception]:
    """Run queued work like a worker would; retryable failures are returned, not raised."""
    errors: list[Exception] = []
    while queue.items:
        kind, job_id, *rest = queue.items.pop(0)
        try:
            if kind == "process":
                pipeline.process_job(job_id, deps)
            else:
                pipeline.deliver(job_id, rest[0], deps)
        except (pipeline.TransientJobError, DeliveryError) as exc:
            errors.append(exc)
    return errors


def _deps(settings: Settings, url: str) -> tuple[InlineQueue, pipeline.Deps]:
    queue = InlineQueue()
    return queue, build_deps(settings, open_store(url, migrate=True), queue, actor="test")


def test_a_series_becomes_one_delivered_seg(
    tmp_path: Path, mock: Any, pacs: StoreSCP, store_url: str
) -> None:
    settings = _settings(tmp_path, mock, pacs)
    queue, deps = _deps(settings, store_url)
    job_id = _job(deps, *_received(settings))
    queue.process(job_id, Priority.ROUTINE)
    assert _drain(queue, deps) == []
    with deps.store.session() as s:
        job = get_job(s, job_id)
        assert job.state is JobState.DONE
        assert job.rule == "ct-liver-3d"
        (result,) = results_for(s, job_id)
        assert {Stage.LOAD, Stage.MATCH, Stage.INFER, Stage.PERSIST} <= completed_stages(s, job_id)
        assert [d.state for d in deliveries_for(s, job_id)] == [DeliveryState.DELIVERED]
        events = [(e.from_state, e.to_state) for e in audit_for(s, job_id) if e.to_state]
    assert (JobState.DELIVERING, JobState.DONE) in events
    (received,) = pacs.received_files()
    seg = pydicom.dcmread(received)
    assert seg.SOPInstanceUID == result.seg_sop_instance_uid
    assert seg.Modality == "SEG"
    # a redelivered task repeats nothing
    pipeline.process_job(job_id, deps)
    pipeline.deliver(job_id, "pacs", deps)
    assert len(pacs.received_files()) == 1


def test_extra_rules_become_jobs_of_their_own(tmp_path: Path, mock: Any, pacs: StoreSCP) -> None:
    settings = _settings(tmp_path, mock, pacs)
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    job_id = _job(deps, *_received(settings, series_description="TWO-D AXIAL"))
    queue.process(job_id, Priority.ROUTINE)
    assert _drain(queue, deps) == []
    received = sorted(pydicom.dcmread(p).SeriesDescription for p in pacs.received_files())
    assert received == ["ct-liver-2d (MedImageParse 2D)", "ct-liver-3d (MedImageParse 3D)"]


def test_endpoint_503_three_times_then_done(tmp_path: Path, mock: Any, pacs: StoreSCP) -> None:
    settings = _settings(tmp_path, mock, pacs, fault="fail-first=3;status=503")
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    job_id = _job(deps, *_received(settings))
    queue.process(job_id, Priority.ROUTINE)
    (error,) = _drain(queue, deps)  # two attempts inside the client, both 503
    assert isinstance(error, pipeline.TransientJobError)
    assert error.stage is Stage.INFER
    pipeline.postpone(job_id, error, deps)  # what the Celery task does before retrying
    with deps.store.session() as s:
        waiting = get_job(s, job_id)
    assert waiting.state is JobState.QUEUED
    assert "503" in (waiting.error or "")
    queue.process(job_id, Priority.ROUTINE)
    assert _drain(queue, deps) == []  # third attempt 503, fourth answers
    with deps.store.session() as s:
        assert get_job(s, job_id).state is JobState.DONE


def test_a_rejected_key_fails_the_job_with_the_reason(tmp_path: Path, mock: Any, pacs: StoreSCP) -> None:
    settings = _settings(tmp_path, mock, pacs, fault="always=401")
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    job_id = _job(deps, *_received(settings))
    queue.process(job_id, Priority.ROUTINE)
    assert _drain(queue, deps) == []
    with deps.store.session() as s:
        job = get_job(s, job_id)
    assert job.state is JobState.FAILED
    assert job.error_stage is Stage.INFER
    assert "rejected the key" in (job.error or "")
    assert pacs.received_files() == []


def test_a_destination_that_is_down_gets_the_seg_once_it_is_up(tmp_path: Path, mock: Any) -> None:
    with StoreSCP(tmp_path / "pacs") as pacs:
        settings = _settings(tmp_path, mock, pacs)
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    job_id = _job(deps, *_received(settings))
    queue.process(job_id, Priority.ROUTINE)
    (error,) = _drain(queue, deps)  # the PACS is down
    assert isinstance(error, DeliveryError)
    assert error.retryable
    with deps.store.session() as s:
        (delivery,) = deliveries_for(s, job_id)
        assert delivery.state is DeliveryState.PENDING
        assert get_job(s, job_id).state is JobState.DELIVERING
    pacs.fixed_ports = [pacs.port]
    with pacs:  # back up on the same port: the retried delivery goes through
        queue.deliver(job_id, "pacs")
        assert _drain(queue, deps) == []
        assert len(pacs.received_files()) == 1
    with deps.store.session() as s:
        assert get_job(s, job_id).state is JobState.DONE


def test_a_non_image_series_is_rejected_and_files_stay(tmp_path: Path, mock: Any, pacs: StoreSCP) -> None:
    settings = _settings(tmp_path, mock, pacs)
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    study, series, spool = _received(settings)
    for path in DataDir(settings.data_dir).resolve(spool).iterdir():
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
        ds.save_as(path, enforce_file_format=True)
    job_id = _job(deps, study, series, spool)
    queue.process(job_id, Priority.ROUTINE)
    _drain(queue, deps)
    with deps.store.session() as s:
        job = get_job(s, job_id)
    assert job.state is JobState.REJECTED
    assert "structured report" in (job.error or "")
    assert any(DataDir(settings.data_dir).resolve(spool).iterdir())  # the received files stay


def test_webhooks_hear_of_done_and_failed_jobs(
    tmp_path: Path, mock: Any, pacs: StoreSCP, receiver: Receiver
) -> None:
    hook = {"url": receiver.url, "secret": WEBHOOK_SECRET, "events": ["done", "failed"]}
    good = _settings(tmp_path / "good", mock, pacs).model_copy(
        update={"webhooks": [WebhookSettings.model_validate(hook)]}
    )
    bad = _settings(tmp_path / "bad", mock, pacs, fault="always=401").model_copy(
        update={"webhooks": good.webhooks}
    )
    for settings in (good, bad):
        queue, deps = _deps(settings, f"sqlite+pysqlite:///{settings.data_dir.parent / 'j.sqlite3'}")
        queue.process(_job(deps, *_received(settings)), Priority.ROUTINE)
        _drain(queue, deps)
    events = [(event, payload["state"], payload["rule"]) for event, payload in receiver.accepted]
    assert events == [("done", "done", "ct-liver-3d"), ("failed", "failed", "ct-liver-3d")]
    assert "rejected the key" in receiver.accepted[1][1]["error"]
    assert "PatientName" not in json.dumps(receiver.accepted)


def test_a_job_with_an_inline_action_runs_its_own_prompts(tmp_path: Path, mock: Any, pacs: StoreSCP) -> None:
    settings = _settings(tmp_path, mock, pacs)
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    study, series, spool = _received(settings)
    # what POST /jobs stores for {"action": {...}}: prompts no rule in RULES asks for
    action = Action.model_validate(
        {"endpoint": "mip3d", "model": "3d", "prompts": ["spleen", "liver"], "window": "bone"}
        | {"destinations": ["pacs"]}
    )
    assert action_problems(action) == []
    name = inline_rule_name(action)
    with deps.store.session() as s:
        job_id = create_job(
            s,
            actor="api",
            source="pacs",
            route=Route.API,
            study_instance_uid=study,
            series_instance_uid=series,
            instance_count=10,
            rule=name,
            rules=[name],
            endpoint="mip3d",
            model="3d",
            action=action_document(action),
            spool_path=spool,
            state=JobState.QUEUED,
        ).id
    queue.process(job_id, Priority.ROUTINE)
    assert _drain(queue, deps) == []
    with deps.store.session() as s:
        job = get_job(s, job_id)
        assert (job.state, job.rule, job.rules) == (JobState.DONE, name, (name,))
        (result,) = results_for(s, job_id)
        assert [d.destination for d in deliveries_for(s, job_id)] == ["pacs"]
    (received,) = pacs.received_files()
    seg = pydicom.dcmread(received)
    assert [segment.SegmentLabel for segment in seg.SegmentSequence] == ["spleen", "liver"]
    assert seg.SeriesDescription == f"{name} (MedImageParse 3D)"
    # the SEG series is named after the action's digest: the same action on this series, the same SEG
    assert seg.SeriesInstanceUID == result.seg_series_instance_uid
    assert seg.SeriesInstanceUID == seg_series_uid(series, name, "MedImageParse", "unknown")


def test_a_4d_series_is_segmented_phase_by_phase_and_every_seg_delivered(
    tmp_path: Path, mock: Any, pacs: StoreSCP
) -> None:
    settings = _settings(tmp_path, mock, pacs)
    queue, deps = _deps(settings, f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}")
    datasets = phased_series((1, 2), slices=10, seed=3)
    data = DataDir(settings.data_dir)
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    folder = data.incoming_series(study, series)
    write_datasets(datasets, folder)
    job_id = _job(deps, study, series, data.relative(folder))
    queue.process(job_id, Priority.ROUTINE)
    assert _drain(queue, deps) == []
    with deps.store.session() as s:
        job = get_job(s, job_id)
        assert (job.state, job.rule) == (JobState.DONE, "ct-liver-3d-phases")
        results = results_for(s, job_id)
    assert len(results) == 2
    segs = sorted((pydicom.dcmread(p) for p in pacs.received_files()), key=lambda ds: int(ds.InstanceNumber))
    assert [int(seg.InstanceNumber) for seg in segs] == [1, 2]
    assert len({seg.SeriesInstanceUID for seg in segs}) == 1  # one SEG series, one instance per phase
    by_phase = [
        {
            item.ReferencedSOPInstanceUID
            for ref in seg.ReferencedSeriesSequence
            for item in ref.ReferencedInstanceSequence
        }
        for seg in segs
    ]
    phase_of = {str(ds.SOPInstanceUID): int(ds.TemporalPositionIdentifier) for ds in datasets}
    assert [{phase_of[uid] for uid in refs} for refs in by_phase] == [{1}, {2}]
    assert [len(refs) for refs in by_phase] == [10, 10]
