"""The app in process (ASGI): problem JSON everywhere, keys on every route but /healthz, request ids."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from dicom_io.testing.phantoms import volume_phantom
from service.api import NoApiKeysError
from service.api.problems import PROBLEM_MEDIA_TYPE
from tests.unit.service.api.apps import AUTH, MULTIPART, STOW_KEY, AsgiClient, encode, make_api, multipart
from workers.store import Store, open_store


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:mip-gateway:problem:")
    assert body["title"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_healthz_needs_no_key_and_everything_else_does(tmp_path: Path) -> None:
    api = make_api(tmp_path)
    with AsgiClient(api.app) as http:
        assert http.get("/healthz").json() == {"status": "alive"}
        for method, path in [
            ("GET", "/jobs"),
            ("GET", "/jobs/x"),
            ("GET", "/jobs/x/seg"),
            ("GET", "/jobs/x/preview.png"),
            ("POST", "/jobs/x/retry"),
            ("POST", "/jobs/retry?state=failed"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("POST", "/dicomweb/studies"),
            ("POST", "/dicomweb/studies/1.2.3"),
        ]:
            response = http.request(method, path)
            body = assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization" in body["detail"]
            assert_problem(http.request(method, path, headers={"Authorization": "Bearer nope"}), 401)
        assert_problem(http.get("/jobs", headers={"Authorization": f"Bearer {STOW_KEY}"}), 403)


def test_problems_for_unknown_things_and_bad_parameters(tmp_path: Path) -> None:
    api = make_api(tmp_path)
    with AsgiClient(api.app) as http:
        assert assert_problem(http.get("/jobs/no-such-job", headers=AUTH), 404)["type"].endswith(
            "job-not-found"
        )
        assert_problem(http.get("/no/such/route", headers=AUTH), 404)
        assert_problem(http.delete("/jobs", headers=AUTH), 405)
        body = assert_problem(http.get("/jobs?limit=0", headers=AUTH), 422)
        assert body["errors"][0]["loc"] == ["query", "limit"]
        assert_problem(http.get("/jobs?state=bogus", headers=AUTH), 422)
        assert_problem(http.post("/jobs/retry?state=queued", headers=AUTH), 422)
        assert_problem(http.post("/dicomweb/studies/not-a-uid", headers=AUTH), 400)


def test_request_ids_are_echoed_and_logged(tmp_path: Path) -> None:
    api = make_api(tmp_path)
    with AsgiClient(api.app) as http, capture_logs(processors=[merge_contextvars]) as logs:
        given = http.get("/jobs", headers={**AUTH, "X-Request-ID": "trace-42"})
        made = http.get("/jobs", headers={**AUTH, "X-Request-ID": "bad id with spaces"})
    assert given.headers["x-request-id"] == "trace-42"
    assert made.headers["x-request-id"] != "bad id with spaces"
    lines = [entry for entry in logs if entry["event"] == "http.request"]
    assert [(e["request_id"], e["route"], e["status"]) for e in lines] == [
        ("trace-42", "/jobs", 200),
        (made.headers["x-request-id"], "/jobs", 200),
    ]


def test_without_keys_the_app_refuses_unless_told(tmp_path: Path) -> None:
    with pytest.raises(NoApiKeysError, match="--insecure-no-auth"):
        make_api(tmp_path, api={})
    api = make_api(tmp_path / "open", api={}, allow_no_auth=True)
    with AsgiClient(api.app) as http:
        assert http.get("/jobs").status_code == 200


class _BrokenStore(Store):
    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Any]:
        raise RuntimeError("secret internals: /var/lib/password")
        yield


def test_an_unexpected_error_is_a_500_problem_without_internals(tmp_path: Path) -> None:
    good = open_store(f"sqlite+pysqlite:///{tmp_path / 'j.sqlite3'}", migrate=True)
    api = make_api(tmp_path, store=_BrokenStore(good.engine))
    with AsgiClient(api.app) as http, capture_logs() as logs:
        body = assert_problem(http.get("/jobs", headers=AUTH), 500)
    assert "secret" not in str(body)
    assert any(entry["event"] == "api.unexpected_error" for entry in logs)


def test_an_unreachable_store_is_a_503_problem(tmp_path: Path) -> None:
    unreachable = open_store("postgresql+psycopg://nobody@127.0.0.1:1/none")
    api = make_api(tmp_path, store=unreachable)
    with AsgiClient(api.app) as http:
        body = assert_problem(http.get("/jobs", headers=AUTH), 503)
        assert "job store" in body["detail"]
        ready = http.get("/readyz", headers=AUTH)
    assert ready.status_code == 503
    failed = {check["name"] for check in ready.json()["checks"] if not check["ok"]}
    assert failed == {"database"}


def test_stow_in_process_and_its_media_type_problems(tmp_path: Path) -> None:
    api = make_api(tmp_path)
    phantom = volume_phantom(slices=3, seed=5)
    body = multipart([encode(ds) for ds in phantom.datasets])
    stow = {"Authorization": f"Bearer {STOW_KEY}"}
    with AsgiClient(api.app) as http:
        ok = http.post("/dicomweb/studies", content=body, headers={**stow, "Content-Type": MULTIPART})
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "application/dicom+json"
        assert len(ok.json()["00081199"]["Value"]) == 3
        wrong = http.post(
            "/dicomweb/studies", content=body, headers={**stow, "Content-Type": "application/dicom"}
        )
        assert_problem(wrong, 415)
        json_parts = multipart([("application/dicom+json", b"[]")])
        refused = http.post(
            "/dicomweb/studies", content=json_parts, headers={**stow, "Content-Type": MULTIPART}
        )
        assert_problem(refused, 415)
        empty = http.post("/dicomweb/studies", content=b"--x--", headers={**stow, "Content-Type": MULTIPART})
        assert_problem(empty, 400)
    assert api.queue.items == [("process", api.queue.items[0][1])]


def test_stow_when_the_intake_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = make_api(tmp_path)
    datasets = volume_phantom(slices=2, seed=6).datasets
    body = multipart([encode(ds) for ds in datasets])
    headers = {**AUTH, "Content-Type": MULTIPART}

    def down(*args: object) -> None:
        raise RuntimeError("database is locked")

    with AsgiClient(api.app) as http:
        monkeypatch.setattr(api.intake, "request_complete", down)
        queued = http.post("/dicomweb/studies", content=body, headers=headers)
        assert "resend" in assert_problem(queued, 503)["detail"]
        folder = api.data.incoming_series(datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID)
        assert len(list(folder.glob("*.dcm"))) == 2  # stored all the same: a resend is safe
        monkeypatch.setattr(api.intake, "received", down)
        handed = http.post("/dicomweb/studies", content=body, headers=headers)
    assert handed.status_code == 409
    reasons = [item["00081197"]["Value"][0] for item in handed.json()["00081198"]["Value"]]
    assert reasons == [0x0110, 0x0110]


def test_readiness_does_not_wait_for_a_check_that_hangs(tmp_path: Path) -> None:
    import threading
    import time

    from service.api.health import Readiness

    release = threading.Event()

    class Hanging(Readiness):
        def checks(self):  # type: ignore[no-untyped-def]
            return {**super().checks(), "stuck": lambda: str(release.wait(30))}

    api = make_api(tmp_path)
    readiness = Hanging(api.settings, api.store, api.app.state.context.readiness.broker)
    started = time.perf_counter()
    try:
        results = {r.name: r for r in readiness.run(deadline_s=0.3)}
    finally:
        release.set()
    assert time.perf_counter() - started < 2
    assert not results["stuck"].ok
    assert "no answer within 0.3 s" in results["stuck"].detail
    assert results["database"].ok
