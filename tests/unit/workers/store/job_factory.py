"""Jobs for the store's tests: created with fresh UIDs, moved through states, raced in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tests.unit.workers.store.backends import new_uid
from workers.jobs import JobState, Route
from workers.store import JobView, Store, create_job, transition

__all__ = ["move", "new_job", "race"]

T = TypeVar("T")


def new_job(store: Store, **fields: Any) -> JobView:
    values: dict[str, Any] = {
        "actor": "scp",
        "source": "CT_SCANNER",
        "route": Route.DIMSE,
        "study_instance_uid": new_uid(),
        "series_instance_uid": new_uid(),
        "instance_count": 120,
        **fields,
    }
    with store.session() as session:
        return create_job(session, **values)


def move(store: Store, job_id: str, *states: JobState, **kwargs: Any) -> JobView:
    view = None
    with store.session() as session:
        for state in states:
            view = transition(session, job_id, state, actor="worker:test/1", **kwargs)
    assert view is not None
    return view


def race(count: int, work: Callable[[], T]) -> list[T | BaseException]:
    """Run ``work`` in ``count`` threads released together; results or the exceptions raised."""
    barrier = threading.Barrier(count)

    def one() -> T | BaseException:
        barrier.wait()
        try:
            return work()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: one(), range(count)))
