"""workers.enqueue_retry: what the broker refuses is kept in order and published once it is back.
(With a real Redis that comes up late: tests/integration/test_broker_outage.py.)"""

from __future__ import annotations

import itertools

import pytest

from workers.enqueue_retry import RetryingEnqueuer
from workers.jobs import Priority


class Broker:
    """The inner enqueuer: records what it was given; refuses while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, ...]] = []
        self.attempts = 0

    def _take(self, *message: str) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append(message)

    def process(self, job_id: str, priority: Priority) -> None:
        self._take("process", job_id, str(priority))

    def deliver(self, job_id: str, destination: str) -> None:
        self._take("deliver", job_id, destination)

    def pull(self, job_id: str) -> None:
        self._take("pull", job_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def enqueue(broker: Broker, clock: Clock) -> RetryingEnqueuer:
    return RetryingEnqueuer(broker, retry_initial_s=1.0, retry_max_s=4.0, clock=clock)


def test_a_broker_that_answers_gets_everything_at_once(enqueue: RetryingEnqueuer, broker: Broker) -> None:
    enqueue.process("a", Priority.STAT)
    enqueue.deliver("a", "pacs")
    enqueue.pull("b")
    assert broker.sent == [("process", "a", "stat"), ("deliver", "a", "pacs"), ("pull", "b")]
    assert enqueue.held() == 0
    assert enqueue.flush() == 0


def test_what_is_refused_is_held_in_order_and_published_when_the_broker_is_back(
    enqueue: RetryingEnqueuer, broker: Broker, clock: Clock
) -> None:
    broker.down = True
    enqueue.process("a", Priority.ROUTINE)  # never raises: the job is already in the store
    enqueue.pull("b")
    enqueue.deliver("c", "pacs")
    assert enqueue.held() == 3
    assert broker.attempts == 1  # once one is held the others queue behind it, no wait on a dead broker
    assert enqueue.flush() == 0  # the pause (1 s) is not over
    clock.now += 1
    assert enqueue.flush() == 0  # tried, still down: the pause doubles
    assert broker.attempts == 2
    clock.now += 1
    assert enqueue.flush() == 0  # 2 s now: not yet
    assert broker.attempts == 2
    broker.down = False
    enqueue.process("d", Priority.STAT)  # meanwhile: behind the others, not ahead of them
    assert enqueue.held() == 4
    clock.now += 1
    assert enqueue.flush() == 4
    assert broker.sent == [
        ("process", "a", "routine"),
        ("pull", "b"),
        ("deliver", "c", "pacs"),
        ("process", "d", "stat"),
    ]
    enqueue.process("e", Priority.ROUTINE)  # back to publishing at once
    assert broker.sent[-1] == ("process", "e", "routine")


def test_a_broker_failing_midway_keeps_the_rest_in_order(
    enqueue: RetryingEnqueuer, broker: Broker, clock: Clock
) -> None:
    broker.down = True
    for job in "abc":
        enqueue.pull(job)
    broker.down = False
    original = broker._take

    def fail_on_b(*message: str) -> None:
        if message[1] == "b":
            broker.down = True
        original(*message)

    broker._take = fail_on_b  # type: ignore[method-assign]
    clock.now += 1
    assert enqueue.flush() == 1
    assert enqueue.held() == 2
    broker._take = original  # type: ignore[method-assign]
    broker.down = False
    clock.now += 4
    assert enqueue.flush() == 2
    assert [message[1] for message in broker.sent] == ["a", "b", "c"]


def test_the_pause_between_tries_is_capped(enqueue: RetryingEnqueuer, broker: Broker, clock: Clock) -> None:
    broker.down = True
    enqueue.pull("a")
    tries = []
    for _ in range(40):
        clock.now += 0.5
        before = broker.attempts
        enqueue.flush()
        if broker.attempts > before:
            tries.append(clock.now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert tries[0] == 101.0  # 1 s after the refusal
    assert gaps[:3] == [2.0, 4.0, 4.0]  # then 2 s, 4 s, and never more than retry_max_s
    assert max(gaps) == 4.0


def test_a_last_try_as_the_process_stops_does_not_wait_for_the_pause(
    enqueue: RetryingEnqueuer, broker: Broker
) -> None:
    broker.down = True
    enqueue.pull("a")
    broker.down = False
    assert enqueue.flush() == 0  # within the pause
    assert enqueue.flush(now=True) == 1
    assert broker.sent == [("pull", "a")]
