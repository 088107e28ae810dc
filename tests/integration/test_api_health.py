"""/healthz, /readyz and queue depths over real HTTP, with real and broken peers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from service.mock_endpoint import MockEndpointServer
from tests.helpers import redis_test_url
from tests.peers import free_ports
from tests.unit.service.api.apps import AUTH, KEY, ApiServer, make_api
from workers.celery_app import create_celery
from workers.jobs import Priority
from workers.store import open_store
from workers.tasks import CeleryEnqueuer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mock() -> Iterator[MockEndpointServer]:
    with MockEndpointServer() as server:
        yield server


def settings(tmp_path: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "api": {"keys": [KEY]},
        "listener": {"spool_reserve_bytes": 0},
    }
    return Settings(**(base | values))


def checks(response: httpx.Response) -> dict[str, bool]:
    return {check["name"]: check["ok"] for check in response.json()["checks"]}


def test_ready_when_every_peer_answers(tmp_path: Path, mock: MockEndpointServer) -> None:
    api = make_api(
        tmp_path, settings=settings(tmp_path, endpoints={"mip3d": {"url": mock.score_url, "model": "3d"}})
    )
    with ApiServer(api.app) as server:
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
        ready = httpx.get(f"{server.url}/readyz", headers=AUTH)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert checks(ready) == {"broker": True, "database": True, "spool": True, "endpoint:mip3d": True}


def test_not_ready_names_what_is_down(tmp_path: Path, mock: MockEndpointServer) -> None:
    (dead,) = free_ports(1)
    values = settings(
        tmp_path,
        broker_url=f"redis://127.0.0.1:{dead}/0",
        endpoints={
            "up": {"url": mock.score_url, "model": "3d"},
            "down": {"url": f"http://127.0.0.1:{dead}/score", "model": "2d"},
        },
    )
    store = open_store(f"postgresql+psycopg://nobody@127.0.0.1:{dead}/none")
    api = make_api(tmp_path, settings=values, store=store)
    with ApiServer(api.app) as server:
        ready = httpx.get(f"{server.url}/readyz", headers=AUTH, timeout=30)
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive all the same
        metrics = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30)
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert checks(ready) == {
        "broker": False,
        "database": False,
        "spool": True,
        "endpoint:up": True,
        "endpoint:down": False,
    }
    details = {c["name"]: c["detail"] for c in ready.json()["checks"]}
    assert "Connection" in details["broker"] or "refused" in details["broker"].lower()
    # a scrape with both sources down still answers, and says so
    assert metrics.status_code == 200
    scrape_ok = {
        s.labels["source"]: s.value
        for f in text_string_to_metric_families(metrics.text)
        if f.name == "mipgw_scrape_ok"
        for s in f.samples
    }
    assert scrape_ok == {"store": 0.0, "broker": 0.0}


@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_queue_depth_counts_waiting_tasks(tmp_path: Path, broker: str) -> None:
    values = settings(tmp_path, broker_url=redis_test_url(10, 6) if broker == "redis" else None)
    api = make_api(tmp_path, settings=values)
    celery = create_celery(values)
    try:
        enqueuer = CeleryEnqueuer(celery)
        for n in range(3):
            enqueuer.process(f"job-{n}", Priority.ROUTINE)
        enqueuer.process("urgent", Priority.STAT)
        with ApiServer(api.app) as server:
            text = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30).text
    finally:
        if broker == "redis":
            import redis

            redis.Redis.from_url(values.broker_url or "").flushdb()
        celery.close()
    depths = {
        s.labels["queue"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "mipgw_queue_depth"
        for s in f.samples
    }
    assert depths == {"mipgw.stat": 1.0, "mipgw.routine": 3.0, "mipgw.delivery": 0.0}


def test_the_command_refuses_to_start_without_keys(tmp_path: Path) -> None:
    import subprocess
    import sys

    cli = str(Path(sys.executable).with_name("mip-gateway"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPGW_")}
    env["MIPGW_DATA_DIR"] = str(tmp_path / "data")
    refused = subprocess.run([cli, "api", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--insecure-no-auth" in refused.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything
