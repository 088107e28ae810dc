"""Stage checkpoints, results, deliveries, first-run datetimes and bulk retry, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.unit.workers.store.backends import new_uid
from tests.unit.workers.store.job_factory import move, new_job
from workers.jobs import DeliveryState, JobState, Stage
from workers.store import (
    ResultConflictError,
    SegmentRecord,
    StageNotStartedError,
    Store,
    audit_for,
    completed_stages,
    deliveries_for,
    get_job,
    jobs_to_retry,
    record_result,
    result_for,
    retry_job,
    set_first_run_at,
    stage_finished,
    stage_started,
    stages_for,
    upsert_delivery,
)
from workers.store.models import Result, Segment

S = JobState
D = DeliveryState

SEGMENTS = (
    SegmentRecord("liver", "liver", 51234, False, segment_number=1, volume_ml=1480.5),
    SegmentRecord("liver tumor", "liver tumor", 0, True),
)


def test_stage_checkpoints_let_a_redelivered_task_skip_done_stages(store: Store) -> None:
    job = new_job(store)
    with store.session() as session:
        stage_started(session, job.id, Stage.LOAD, attempt=1)
        loaded = stage_finished(session, job.id, Stage.LOAD)
        stage_started(session, job.id, Stage.CONVERT, attempt=1)
    assert loaded.finished_at is not None
    assert loaded.seconds is not None
    assert loaded.seconds >= 0
    with store.session() as session:
        assert completed_stages(session, job.id) == {Stage.LOAD}
        assert get_job(session, job.id).stage is Stage.CONVERT
        # redelivered: the same attempt of convert starts over, then finishes; finishing twice is a no-op
        restarted = stage_started(session, job.id, Stage.CONVERT, attempt=1)
        assert restarted.finished_at is None
        first = stage_finished(session, job.id, Stage.CONVERT)
        assert stage_finished(session, job.id, Stage.CONVERT, attempt=1) == first
        stage_started(session, job.id, Stage.INFER, attempt=1)
        stage_started(session, job.id, Stage.INFER, attempt=2)
        stage_finished(session, job.id, Stage.INFER)
        with pytest.raises(StageNotStartedError, match="seg finished but never started"):
            stage_finished(session, job.id, Stage.SEG)
    with store.session(readonly=True) as session:
        assert completed_stages(session, job.id) == {Stage.LOAD, Stage.CONVERT, Stage.INFER}
        history = [
            (view.stage, view.attempt, view.finished_at is not None) for view in stages_for(session, job.id)
        ]
    assert history == [
        (Stage.LOAD, 1, True),
        (Stage.CONVERT, 1, True),
        (Stage.INFER, 1, False),
        (Stage.INFER, 2, True),
    ]


def test_retry_from_a_stage_drops_that_checkpoint_and_the_later_ones(store: Store) -> None:
    job = new_job(store)
    with store.session() as session:
        for stage in (Stage.LOAD, Stage.CONVERT, Stage.INFER):
            stage_started(session, job.id, stage, attempt=1)
            stage_finished(session, job.id, stage)
    move(store, job.id, S.QUEUED, S.RUNNING, S.FAILED, stage=Stage.SEG, error="geometry")
    with store.session() as session:
        retry_job(session, job.id, actor="api", from_stage=Stage.INFER)
        assert completed_stages(session, job.id) == {Stage.LOAD, Stage.CONVERT}
        detail = audit_for(session, job.id)[-1].detail
    assert detail is not None
    assert detail["cleared_stages"] == ["infer"]


def test_unknown_job_stage_is_refused(store: Store) -> None:
    with store.session() as session, pytest.raises(LookupError):
        stage_started(session, "no-such-job", Stage.LOAD, attempt=1)


def test_recording_the_same_seg_twice_adds_nothing(store: Store) -> None:
    job, other = new_job(store), new_job(store)
    sop, series = new_uid(), new_uid()
    seg_path = f"seg/{job.study_instance_uid}/{series}/{sop}.dcm"
    with store.session() as session:
        assert result_for(session, job.id) is None
        first = record_result(session, job.id, sop, series, SEGMENTS, seg_path=seg_path)
    with store.session() as session:
        again = record_result(session, job.id, sop, series, SEGMENTS, seg_path=seg_path)
        with pytest.raises(ResultConflictError, match="already recorded"):
            record_result(session, other.id, sop, series, SEGMENTS)
    assert again == first
    assert first.segments == SEGMENTS
    assert first.job_id == job.id
    with store.session(readonly=True) as session:
        result_ids = select(Result.id).where(Result.seg_sop_instance_uid == sop)
        assert session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job.id)) == 1
        assert session.scalar(select(func.count()).where(Segment.result_id.in_(result_ids))) == 2
        assert result_for(session, job.id) == first
        assert get_job(session, job.id).seg_path == seg_path
        assert [entry.event for entry in audit_for(session, job.id)].count("result") == 1


def test_delivery_attempts_count_sends(store: Store) -> None:
    job = new_job(store)

    def deliver(destination: str, state: D, error: str | None = None) -> tuple[D, int, str | None]:
        with store.session() as session:
            view = upsert_delivery(session, job.id, destination, state=state, error=error)
        return view.state, view.attempts, view.last_error

    assert deliver("pacs", D.PENDING) == (D.PENDING, 0, None)
    assert deliver("pacs", D.SENDING) == (D.SENDING, 1, None)
    assert deliver("pacs", D.FAILED, "association rejected") == (D.FAILED, 1, "association rejected")
    assert deliver("pacs", D.SENDING) == (D.SENDING, 2, "association rejected")
    assert deliver("pacs", D.DELIVERED) == (D.DELIVERED, 2, None)
    assert deliver("archive", D.FAILED, "timeout") == (D.FAILED, 1, "timeout")  # unannounced attempt
    assert deliver("archive", D.FAILED, "timeout") == (D.FAILED, 2, "timeout")
    with store.session(readonly=True) as session:
        views = deliveries_for(session, job.id)
        events = [entry.event for entry in audit_for(session, job.id)]
    assert [(v.destination, v.state, v.attempts) for v in views] == [
        ("archive", D.FAILED, 2),
        ("pacs", D.DELIVERED, 2),
    ]
    assert views[1].delivered_at is not None
    assert views[0].delivered_at is None
    assert events.count("delivery") == 7


def test_first_run_at_is_set_once(store: Store) -> None:
    job = new_job(store)
    first = datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    with store.session() as session:
        assert set_first_run_at(session, job.id, first) == first
        assert set_first_run_at(session, job.id, first + timedelta(hours=1)) == first
        with pytest.raises(ValueError, match="naive"):
            set_first_run_at(session, job.id, datetime(2025, 3, 1))
    move(store, job.id, S.QUEUED, S.RUNNING, S.FAILED, error="x")
    with store.session() as session:
        retry_job(session, job.id, actor="api")
        assert get_job(session, job.id).first_run_at == first


def test_jobs_to_retry_lists_one_final_state_for_replay(store: Store) -> None:
    since = datetime.now(UTC)
    failed = [new_job(store) for _ in range(3)]
    for job in failed:
        move(store, job.id, S.QUEUED, S.RUNNING, S.FAILED, error="endpoint down")
    delivery_failed = new_job(store)
    move(store, delivery_failed.id, S.QUEUED, S.RUNNING, S.DELIVERING, S.DELIVERY_FAILED)
    with store.session() as session:
        replay = jobs_to_retry(session, S.FAILED, since=since)
        assert [job.id for job in replay] == [job.id for job in failed]  # oldest first
        assert [job.id for job in jobs_to_retry(session, S.DELIVERY_FAILED, since=since)] == [
            delivery_failed.id
        ]
        for job in replay:
            retry_job(session, job.id, actor="cli")
        assert jobs_to_retry(session, S.FAILED, since=since) == []
        with pytest.raises(ValueError, match="not a final state"):
            jobs_to_retry(session, S.RUNNING)
