"""``POST /jobs`` in process: validation, one job per series (and rule), idempotency keys, source
failures as problems. The queue is the recording InlineQueue; study-only requests ask a small QIDO-RS
peer on loopback (the real pulls from Orthanc are tests/integration/test_api_pull.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.api import pulls
from service.api.schemas import PullRequest
from tests.peers import free_ports
from tests.unit.service.api.apps import AUTH, STOW_KEY, ApiUnderTest, AsgiClient, make_api
from tests.unit.service.api.qido_stub import QidoStub
from tests.unit.service.api.test_app import assert_problem
from workers.jobs import JobState, Route
from workers.store import ensure_job, get_job, list_jobs

STUDY = "1.2.826.0.1.3680043.8.498.10"
SERIES = ["1.2.826.0.1.3680043.8.498.10.1", "1.2.826.0.1.3680043.8.498.10.2"]


@pytest.fixture
def qido() -> Iterator[QidoStub]:
    with QidoStub({STUDY: SERIES}) as stub:
        yield stub


def make(tmp_path: Path, qido: QidoStub, **sources: dict[str, Any]) -> ApiUnderTest:
    configured = {"pacs": {"kind": "dicomweb", "url": qido.url, "timeout_s": 10}} | sources
    return make_api(tmp_path, sources=configured)


def post(api: ApiUnderTest, body: dict[str, Any], key: str | None = None, **headers: str) -> Any:
    if key is not None:
        headers["Idempotency-Key"] = key
    with AsgiClient(api.app) as http:
        return http.post("/jobs", json=body, headers={**AUTH, **headers})


def stored_jobs(api: ApiUnderTest) -> list[Any]:
    with api.store.session(readonly=True) as s:
        return list_jobs(s, limit=1000)


def test_a_series_becomes_one_received_job_and_a_queued_pull(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    response = post(api, {"study_instance_uid": STUDY, "series_instance_uid": SERIES[1], "source": "pacs"})
    assert response.status_code == 201, response.text
    (job,) = response.json()["jobs"]
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert (job["state"], job["route"], job["source"]) == ("received", "api", "pacs")
    assert (job["study_instance_uid"], job["series_instance_uid"]) == (STUDY, SERIES[1])
    assert job["priority"] == "routine"
    assert job["rule"] is None
    assert job["instance_count"] == 0
    assert api.queue.items == [("pull", job["id"])]
    assert qido.requests == []  # the series was named: the source is not asked
    with api.store.session(readonly=True) as s:
        stored = get_job(s, job["id"])
    assert (stored.state, stored.route, stored.idempotency_key) == (JobState.RECEIVED, Route.API, None)


def test_a_study_becomes_one_job_per_series_the_source_holds(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    response = post(api, {"study_instance_uid": STUDY, "source": "pacs", "priority": "stat"})
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert [j["series_instance_uid"] for j in jobs] == SERIES
    assert {j["priority"] for j in jobs} == {"stat"}
    assert response.headers["location"] == f"/jobs/{jobs[0]['id']}"
    assert api.queue.items == [("pull", j["id"]) for j in jobs]
    assert qido.requests
    assert qido.requests[0].startswith(f"/dicom-web/studies/{STUDY}/series")


def test_named_rules_make_one_job_per_series_and_rule(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    rules = ["ct-chest-2d", "ct-abdomen-organs-3d"]  # in the packaged rules file
    response = post(api, {"study_instance_uid": STUDY, "source": "pacs", "rules": rules})
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert [(j["series_instance_uid"], j["rule"]) for j in jobs] == [
        (uid, rule) for uid in SERIES for rule in sorted(rules)
    ]
    assert all(j["rules"] == rules for j in jobs)
    chest = next(j for j in jobs if j["rule"] == "ct-chest-2d")
    assert chest["model"] == "2d"
    assert chest["endpoint"]
    assert len(api.queue.items) == 4

    body = assert_problem(
        post(api, {"study_instance_uid": STUDY, "source": "pacs", "rules": ["ct-chest-2d", "no-such-rule"]}),
        422,
    )
    assert "no-such-rule" in body["detail"]
    assert "ct-chest-2d" not in body["detail"]
    assert len(stored_jobs(api)) == 4


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"study_instance_uid": "../../etc", "source": "pacs"}, "study_instance_uid"),
        ({"study_instance_uid": "1.2.03", "source": "pacs"}, "study_instance_uid"),  # leading zero
        ({"study_instance_uid": "1." + "2" * 63, "source": "pacs"}, "study_instance_uid"),  # 65 chars
        (
            {"study_instance_uid": STUDY, "series_instance_uid": "1.2.x", "source": "pacs"},
            "series_instance_uid",
        ),
        ({"study_instance_uid": STUDY, "series_instance_uid": "", "source": "pacs"}, "series_instance_uid"),
        ({"study_instance_uid": STUDY}, "source"),
        ({"study_instance_uid": STUDY, "source": "pacs", "priority": "urgent"}, "priority"),
        ({"study_instance_uid": STUDY, "source": "pacs", "rules": []}, "rules"),
        ({"study_instance_uid": STUDY, "source": "pacs", "rules": ["../x"]}, "rules"),
        # an inline action goes under "action" (test_jobs_post_action.py), not at the top level
        ({"study_instance_uid": STUDY, "source": "pacs", "model": "3d", "prompts": ["liver"]}, "model"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    tmp_path: Path, qido: QidoStub, body: dict[str, Any], where: str
) -> None:
    api = make(tmp_path, qido)
    problem = assert_problem(post(api, body), 422)
    assert any(where in error["loc"] for error in problem["errors"]), problem
    assert stored_jobs(api) == []
    assert api.queue.items == []
    assert qido.requests == []


@pytest.mark.parametrize("source", ["nowhere", "../pacs", "PACS"])
def test_an_unknown_source_is_422_naming_it(tmp_path: Path, qido: QidoStub, source: str) -> None:
    api = make(tmp_path, qido)
    problem = assert_problem(post(api, {"study_instance_uid": STUDY, "source": source}), 422)
    assert problem["type"].endswith("invalid-pull-request")
    assert repr(source) in problem["detail"]
    assert "pacs" in problem["detail"]
    assert stored_jobs(api) == []
    assert api.queue.items == []


def test_the_same_key_and_body_give_the_same_jobs(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    body = {"study_instance_uid": STUDY, "source": "pacs"}
    first = post(api, body, key="order-4711")
    assert first.status_code == 201, first.text
    asked = len(qido.requests)
    again = post(api, body, key="order-4711")
    assert again.status_code == 200, again.text
    assert again.json()["jobs"] == first.json()["jobs"]
    assert again.headers["location"] == first.headers["location"]
    assert len(qido.requests) == asked  # a replay does not ask the source again
    assert len(api.queue.items) == 2  # nor queues the pulls twice

    # the pipeline made a job for a second matching rule, keyed after the first: not part of the answer
    made = first.json()["jobs"][0]
    with api.store.session() as s:
        parent = get_job(s, made["id"])
        ensure_job(
            s,
            actor="worker",
            source="pacs",
            route=Route.API,
            study_instance_uid=STUDY,
            series_instance_uid=parent.series_instance_uid,
            instance_count=3,
            rule="ct-chest-2d",
            state=JobState.QUEUED,
            idempotency_key=f"{parent.idempotency_key}/rule:ct-chest-2d",
        )
    assert post(api, body, key="order-4711").json() == first.json()

    other = post(api, body, key="order-4712")
    assert other.status_code == 201
    assert {j["id"] for j in other.json()["jobs"]}.isdisjoint(j["id"] for j in first.json()["jobs"])
    unkeyed = [post(api, body), post(api, body)]
    assert [r.status_code for r in unkeyed] == [201, 201]
    assert len(stored_jobs(api)) == 9


def test_a_key_reused_with_another_body_is_409(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    assert post(api, {"study_instance_uid": STUDY, "source": "pacs"}, key="k1").status_code == 201
    for changed in (
        {"study_instance_uid": STUDY, "source": "pacs", "priority": "stat"},
        {"study_instance_uid": STUDY, "series_instance_uid": SERIES[0], "source": "pacs"},
    ):
        problem = assert_problem(post(api, changed, key="k1"), 409)
        assert "Idempotency-Key" in problem["detail"]
    assert len(stored_jobs(api)) == 2
    assert_problem(post(api, {"study_instance_uid": STUDY, "source": "pacs"}, key="bad key"), 422)


def test_racing_twins_with_one_key_end_with_one_set_of_jobs(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    planned = pulls.plan(api.settings, PullRequest(study_instance_uid=STUDY, source="pacs"), "twin")
    first, created = pulls.create_jobs(api.store, planned, SERIES, actor="api")
    # the twin checked for the key before the first committed, then creates the same jobs
    second, created_again = pulls.create_jobs(api.store, planned, reversed(SERIES), actor="api")
    assert [j.id for j in second] == [j.id for j in first]
    assert len(created) == 2
    assert created_again == []


def test_source_failures_are_problems_with_the_reason(tmp_path: Path, qido: QidoStub) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/dicom-web"
    with QidoStub({}, status=500) as broken, QidoStub({}, status=404) as wrong:
        api = make(
            tmp_path,
            qido,
            dead={"kind": "dicomweb", "url": dead, "timeout_s": 5},
            broken={"kind": "dicomweb", "url": broken.url},
            wrong={"kind": "dicomweb", "url": wrong.url},
            silent={"kind": "dicom", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_ports(1)[0]},
        )
        unreachable = assert_problem(post(api, {"study_instance_uid": STUDY, "source": "dead"}), 503)
        assert "QIDO-RS" in unreachable["detail"]
        assert "ConnectionError" in unreachable["detail"]
        assert unreachable["detail"].startswith("source dead cannot be reached")
        assert assert_problem(post(api, {"study_instance_uid": STUDY, "source": "broken"}), 503)
        refused = assert_problem(post(api, {"study_instance_uid": STUDY, "source": "wrong"}), 502)
        assert "QIDO-RS" in refused["detail"]
        no_association = assert_problem(post(api, {"study_instance_uid": STUDY, "source": "silent"}), 503)
        assert "association not accepted" in no_association["detail"]
        unknown = assert_problem(post(api, {"study_instance_uid": "1.2.3.4", "source": "pacs"}), 404)
        assert "holds no series of study 1.2.3.4" in unknown["detail"]
    assert stored_jobs(api) == []
    assert api.queue.items == []


def test_the_key_is_required_and_a_stow_key_is_not_enough(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    body = {"study_instance_uid": STUDY, "series_instance_uid": SERIES[0], "source": "pacs"}
    with AsgiClient(api.app) as http:
        assert_problem(http.post("/jobs", json=body), 401)
        assert_problem(http.post("/jobs", json=body, headers={"Authorization": "Bearer nope"}), 401)
        assert_problem(http.post("/jobs", json=body, headers={"Authorization": f"Bearer {STOW_KEY}"}), 403)
    assert stored_jobs(api) == []
    assert api.queue.items == []


def test_the_openapi_document_names_the_sources_and_rules(tmp_path: Path, qido: QidoStub) -> None:
    api = make(
        tmp_path, qido, orthanc={"kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    )
    with AsgiClient(api.app) as http:
        document = http.get("/openapi.json").json()
    schema = document["components"]["schemas"]["PullRequest"]
    assert schema["properties"]["source"]["enum"] == ["orthanc", "pacs"]
    rules = next(v for v in schema["properties"]["rules"]["anyOf"] if v.get("type") == "array")
    assert "ct-chest-2d" in rules["items"]["enum"]
    assert all(example["source"] == "orthanc" for example in schema["examples"])
    operation = document["paths"]["/jobs"]["post"]
    assert {"200", "201", "401", "404", "409", "422", "502", "503"} <= set(operation["responses"])
