"""The repository against a real database: each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from tests.unit.workers.store.backends import new_uid
from tests.unit.workers.store.job_factory import move, new_job, race
from workers.jobs import JobState, Priority, Route, Stage
from workers.store import (
    InvalidTransitionError,
    JobNotFoundError,
    JobView,
    StaleJobError,
    Store,
    audit_for,
    ensure_job,
    get_job,
    list_jobs,
    retry_job,
    transition,
    update_job,
)
from workers.store.models import Job

S = JobState


def test_a_created_job_reads_back_whole(store: Store) -> None:
    study, series = new_uid(), new_uid()
    job = new_job(
        store,
        study_instance_uid=study,
        series_instance_uid=series,
        calling_ae_title="CT_SCANNER",
        completion_reason="idle 30 s",
        rule="ct-abdomen",
        rules=["ct-abdomen", "ct-any"],
        endpoint="mip-3d",
        model="3d",
        priority=Priority.STAT,
        spool_path=f"incoming/{study}/{series}",
    )
    with store.session(readonly=True) as session:
        again = get_job(session, job.id)
        audit = audit_for(session, job.id)
    assert again == job
    assert (again.state, again.stage, again.attempts, again.version) == (S.RECEIVED, None, 0, 1)
    assert again.route is Route.DIMSE
    assert again.priority is Priority.STAT
    assert again.rules == ("ct-abdomen", "ct-any")
    assert again.created_at.tzinfo is UTC
    assert again.updated_at == again.created_at
    assert abs(datetime.now(UTC) - again.created_at) < timedelta(minutes=1)
    assert [(entry.event, entry.actor, entry.to_state) for entry in audit] == [("created", "scp", S.RECEIVED)]


def test_an_unknown_job_is_not_found(store: Store) -> None:
    with store.session() as session:
        with pytest.raises(JobNotFoundError, match="not found"):
            get_job(session, "no-such-job")
        with pytest.raises(JobNotFoundError):
            transition(session, "no-such-job", S.QUEUED, actor="api")


def test_an_idempotency_key_gives_back_the_same_job(store: Store) -> None:
    key = f"stow:{new_uid()}"
    first = new_job(store, idempotency_key=key)
    with store.session() as session:
        again, created = ensure_job(
            session,
            actor="api",
            source="other",
            route=Route.API,
            study_instance_uid=new_uid(),
            series_instance_uid=new_uid(),
            instance_count=1,
            idempotency_key=key,
        )
    assert not created
    assert again == first
    with store.session(readonly=True) as session:
        assert [entry.event for entry in audit_for(session, first.id)] == ["created"]


def test_racing_creators_with_one_key_make_one_job(store: Store) -> None:
    key, study = f"dimse:{new_uid()}", new_uid()

    def create() -> str:
        return new_job(store, idempotency_key=key, study_instance_uid=study).id

    outcomes = race(6, create)
    assert all(isinstance(outcome, str) for outcome in outcomes), outcomes
    assert len(set(outcomes)) == 1
    with store.session(readonly=True) as session:
        count = session.scalar(select(func.count()).select_from(Job).where(Job.idempotency_key == key))
        assert count == 1
        assert len(list_jobs(session, study_uid=study)) == 1


def test_a_job_walks_its_lifecycle_with_an_audit_trail(store: Store) -> None:
    job = new_job(store)
    running = move(store, job.id, S.QUEUED, S.RUNNING, stage=Stage.LOAD)
    assert (running.state, running.stage, running.attempts, running.version) == (S.RUNNING, Stage.LOAD, 1, 3)
    assert running.updated_at >= job.updated_at
    done = move(store, job.id, S.DELIVERING, S.DONE)
    assert done.is_final
    assert done.stage is Stage.LOAD
    assert done.attempts == 1
    with store.session(readonly=True) as session:
        trail = [(e.event, e.from_state, e.to_state) for e in audit_for(session, job.id)]
    assert trail == [
        ("created", None, S.RECEIVED),
        ("transition", S.RECEIVED, S.QUEUED),
        ("transition", S.QUEUED, S.RUNNING),
        ("transition", S.RUNNING, S.DELIVERING),
        ("transition", S.DELIVERING, S.DONE),
    ]


@pytest.mark.parametrize(
    ("path", "to_state"),
    [((), S.DONE), ((), S.RUNNING), ((S.QUEUED,), S.DELIVERING), ((S.QUEUED, S.RUNNING), S.RECEIVED)],
)
def test_a_move_the_lifecycle_lacks_is_refused(store: Store, path: tuple[JobState, ...], to_state: S) -> None:
    job = new_job(store)
    if path:
        move(store, job.id, *path)
    with store.session() as session, pytest.raises(InvalidTransitionError, match="is not allowed"):
        transition(session, job.id, to_state, actor="api")


def test_a_final_job_leaves_only_through_retry(store: Store) -> None:
    job = new_job(store)
    move(store, job.id, S.SKIPPED)
    with store.session() as session, pytest.raises(InvalidTransitionError, match="use retry_job"):
        transition(session, job.id, S.QUEUED, actor="api")
    with store.session() as session, pytest.raises(InvalidTransitionError, match="only a final job"):
        retry_job(session, new_job(store).id, actor="api")


def test_a_failure_keeps_its_stage_and_retry_keeps_the_attempts(store: Store) -> None:
    job = new_job(store)
    move(store, job.id, S.QUEUED, S.RUNNING)
    failed = move(store, job.id, S.FAILED, stage=Stage.INFER, error="endpoint mip-3d: 503 after 6 attempts")
    assert (failed.error_stage, failed.stage, failed.attempts) == (Stage.INFER, Stage.INFER, 1)
    assert failed.error
    assert "503" in failed.error
    with store.session() as session:
        queued = retry_job(session, job.id, actor="api")
    assert (queued.state, queued.attempts, queued.error, queued.error_stage) == (S.QUEUED, 1, None, None)
    again = move(store, job.id, S.RUNNING)
    assert again.attempts == 2
    with store.session(readonly=True) as session:
        retry = [entry for entry in audit_for(session, job.id) if entry.event == "retry"]
    assert len(retry) == 1
    assert retry[0].actor == "api"
    assert retry[0].from_state is S.FAILED
    assert retry[0].to_state is S.QUEUED
    assert retry[0].detail is not None
    assert "503" in retry[0].detail["previous_error"]


def test_success_clears_a_transient_error(store: Store) -> None:
    job = new_job(store)
    move(store, job.id, S.QUEUED, S.RUNNING)
    requeued = move(store, job.id, S.QUEUED, stage=Stage.INFER, error="timeout")
    assert requeued.error == "timeout"
    assert move(store, job.id, S.RUNNING, S.NO_FINDINGS).error is None


def test_expected_state_or_version_guards_a_move(store: Store) -> None:
    job = new_job(store)
    move(store, job.id, S.QUEUED)
    with store.session() as session, pytest.raises(StaleJobError, match="expected received, found queued"):
        transition(session, job.id, S.REJECTED, actor="api", expected_state=S.RECEIVED)
    with store.session() as session, pytest.raises(StaleJobError, match="expected version 1, found 2"):
        transition(session, job.id, S.RUNNING, actor="api", expected_version=job.version)
    assert move(store, job.id, S.RUNNING, expected_state=S.QUEUED, expected_version=2).version == 3


def test_of_two_sessions_racing_one_move_exactly_one_wins(store: Store) -> None:
    job = new_job(store)
    move(store, job.id, S.QUEUED)

    def claim() -> JobView:
        return move(store, job.id, S.RUNNING)

    outcomes = race(4, claim)
    winners = [outcome for outcome in outcomes if isinstance(outcome, JobView)]
    losers = [outcome for outcome in outcomes if not isinstance(outcome, JobView)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(loser, StaleJobError | InvalidTransitionError) for loser in losers), losers
    with store.session(readonly=True) as session:
        final = get_job(session, job.id)
        moves = [e for e in audit_for(session, job.id) if e.to_state is S.RUNNING]
    assert (final.state, final.attempts, final.version, len(moves)) == (S.RUNNING, 1, 3, 1)


def test_list_jobs_filters_and_pages(store: Store) -> None:
    study = new_uid()
    first = new_job(store, study_instance_uid=study)
    since = datetime.now(UTC)
    second = new_job(store, study_instance_uid=study)
    third = new_job(store, study_instance_uid=study)
    move(store, third.id, S.QUEUED)
    new_job(store)  # another study
    with store.session(readonly=True) as session:
        assert [j.id for j in list_jobs(session, study_uid=study)] == [third.id, second.id, first.id]
        assert [j.id for j in list_jobs(session, study_uid=study, state=S.RECEIVED)] == [second.id, first.id]
        queued_or_done = list_jobs(session, study_uid=study, state=[S.QUEUED, S.DONE])
        assert [j.id for j in queued_or_done] == [third.id]
        assert [j.id for j in list_jobs(session, study_uid=study, since=since)] == [third.id, second.id]
        eastern = since.astimezone(timezone(timedelta(hours=-5)))  # the same instant, another offset
        assert [j.id for j in list_jobs(session, study_uid=study, since=eastern)] == [third.id, second.id]
        assert [j.id for j in list_jobs(session, study_uid=study, limit=1, offset=1)] == [second.id]
        assert [j.id for j in list_jobs(session, series_uid=first.series_instance_uid)] == [first.id]
        with pytest.raises(ValueError, match="naive"):
            list_jobs(session, since=since.replace(tzinfo=None))


def test_update_job_records_what_the_pipeline_learned(store: Store) -> None:
    job = new_job(store)
    with store.session() as session:
        updated = update_job(
            session, job.id, actor="worker:test/1", rule="ct-liver", rules=["ct-liver"], endpoint="mip-3d"
        )
        with pytest.raises(ValueError, match="relative"):
            update_job(session, job.id, actor="api", seg_path="/var/lib/mip-gateway/seg/x.dcm")
    assert (updated.rule, updated.rules, updated.endpoint, updated.version) == (
        "ct-liver",
        ("ct-liver",),
        "mip-3d",
        1,
    )
    with store.session(readonly=True) as session:
        assert get_job(session, job.id) == updated
        assert [entry.event for entry in audit_for(session, job.id)] == ["created", "updated"]
