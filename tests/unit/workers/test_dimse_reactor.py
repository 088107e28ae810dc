"""workers.dimse_reactor: pynetdicom's pause protocol, run against the checkpoint by a reactor thread
shaped like pynetdicom's own loop (``_is_paused = True; wait(); _is_paused = False; take a message``)
and a sender shaped like ``send_c_store`` (``clear(); wait for _is_paused; send and take the answer;
set()``). The reactor must never look for a message while the sender waits for its answer."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from workers.dimse_reactor import ReactorCheckpoint


class Reactor(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.checkpoint: Any = None
        self.is_paused = False
        self.kill = False
        self.sender_waiting = False  # between the sender's request and its answer
        self.stolen = 0
        self.turns = 0

    def run(self) -> None:
        self.is_paused = False
        while not self.kill:
            self.is_paused = True
            self.checkpoint.wait()
            self.is_paused = False
            if self.sender_waiting:  # pynetdicom's get_msg(block=False) would take the answer here
                self.stolen += 1
            self.turns += 1


def exchange(reactor: Reactor, rounds: int) -> None:
    for _ in range(rounds):
        reactor.checkpoint.clear()
        while not reactor.is_paused:
            time.sleep(0)
        reactor.sender_waiting = True
        time.sleep(0)  # the request goes out; the answer comes back (the reactor gets its chances)
        reactor.sender_waiting = False
        reactor.checkpoint.set()


def test_the_reactor_never_runs_while_a_sender_waits_for_its_answer() -> None:
    reactor = Reactor()
    reactor.checkpoint = ReactorCheckpoint(reactor)
    reactor.start()
    try:
        exchange(reactor, 5000)
    finally:
        reactor.kill = True
        reactor.checkpoint.set()
        reactor.join(timeout=10)
    assert reactor.stolen == 0
    assert reactor.turns > 0  # it did run between the exchanges


def test_clear_returns_once_the_reactor_has_ended() -> None:
    reactor = Reactor()
    checkpoint = ReactorCheckpoint(reactor)
    reactor.checkpoint = checkpoint
    reactor.start()
    reactor.kill = True
    reactor.join(timeout=10)
    checkpoint.clear()  # would wait for ever for a reactor that will never park again
    assert not checkpoint.is_set()


def test_the_reactor_may_pause_itself() -> None:
    """pynetdicom's reactor calls release() (hence clear()) itself on a network timeout."""
    done = threading.Event()

    class SelfPausing(threading.Thread):
        def run(self) -> None:
            checkpoint.clear()
            done.set()

    reactor = SelfPausing(daemon=True)
    checkpoint = ReactorCheckpoint(reactor)
    reactor.start()
    assert done.wait(10)
    reactor.join(timeout=10)


@pytest.mark.parametrize("timeout", [0.01, 0.05])
def test_wait_with_a_timeout_gives_up_when_nobody_sets_it(timeout: float) -> None:
    checkpoint = ReactorCheckpoint(threading.current_thread())
    checkpoint._flag = False  # cleared without waiting for a reactor (this thread is it)
    assert checkpoint.wait(timeout) is False
    checkpoint.set()
    assert checkpoint.wait(timeout) is True
