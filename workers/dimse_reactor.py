"""A race-free pause for pynetdicom's association reactor, on every association the gateway opens.

pynetdicom runs a reactor thread per association that takes any DIMSE message it finds and treats
it as a new request. ``send_c_store`` & co. pause it first: they clear a ``threading.Event`` and
wait until the reactor has set ``_is_paused``, send, wait for the answer, then set the event again.
Two gaps let the reactor steal the answer ("Received unexpected C-STORE service message", then a
DIMSE timeout and an abort — seen in CI with our own listener, which answers in well under a
millisecond):

- ``Event.wait`` returns True to a thread that was notified, even if the flag was cleared again
  before it ran: the ``set()`` ending one C-STORE and the ``clear()`` starting the next let the
  reactor through;
- ``_is_paused`` is still True from the last pause while the woken reactor is on its way out of
  ``wait``, so the next send does not wait for it to stop.

:class:`ReactorCheckpoint` replaces the event: ``wait`` re-checks the flag under its lock, and
``clear`` returns only once the reactor is parked in ``wait`` with the flag down (or has ended).
"""

from __future__ import annotations

import threading

from pynetdicom.association import Association

__all__ = ["ReactorCheckpoint", "pause_safely"]

_POLL_S = 0.005


class ReactorCheckpoint:
    """What pynetdicom uses of ``threading.Event`` for ``Association._reactor_checkpoint``."""

    def __init__(self, reactor: threading.Thread) -> None:
        self._reactor = reactor
        self._cond = threading.Condition()
        self._flag = True
        self._parked = False  # the reactor is inside wait() and the flag is down

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False
            if threading.current_thread() is self._reactor:
                return  # the reactor pausing itself (an A-RELEASE on network timeout)
            while not self._parked and self._reactor.is_alive():
                self._cond.wait(_POLL_S)

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            while not self._flag:
                self._parked = True
                self._cond.notify_all()
                if not self._cond.wait(timeout) and timeout is not None:
                    self._parked = False
                    return self._flag
            self._parked = False
            return True


def pause_safely(assoc: Association) -> Association:
    """Install the race-free checkpoint on an association just returned by ``AE.associate``."""
    if assoc.is_established:
        # the old event is set (nobody has paused yet): a reactor inside its wait() leaves at once
        assoc._reactor_checkpoint = ReactorCheckpoint(assoc)  # type: ignore[assignment]
    return assoc
