"""The vocabulary of a job: its states, stages, routes, priorities and delivery states.

Every received series becomes one job and ends in exactly one final state:

    received → queued → running → delivering → done
                                     └────────→ no_findings   (every segment empty: no SEG written)
                        └─ failed     (a stage could not complete: the stage and reason are kept)
                        └─ rejected   (the input itself is unusable: non-image, unreadable, no geometry)
                        └─ skipped    (no rule matched)
                                       delivery_failed  (SEG kept on disk; deliveries can be retried)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "DeliveryState", "JobState", "Priority", "Route", "Stage"]


class JobState(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    DONE = "done"
    NO_FINDINGS = "no_findings"
    FAILED = "failed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    DELIVERY_FAILED = "delivery_failed"


FINAL_STATES = frozenset(
    {
        JobState.DONE,
        JobState.NO_FINDINGS,
        JobState.FAILED,
        JobState.REJECTED,
        JobState.SKIPPED,
        JobState.DELIVERY_FAILED,
    }
)


class Stage(StrEnum):
    """The pipeline's steps, in order; each is checkpointed so a redelivered task resumes."""

    LOAD = "load"
    MATCH = "match"
    CONVERT = "convert"
    INFER = "infer"
    IMPORT = "import"
    SEG = "seg"
    PERSIST = "persist"
    DELIVER = "deliver"


class Route(StrEnum):
    """How a series came in."""

    DIMSE = "dimse"
    STOW = "stow"
    API = "api"
    CLI = "cli"


class Priority(StrEnum):
    STAT = "stat"
    ROUTINE = "routine"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
