"""Deciding that a series has fully arrived, and saying why.

DICOM has no "series done" message, and the field's answer — an idle timer alone — is what users
complain about most (processing too early, or one series split in two). So several signals count,
strongest first:

1. the data announces its size and it is reached: ImagesInAcquisition, or an enhanced multi-frame
   instance that carries the whole series in its frames;
2. the sending association is released and the slices received form a regular stack with no gap
   (two or more positions evenly spaced along the normal) — a modality or PACS that sends a series
   in one association is done when it lets go; one that splits it across parallel associations
   (same calling AE) is done when the last of those open at the release has ended;
3. a STOW-RS request carries whole series: complete on arrival;
4. otherwise an idle timer (default 30 s) after the last instance, with no association still
   sending to the series. A rule may set its own (``completion_idle_s``): an :class:`IdlePolicy`
   evaluates the rules on the series as received so far once it has been idle for the shortest
   timer in force, and the longest timer of the rules that fire is the one that applies.

A series that completed and then receives more instances starts a new run (its job will hold every
instance received; the SEG then joins the same SEG series as a newer instance).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import structlog
from pydicom.dataset import Dataset

from workers.jobs import Route

__all__ = [
    "ArrivalFacts",
    "CompletedSeries",
    "CompletionTracker",
    "IdleChoice",
    "IdlePolicy",
    "PendingSeries",
    "facts_from_header",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ArrivalFacts:
    """What one received instance tells about its series."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    route: Route
    calling_ae: str | None
    association: str | None  # the association (DIMSE) or request (STOW) that brought it
    announced: int | None  # instances the series says it has
    position: float | None  # along the slice normal, mm


def facts_from_header(
    ds: Dataset, *, route: Route, calling_ae: str | None, association: str | None
) -> ArrivalFacts:
    frames = _int(ds.get("NumberOfFrames")) or 1
    announced = _int(ds.get("ImagesInAcquisition"))
    if frames > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        announced = 1  # an enhanced multi-frame object is a whole acquisition in one instance
    return ArrivalFacts(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        route=route,
        calling_ae=calling_ae,
        association=association,
        announced=announced if announced and announced > 0 else None,
        position=_position(ds),
    )


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _position(ds: Dataset) -> float | None:
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
    except (AttributeError, TypeError, ValueError):
        return None
    normal = np.cross(iop[:3], iop[3:6])
    if iop.size != 6 or ipp.size != 3 or not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
        return None
    return float(ipp @ (normal / np.linalg.norm(normal)))


@dataclass(frozen=True, slots=True)
class CompletedSeries:
    study_instance_uid: str
    series_instance_uid: str
    route: Route
    calling_ae: str | None
    instances: int
    reason: str


@dataclass(frozen=True, slots=True)
class PendingSeries:
    """A series the idle timer is about to judge, as an :class:`IdlePolicy` sees it."""

    study_instance_uid: str
    series_instance_uid: str
    route: Route
    calling_ae: str | None
    instances: int


@dataclass(frozen=True, slots=True)
class IdleChoice:
    seconds: float
    rule: str | None = None  # the rule that asked for this timer; None: the listener's default

    @property
    def reason(self) -> str:
        why = f" (idle timer of rule {self.rule})" if self.rule else ""
        return f"no new instance for {self.seconds:g} s{why}"


class IdlePolicy(Protocol):
    """Per-rule idle timers (``completion_idle_s``)."""

    def shortest(self) -> float | None:
        """The shortest timer any rule in force asks for; None when no rule sets one."""
        ...

    def idle_for(self, series: PendingSeries) -> IdleChoice | None:
        """The timer of the rules that fire for the series as received; None: the default."""
        ...


@dataclass
class _Series:
    study: str
    route: Route
    calling_ae: str | None
    positions: dict[str, float | None] = field(default_factory=dict)
    associations: set[str] = field(default_factory=set)
    announced: int | None = None
    last_at: float = 0.0
    idle: IdleChoice | None = None  # decided for the instances received so far
    # released by a sender whose other associations, open at the time, may still carry part of it
    siblings: set[str] = field(default_factory=set)


