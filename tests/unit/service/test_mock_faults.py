"""Fault specs parse strictly, print back canonically, and ``fail-first`` counts per key."""

from __future__ import annotations

import threading

import pytest

from service.mock.faults import FaultCounters, FaultPlan, FaultSpecError


def test_full_spec_parses() -> None:
    plan = FaultPlan.parse(" latency=200 ; fail-first=3;status=503;retry-after=1; drop-affine;max-rows=4;")
    assert plan == FaultPlan(
        latency_ms=200, fail_first=3, status=503, retry_after=1, drop_affine=True, max_rows=4
    )
    assert FaultPlan.parse(plan.spec()) == plan


@pytest.mark.parametrize("spec", ["", "none", "  NONE ", ";"])
def test_empty_specs_mean_no_faults(spec: str) -> None:
    assert FaultPlan.parse(spec) == FaultPlan()
    assert FaultPlan().spec() == "none"


@pytest.mark.parametrize(
    "flag", ["malformed-json", "wrong-shape", "wrong-count", "drop-connection", "drop-affine"]
)
def test_flags_round_trip(flag: str) -> None:
    plan = FaultPlan.parse(flag)
    assert plan.spec() == flag
    assert plan.failure_items() == (flag,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("latency", "needs a value"),
        ("latency=fast", "whole number"),
        ("latency=-5", "whole number"),
        ("latency=1.5", "whole number"),
        ("latency=9999999", "latency must be"),
        ("explode=1", "unknown fault item 'explode'"),
        ("malformed-json=1", "takes no value"),
        ("latency=1;latency=2", "given twice"),
        ("status=503", "use always=CODE"),
        ("fail-first=2;status=404", "status must be one of"),
        ("fail-first=2", "needs a failure to scope"),
        ("always=200", "400-599"),
        ("always=503;fail-first=1;status=503", "exclude each other"),
        ("retry-after=3", "goes with status"),
        ("max-rows=0", "at least 1"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultPlan.parse(spec)


def test_with_latency_validates() -> None:
    assert FaultPlan.parse("always=503").with_latency(50) == FaultPlan(always=503, latency_ms=50)
    with pytest.raises(FaultSpecError):
        FaultPlan().with_latency(-1)


def test_fail_first_counts_per_key_and_keeps_latency_afterwards() -> None:
    plan = FaultPlan.parse("latency=10;fail-first=2;status=429;max-rows=3")
    counters = FaultCounters()
    seen = [counters.effective(plan, "a") for _ in range(3)]
    assert [p.status for p in seen] == [429, 429, None]
    assert seen[2] == FaultPlan(latency_ms=10, max_rows=3)
    assert counters.effective(plan, "b").status == 429  # another key has its own count
    assert counters.effective(FaultPlan(always=503), "a").always == 503  # no fail-first: no counting


def test_fail_first_is_exact_under_concurrency() -> None:
    plan = FaultPlan.parse("fail-first=50;drop-connection")
    counters = FaultCounters()
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            dropped = counters.effective(plan, "k").drop_connection
            with lock:
                results.append(dropped)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 50
