"""Schemathesis against the API's own OpenAPI document, over real HTTP: generated requests to every
route (reads, retries, STOW-RS with whatever bodies it makes up), with and without keys; no 5xx, and
every answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.unit.service.api.apps import AUTH, ApiServer, make_api
from tests.unit.service.api.qido_stub import QidoStub
from workers.jobs import JobState, Route, Stage
from workers.store import SegmentRecord, create_job, record_result, transition

pytestmark = pytest.mark.integration


@schemathesis.serializer('multipart/related; type="application/dicom"', "multipart/related")
def _as_is(ctx: object, value: object) -> bytes:
    """Whatever body schemathesis makes up for STOW-RS, sent as it is (not DICOM: a 4xx is due)."""
    return value if isinstance(value, bytes) else str(value).encode()


def _fill(api_store: object) -> None:
    """A few jobs: one queued, one failed, one done whose SEG file is gone (410 territory)."""
    store = api_store
    with store.session() as s:  # type: ignore[attr-defined]
        for n, final in enumerate((None, JobState.FAILED, JobState.DONE)):
            job = create_job(
                s,
                actor="test",
                source="test",
                route=Route.STOW,
                study_instance_uid="1.2.3",
                series_instance_uid=f"1.2.3.{n}",
                instance_count=1,
                state=JobState.QUEUED,
                job_id=f"00000000-0000-4000-8000-00000000000{n}",
            )
            if final is None:
                continue
            transition(s, job.id, JobState.RUNNING, actor="test", stage=Stage.LOAD)
            if final is JobState.FAILED:
                transition(s, job.id, final, actor="test", stage=Stage.INFER, error="no")
                continue
            record_result(
                s, job.id, f"1.2.3.{n}.9", "1.2.3.9", [SegmentRecord("liver", "liver", 10, False, 1, 1.5)]
            )
            transition(s, job.id, JobState.DELIVERING, actor="test", stage=Stage.DELIVER)
            transition(s, job.id, JobState.DONE, actor="test", stage=Stage.DELIVER)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    tmp: Path = tmp_path_factory.mktemp("schema")
    # POST /jobs asks its source for a study's series: a QIDO-RS peer that holds one for any study
    with QidoStub({"*": ["1.2.826.0.1.3680043.8.498.99"]}) as source:
        api = make_api(tmp, sources={"pacs": {"kind": "dicomweb", "url": source.url}})
        _fill(api.store)
        with ApiServer(api.app) as server:
            yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_the_api_answers_as_its_schema_says(api_schema: schemathesis.BaseSchema) -> None:
    # schemathesis' lazy pytest fixtures do not run on pytest 9: the operations are driven here
    tested = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            # a STOW-RS body the schema allows (any string) is rarely DICOM in multipart/related:
            # 400/415 are right there (the STOW tests send real instances)
            stow = case.operation.path.startswith("/dicomweb/")
            excluded = [schemathesis.checks.positive_data_acceptance] if stow else []
            case.call_and_validate(headers=AUTH, excluded_checks=excluded)
            if case.operation.path == "/healthz":
                return
            for headers in ({}, {"Authorization": "Bearer not-a-key"}):
                response = case.call(headers=headers)
                assert response.status_code == 401, (case.operation.label, response.text)
                assert response.headers["content-type"] == ["application/problem+json"]
                case.operation.validate_response(response)

        check()
        tested.append(operation.label)
    assert len(tested) == 12, tested
