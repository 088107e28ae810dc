"""The sweeper re-queues what nobody has touched for a lease, and only that (real SQLite store)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from config.settings import Settings
from workers.context import build_deps
from workers.jobs import JobState, Priority, Route
from workers.rules_loader import RulesSource
from workers.store import create_job, open_store, transition
from workers.sweeper import sweep


class Queue:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def process(self, job_id: str, priority: Priority) -> None:
        self.calls.append(("process", job_id))

    def deliver(self, job_id: str, destination: str) -> None:
        self.calls.append(("deliver", job_id))

    def pull(self, job_id: str) -> None:
        self.calls.append(("pull", job_id))


def _job(s: object, n: int, route: Route, state: JobState) -> str:
    job = create_job(
        s,  # type: ignore[arg-type]
        actor="test",
        source="pacs" if route is Route.API else "CT1",
        route=route,
        study_instance_uid="1.2.3",
        series_instance_uid=f"1.2.3.{n}",
        instance_count=0,
        state=state,
    )
    return job.id


def test_stale_work_is_queued_again_by_its_kind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, visibility_timeout_s=60)
    store = open_store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}", migrate=True)
    queue = Queue()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n")
    deps = build_deps(settings, store, queue, actor="sweeper", rules=RulesSource(rules))
    with store.session() as s:
        pull = _job(s, 1, Route.API, JobState.RECEIVED)  # POST /jobs, its pull task lost
        other = _job(s, 2, Route.DIMSE, JobState.RECEIVED)  # not a pull: none of the sweeper's business
        queued = _job(s, 3, Route.DIMSE, JobState.QUEUED)
        running = _job(s, 4, Route.STOW, JobState.QUEUED)
        transition(s, running, JobState.RUNNING, actor="worker")
    try:
        assert sweep(deps) == 0  # nothing is older than a lease yet
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
        assert sweep(deps, now=later) == 3
        assert sorted(queue.calls) == sorted([("pull", pull), ("process", queued), ("process", running)])
        assert other not in {job_id for _, job_id in queue.calls}
    finally:
        store.close()
