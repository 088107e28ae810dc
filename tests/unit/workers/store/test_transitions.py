"""The lifecycle table itself (no database)."""

from __future__ import annotations

import itertools

from workers.jobs import FINAL_STATES, JobState
from workers.store import ALLOWED_TRANSITIONS, is_allowed


def test_every_state_has_a_row_and_final_states_have_no_way_out() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobState)
    assert all(not ALLOWED_TRANSITIONS[state] for state in FINAL_STATES)


def test_every_final_state_is_reachable_and_every_live_state_can_fail() -> None:
    reachable = set().union(*ALLOWED_TRANSITIONS.values())
    assert reachable >= FINAL_STATES
    live = set(JobState) - FINAL_STATES
    assert all(is_allowed(state, JobState.FAILED) for state in live)
    assert JobState.RECEIVED not in reachable  # nothing goes back to received


def test_the_happy_path_and_the_requeue() -> None:
    path = [JobState.RECEIVED, JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING, JobState.DONE]
    assert all(is_allowed(a, b) for a, b in itertools.pairwise(path))
    assert is_allowed(JobState.RUNNING, JobState.QUEUED)
    assert not is_allowed(JobState.QUEUED, JobState.QUEUED)
    assert not is_allowed(JobState.DONE, JobState.QUEUED)  # retry_job, not transition
