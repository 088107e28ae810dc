"""``POST /jobs`` with an inline action instead of rules: checked like a rules file's action and against
the settings, stored on every job it makes, named deterministically, replayed by its key. The queue is
the recording InlineQueue and the source a QIDO-RS stub (the pipeline run is in test_pipeline.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.rules_file import parse_rules
from config.rules_schema import Action
from tests.unit.service.api.apps import AUTH, ApiUnderTest, AsgiClient, make_api
from tests.unit.service.api.qido_stub import QidoStub
from tests.unit.service.api.test_app import assert_problem
from workers.job_rules import inline_rule_name, rule_for_job
from workers.store import get_job, list_jobs

STUDY = "1.2.826.0.1.3680043.8.498.20"
SERIES = ["1.2.826.0.1.3680043.8.498.20.1", "1.2.826.0.1.3680043.8.498.20.2"]
ACTION: dict[str, Any] = {
    "endpoint": "mip3d",
    "model": "3d",
    "prompts": ["liver", "left kidney"],
    "window": "soft_tissue",
    "destinations": ["archive"],
}
NO_RULES = parse_rules("version: 1\nrules: []\n")


@pytest.fixture
def qido() -> Iterator[QidoStub]:
    with QidoStub({STUDY: SERIES}) as stub:
        yield stub


def make(tmp_path: Path, qido: QidoStub) -> ApiUnderTest:
    endpoint = {"url": "http://127.0.0.1:9/score"}  # never called: the API only plans
    return make_api(
        tmp_path,
        sources={"pacs": {"kind": "dicomweb", "url": qido.url, "timeout_s": 10}},
        endpoints={"mip3d": {**endpoint, "model": "3d"}, "mip2d": {**endpoint, "model": "2d"}},
        destinations={
            "archive": {"kind": "dicom", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": 11112},
            "viewer": {"kind": "dicomweb", "url": "http://127.0.0.1:9/dicom-web"},
        },
    )


def post(api: ApiUnderTest, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {**AUTH} | ({"Idempotency-Key": key} if key is not None else {})
    with AsgiClient(api.app) as http:
        return http.post("/jobs", json=body, headers=headers)


def pull(action: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"study_instance_uid": STUDY, "source": "pacs", "action": action, **more}


def stored_jobs(api: ApiUnderTest) -> list[Any]:
    with api.store.session(readonly=True) as s:
        return list_jobs(s, limit=1000)


def test_an_inline_action_is_stored_on_one_job_per_series(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    response = post(api, pull(ACTION, priority="stat"))
    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert [j["series_instance_uid"] for j in jobs] == SERIES
    expected = Action.model_validate(ACTION).model_dump(mode="json")
    assert expected["prompts"] == ["liver", "left kidney"]
    assert expected["seg"] == {"type": "BINARY", "series_description": "", "series_number": 0}  # defaults
    name = inline_rule_name(Action.model_validate(ACTION))
    assert name.startswith("adhoc-")
    assert len(name) == len("adhoc-") + 12
    for job in jobs:
        assert (job["rule"], job["rules"]) == (name, [name])
        assert (job["endpoint"], job["model"], job["priority"]) == ("mip3d", "3d", "stat")
        assert job["action"] == expected
        with api.store.session(readonly=True) as s:
            stored = get_job(s, job["id"])
        assert stored.action == expected
        # what the pipeline will run: the stored action under the stored name, the rules file unasked
        rule = rule_for_job(stored, NO_RULES)
        assert rule is not None
        assert rule.name == name
        assert [tuple(g.prompts) for g in rule.action.groups] == [("liver", "left kidney")]
        assert rule.action.destinations == ("archive",)
    assert api.queue.items == [("pull", j["id"]) for j in jobs]


def test_the_rule_name_follows_the_action_not_its_spelling(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    first = post(api, pull(ACTION, series_instance_uid=SERIES[0]))
    # the same action written otherwise: another key order, upper case, a window's label, one destination
    respelled = {
        "destinations": "archive",
        "window": "Soft tissue",
        "prompts": ["liver", "left  kidney"],
        "model": "3D",
        "endpoint": "mip3d",
    }
    second = post(api, pull(respelled, series_instance_uid=SERIES[0]))
    other = post(api, pull({**ACTION, "prompts": ["liver"]}, series_instance_uid=SERIES[0]))
    assert [r.status_code for r in (first, second, other)] == [201, 201, 201]
    (a,), (b,), (c,) = (r.json()["jobs"] for r in (first, second, other))
    assert a["rule"] == b["rule"]  # the same SEG series UIDs for the same series
    assert a["action"] == b["action"]
    assert c["rule"] != a["rule"]
    assert c["rule"].startswith("adhoc-")


@pytest.mark.parametrize(
    ("action", "wanted"),
    [
        ({**ACTION, "endpoint": "nope"}, "action.endpoint: endpoint 'nope' is not configured (mip3d, mip2d)"),
        ({**ACTION, "endpoint": "mip2d"}, "action.model: model 3d, but endpoint 'mip2d' serves 2d"),
        (
            {**ACTION, "destinations": ["archive", "nowhere"]},
            "action.destinations.1: destination 'nowhere' is not configured (archive, viewer)",
        ),
    ],
)
def test_an_action_the_settings_cannot_run_is_422_naming_what_is_missing(
    tmp_path: Path, qido: QidoStub, action: dict[str, Any], wanted: str
) -> None:
    api = make(tmp_path, qido)
    problem = assert_problem(post(api, pull(action)), 422)
    assert problem["type"].endswith("invalid-pull-request")
    assert problem["detail"] == wanted
    assert stored_jobs(api) == []
    assert api.queue.items == []
    assert qido.requests == []


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        (pull({**ACTION, "prompts": ["liver & spleen"]}), "contains '&'"),
        (pull({**ACTION, "prompts": ["liver", "Liver"]}), "asked twice"),
        (pull({**ACTION, "window": "voi"}), "'voi' is a 2D notion"),
        (pull({**ACTION, "prompt_groups": [{"prompts": ["spleen"]}]}), "not both or neither"),
        (pull({k: v for k, v in ACTION.items() if k != "prompts"}), "not both or neither"),
        (pull({k: v for k, v in ACTION.items() if k != "destinations"}), "destinations"),
        (pull({**ACTION, "destinations": []}), "destinations"),
        (pull({**ACTION, "model": "4d"}), "model"),
        (pull({**ACTION, "prompt": ["liver"]}), "prompt"),
        (pull(ACTION, rules=["ct-chest-2d"]), "give rules or an action, not both"),
    ],
)
def test_an_action_a_rules_file_would_refuse_is_422(
    tmp_path: Path, qido: QidoStub, body: dict[str, Any], wanted: str
) -> None:
    api = make(tmp_path, qido)
    problem = assert_problem(post(api, body), 422)
    assert any("action" in error["loc"] for error in problem["errors"]), problem
    assert wanted in problem["detail"]
    assert stored_jobs(api) == []
    assert api.queue.items == []
    assert qido.requests == []


def test_a_replay_gives_the_same_jobs_and_another_action_is_409(tmp_path: Path, qido: QidoStub) -> None:
    api = make(tmp_path, qido)
    first = post(api, pull(ACTION), key="order-1")
    assert first.status_code == 201, first.text
    asked = len(qido.requests)
    again = post(api, pull(ACTION), key="order-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert len(qido.requests) == asked
    assert len(api.queue.items) == 2
    # the action is part of the body's fingerprint: other prompts under the same key are another request
    problem = assert_problem(post(api, pull({**ACTION, "prompts": ["spleen"]}), key="order-1"), 409)
    assert "Idempotency-Key" in problem["detail"]
    problem = assert_problem(post(api, {"study_instance_uid": STUDY, "source": "pacs"}, key="order-1"), 409)
    assert len(stored_jobs(api)) == 2


def test_the_openapi_document_offers_the_configured_endpoints_and_destinations(
    tmp_path: Path, qido: QidoStub
) -> None:
    with AsgiClient(make(tmp_path / "configured", qido).app) as http:
        schemas = http.get("/openapi.json").json()["components"]["schemas"]
    assert "action" in schemas["PullRequest"]["properties"]
    assert schemas["Action"]["properties"]["endpoint"]["enum"] == ["mip2d", "mip3d"]
    assert schemas["Action"]["properties"]["destinations"]["items"]["enum"] == ["archive", "viewer"]

    bare = make_api(tmp_path / "bare", sources={"pacs": {"kind": "dicomweb", "url": qido.url}})
    with AsgiClient(bare.app) as http:
        schemas = http.get("/openapi.json").json()["components"]["schemas"]
    assert "action" not in schemas["PullRequest"]["properties"]  # nothing an action could name
    problem = assert_problem(post(bare, pull(ACTION)), 422)
    assert "endpoint 'mip3d' is not configured (none configured)" in problem["detail"]


def test_an_inline_action_keeps_its_name_when_it_leaves_phases_at_the_default() -> None:
    """Jobs made before ``phases`` existed name their rule by a digest without it: the same action
    must give the same name (so the same SEG series) after the upgrade; another choice another name."""
    import hashlib
    import json

    document = Action.model_validate(ACTION).model_dump(mode="json")
    del document["phases"]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    before = f"adhoc-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"
    assert inline_rule_name(Action.model_validate(ACTION)) == before
    assert inline_rule_name(Action.model_validate({**ACTION, "phases": "all"})) == before
    assert inline_rule_name(Action.model_validate({**ACTION, "phases": "last"})) != before
