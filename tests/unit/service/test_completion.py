"""Series completion from several signals, on a fake clock."""

from __future__ import annotations

import pytest

from dicom_io.testing.phantoms import volume_phantom
from service.completion import ArrivalFacts, CompletionTracker, facts_from_header
from workers.jobs import Route


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _facts(
    n: int, *, position: float | None = None, announced: int | None = None, association: str | None = "a1"
) -> ArrivalFacts:
    return ArrivalFacts("1.2", "1.2.3", f"1.2.3.{n}", Route.DIMSE, "CT1", association, announced, position)


def test_announced_count_completes_on_the_last_instance() -> None:
    tracker = CompletionTracker(clock=Clock())
    assert tracker.arrived(_facts(1, announced=3)) is None
    assert tracker.arrived(_facts(2, announced=3)) is None
    done = tracker.arrived(_facts(3, announced=3))
    assert done is not None
    assert done.instances == 3
    assert "all 3 instance(s) the series announces arrived" in done.reason
    assert tracker.pending() == 0


def test_association_release_completes_a_regular_stack_only() -> None:
    tracker = CompletionTracker(clock=Clock())
    tracker.association_opened("a1")
    for n, z in enumerate([0.0, 1.5, 3.0, 4.5]):
        tracker.arrived(_facts(n, position=z))
    gappy = CompletionTracker(clock=Clock())
    gappy.association_opened("a1")
    for n, z in enumerate([0.0, 1.5, 4.5]):  # a slice missing
        gappy.arrived(_facts(n, position=z))
    (done,) = tracker.association_released("a1")
    assert done.reason == "association released; 4 slices 1.5 mm apart with no gap"
    assert gappy.association_released("a1") == []
    assert gappy.pending() == 1  # left to the idle timer


def test_release_waits_while_another_association_still_sends() -> None:
    tracker = CompletionTracker(clock=Clock())
    tracker.association_opened("a1")
    tracker.association_opened("a2")
    tracker.arrived(_facts(1, position=0.0, association="a1"))
    tracker.arrived(_facts(2, position=1.0, association="a2"))
    assert tracker.association_released("a1") == []
    assert len(tracker.association_released("a2")) == 1


def test_repeated_positions_are_not_a_finished_stack() -> None:
    tracker = CompletionTracker(clock=Clock())
    tracker.association_opened("a1")
    for n, z in enumerate([0.0, 1.0, 0.0, 1.0]):  # two phases so far; more may come
        tracker.arrived(_facts(n, position=z))
    assert tracker.association_released("a1") == []


def test_idle_timer_is_the_fallback_and_waits_for_open_associations() -> None:
    clock = Clock()
    tracker = CompletionTracker(idle_s=30, clock=clock)
    tracker.association_opened("a1")
    tracker.arrived(_facts(1))  # a radiograph: no position, no count
    clock.now += 31
    assert tracker.due() == []  # the association is still open
    tracker.association_released("a1")
    (done,) = tracker.due()
    assert done.reason == "no new instance for 30 s"


def test_an_abort_never_completes_but_frees_the_series_for_the_idle_timer() -> None:
    clock = Clock()
    tracker = CompletionTracker(idle_s=30, clock=clock)
    tracker.association_opened("a1")
    for n, z in enumerate([0.0, 1.5, 3.0]):  # a regular stack: a release would complete it
        tracker.arrived(_facts(n, position=z))
    tracker.association_aborted("a1")
    assert tracker.due() == []
    assert tracker.pending() == 1
    clock.now += 31
    (done,) = tracker.due()
    assert done.reason == "no new instance for 30 s"


def test_late_instances_start_a_new_run() -> None:
    clock = Clock()
    tracker = CompletionTracker(idle_s=5, clock=clock)
    tracker.arrived(_facts(1, association=None))
    clock.now += 6
    assert len(tracker.due()) == 1
    tracker.arrived(_facts(2, association=None))
    clock.now += 6
    (again,) = tracker.due()
    assert again.instances == 1


def test_stow_request_completes_what_it_carried() -> None:
    tracker = CompletionTracker(clock=Clock())
    tracker.arrived(_facts(1, association="req-1"))
    done = tracker.complete("1.2.3", "the STOW-RS request carried the series")
    assert done is not None
    assert tracker.complete("9.9.9", "nothing") is None


@pytest.mark.parametrize("enhanced", [False, True])
def test_facts_from_headers(enhanced: bool) -> None:
    phantom = volume_phantom(slices=4, enhanced=enhanced)
    facts = facts_from_header(phantom.datasets[0], route=Route.STOW, calling_ae=None, association="r")
    if enhanced:
        assert facts.announced == 1  # the whole acquisition is in this one instance
    else:
        assert facts.position is not None