class CompletionTracker:
    """Thread-safe; the clock is injectable so the timer logic is tested without sleeping."""

    def __init__(
        self,
        *,
        idle_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        policy: IdlePolicy | None = None,
    ) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._policy = policy
        self._series: dict[str, _Series] = {}
        self._open: set[str] = set()
        self._callers: dict[str, str] = {}  # open association -> its calling AE, when known
        self._lock = threading.Lock()

    def pending(self) -> int:
        with self._lock:
            return len(self._series)

    def association_opened(self, association: str, calling_ae: str | None = None) -> None:
        with self._lock:
            self._open.add(association)
            if calling_ae:
                self._callers[association] = calling_ae

    def arrived(self, facts: ArrivalFacts) -> CompletedSeries | None:
        """Record an instance; a series that thereby reaches its announced size is complete now."""
        with self._lock:
            state = self._series.get(facts.series_instance_uid)
            if state is None:
                state = _Series(facts.study_instance_uid, facts.route, facts.calling_ae)
                self._series[facts.series_instance_uid] = state
            state.positions[facts.sop_instance_uid] = facts.position
            state.idle = None  # the series changed: the rules that fire may change too
            if facts.association:
                state.associations.add(facts.association)
            if facts.announced:
                state.announced = max(state.announced or 0, facts.announced)
            state.last_at = self._clock()
            if state.announced and len(state.positions) >= state.announced:
                return self._finish(
                    facts.series_instance_uid,
                    f"all {state.announced} instance(s) the series announces arrived",
                )
        return None

    def association_released(self, association: str) -> list[CompletedSeries]:
        """Series this association sent whose slices form a complete regular stack.

        A sender may split a series across parallel associations, and every fourth slice of a stack is
        a regular stack too: while another association of the same calling AE, open at the release,
        has not ended, the series waits for it (or for the idle timer, whichever comes first).
        """
        done = []
        with self._lock:
            self._open.discard(association)
            caller = self._callers.pop(association, None)
            siblings = {a for a in self._open if caller is not None and self._callers.get(a) == caller}
            for uid, state in list(self._series.items()):
                waited_for = association in state.siblings
                state.siblings.discard(association)
                if association in state.associations:
                    state.siblings = siblings - state.associations  # those that sent are still_sending
                elif not waited_for:
                    continue
                if state.siblings or self._still_sending(state):
                    continue
                stack = _regular_stack(list(state.positions.values()))
                if stack:
                    done.append(self._finish(uid, f"association released; {stack}"))
        return done

    def association_aborted(self, association: str) -> None:
        """An aborted association no longer holds its series open; they are left to the idle timer.

        Unlike a release, an abort never completes a series: the sender did not say it was done."""
        with self._lock:
            self._open.discard(association)
            self._callers.pop(association, None)
            for state in self._series.values():
                state.siblings.discard(association)

    def complete(self, series_instance_uid: str, reason: str) -> CompletedSeries | None:
        """Declare a series complete (a STOW request that carried it whole)."""
        with self._lock:
            return self._finish(series_instance_uid, reason) if series_instance_uid in self._series else None

    def due(self) -> list[CompletedSeries]:
        """Series idle for their timer with no association still sending to them."""
        default = IdleChoice(self.idle_s)
        shortest = self._policy.shortest() if self._policy is not None else None
        first_look = min(self.idle_s, shortest) if shortest is not None else self.idle_s
        now = self._clock()
        done: list[CompletedSeries] = []
        undecided: list[PendingSeries] = []
        with self._lock:
            for uid, state in list(self._series.items()):
                if self._still_sending(state):
                    continue
                idle = now - state.last_at
                if state.idle is not None:
                    if idle >= state.idle.seconds:
                        done.append(self._finish(uid, state.idle.reason))
                elif idle >= first_look:
                    if self._policy is None:
                        done.append(self._finish(uid, default.reason))
                    else:
                        n = len(state.positions)
                        undecided.append(PendingSeries(state.study, uid, state.route, state.calling_ae, n))
        # the policy reads headers from disk: never while holding the lock arrivals need
        for pending in undecided:
            choice = self._decide(pending) or default
            with self._lock:
                current = self._series.get(pending.series_instance_uid)
                if current is None or len(current.positions) != pending.instances:
                    continue  # grew meanwhile: decided again at a later tick
                current.idle = choice
                if self._clock() - current.last_at >= choice.seconds and not self._still_sending(current):
                    done.append(self._finish(pending.series_instance_uid, choice.reason))
        return done

    def _decide(self, pending: PendingSeries) -> IdleChoice | None:
        assert self._policy is not None
        try:
            return self._policy.idle_for(pending)
        except Exception:  # a rules or disk problem must not hold a series forever: the default applies
            log.exception("completion.idle_policy_failed", series=pending.series_instance_uid)
            return None

    def _still_sending(self, state: _Series) -> bool:
        return bool(state.associations & self._open)

    def _finish(self, uid: str, reason: str) -> CompletedSeries:
        state = self._series.pop(uid)
        return CompletedSeries(state.study, uid, state.route, state.calling_ae, len(state.positions), reason)


def _regular_stack(positions: list[float | None]) -> str | None:
    """A readable account of a gap-free, evenly spaced stack, or None."""
    if len(positions) < 2 or any(p is None for p in positions):
        return None
    ordered = np.sort(np.asarray(positions, dtype=float))
    gaps = np.diff(ordered)
    if gaps.min() <= 1e-3:
        return None  # repeated positions: several phases or echoes may still be coming
    step = float(np.median(gaps))
    if not math.isfinite(step) or np.abs(gaps - step).max() > max(0.02, 0.01 * step):
        return None
    return f"{len(positions)} slices {step:.3g} mm apart with no gap"
