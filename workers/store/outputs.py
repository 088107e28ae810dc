"""What a job produced and where it went: the SEG with its segments, and one delivery per destination."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from workers.jobs import DeliveryState
from workers.store.audit import append_audit, worker_actor
from workers.store.columns import utcnow
from workers.store.errors import ResultConflictError
from workers.store.intake import relative_path
from workers.store.models import Delivery, Result, Segment
from workers.store.rows import insert_unless_exists, load_job
from workers.store.views import DeliveryView, ResultView, SegmentRecord

__all__ = ["deliveries_for", "record_result", "result_for", "upsert_delivery"]

# a delivery attempt is counted when it starts, or when it ends without having been announced
_ENDS = frozenset({DeliveryState.DELIVERED, DeliveryState.FAILED})


def record_result(
    session: Session,
    job_id: str,
    seg_sop_instance_uid: str,
    seg_series_instance_uid: str,
    segments: Sequence[SegmentRecord],
    *,
    seg_path: str | None = None,
    actor: str | None = None,
) -> ResultView:
    """Record the SEG written for the job; the same SOP Instance UID again changes nothing.

    ``seg_path`` (relative to the data directory) is kept on the job as well.
    """
    job = load_job(session, job_id)
    existing = _result(session, seg_sop_instance_uid)
    if existing is None:
        row = Result(
            job_id=job_id,
            seg_sop_instance_uid=seg_sop_instance_uid,
            seg_series_instance_uid=seg_series_instance_uid,
            created_at=utcnow(),
            segments=[_segment(record) for record in segments],
        )
        conflict = insert_unless_exists(session, row)
        if conflict is None:
            if seg_path is not None:
                job.seg_path = relative_path(seg_path)
                job.updated_at = utcnow()
            append_audit(
                session,
                job_id=job_id,
                actor=actor or worker_actor(),
                event="result",
                detail={
                    "seg_sop_instance_uid": seg_sop_instance_uid,
                    "segments": len(segments),
                    "empty": sum(record.empty for record in segments),
                },
            )
            return ResultView.of(row)
        existing = _result(session, seg_sop_instance_uid)
        if existing is None:
            raise conflict
    if existing.job_id != job_id:
        raise ResultConflictError(seg_sop_instance_uid, job_id, existing.job_id)
    return ResultView.of(existing)


def results_for(session: Session, job_id: str) -> list[ResultView]:
    """Every SEG recorded for the job (a 2D set of several image sizes has one SEG per size)."""
    statement = select(Result).where(Result.job_id == job_id).order_by(Result.id)
    return [ResultView.of(row) for row in session.scalars(statement)]


def result_for(session: Session, job_id: str) -> ResultView | None:
    """The job's latest SEG, if any."""
    statement = select(Result).where(Result.job_id == job_id).order_by(Result.id.desc()).limit(1)
    row = session.scalars(statement).first()
    return None if row is None else ResultView.of(row)


def upsert_delivery(
    session: Session,
    job_id: str,
    destination: str,
    *,
    state: DeliveryState,
    error: str | None = None,
    actor: str | None = None,
) -> DeliveryView:
    """Create or move the job's delivery to ``destination``.

    ``attempts`` counts sends: it goes up on entering ``sending``, or on ``delivered``/``failed``
    reported straight from another state. ``last_error`` keeps the latest failure until delivered.
    """
    state = DeliveryState(state)
    load_job(session, job_id)  # a clear JobNotFoundError rather than a foreign-key violation
    now = utcnow()
    row = _delivery(session, job_id, destination)
    if row is None:
        fresh = Delivery(
            job_id=job_id,
            destination=destination,
            state=DeliveryState.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        conflict = insert_unless_exists(session, fresh)
        if conflict is None:
            row = fresh
        elif (row := _delivery(session, job_id, destination)) is None:
            raise conflict
    previous = row.state
    if state is DeliveryState.SENDING or (state in _ENDS and previous is not DeliveryState.SENDING):
        row.attempts += 1
    row.state = state
    row.updated_at = now
    if state is DeliveryState.DELIVERED:
        row.delivered_at, row.last_error = now, None
    elif error is not None:
        row.last_error = error
    session.flush()
    append_audit(
        session,
        job_id=job_id,
        actor=actor or worker_actor(),
        event="delivery",
        detail={
            "destination": destination,
            "from": previous.value,
            "to": state.value,
            "attempts": row.attempts,
            "error": error,
        },
    )
    return DeliveryView.of(row)


def deliveries_for(session: Session, job_id: str) -> list[DeliveryView]:
    statement = select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.destination)
    return [DeliveryView.of(row) for row in session.scalars(statement)]


def _segment(record: SegmentRecord) -> Segment:
    return Segment(
        segment_number=record.segment_number,
        prompt=record.prompt,
        category=record.category,
        pixel_count=record.pixel_count,
        volume_ml=record.volume_ml,
        empty=record.empty,
    )


def _result(session: Session, seg_sop_instance_uid: str) -> Result | None:
    statement = select(Result).where(Result.seg_sop_instance_uid == seg_sop_instance_uid)
    return session.scalars(statement).first()


def _delivery(session: Session, job_id: str, destination: str) -> Delivery | None:
    statement = (
        select(Delivery)
        .where(Delivery.job_id == job_id, Delivery.destination == destination)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(statement).first()
