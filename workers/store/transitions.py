"""Which state a job may move to from which: the whole lifecycle as data.

Final states have no way out here: only :func:`workers.store.repository.retry_job` puts a final job
back to ``queued`` (explicitly, audited, attempts kept). ``running``/``delivering`` → ``queued`` is
the requeue of a job whose worker was lost or whose error was transient.
"""

from __future__ import annotations

from collections.abc import Mapping

from workers.jobs import FINAL_STATES, JobState

__all__ = ["ALLOWED_TRANSITIONS", "is_allowed"]

_S = JobState

ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    _S.RECEIVED: frozenset({_S.QUEUED, _S.REJECTED, _S.SKIPPED, _S.FAILED}),
    _S.QUEUED: frozenset({_S.RUNNING, _S.REJECTED, _S.SKIPPED, _S.FAILED}),
    _S.RUNNING: frozenset({_S.DELIVERING, _S.NO_FINDINGS, _S.FAILED, _S.REJECTED, _S.SKIPPED, _S.QUEUED}),
    _S.DELIVERING: frozenset({_S.DONE, _S.DELIVERY_FAILED, _S.FAILED, _S.QUEUED}),
    **{state: frozenset() for state in FINAL_STATES},
}


def is_allowed(from_state: JobState, to_state: JobState) -> bool:
    return to_state in ALLOWED_TRANSITIONS[from_state]
