"""A child that must not outlive the process that started it (``serve``'s worker).

``serve`` stops its worker itself on SIGTERM or Ctrl-C; only a SIGKILL (an OOM kill, ``kill -9``)
gives it no chance, and the worker, in its own session so a terminal's Ctrl-C reaches only
``serve``, would then go on alone, holding tasks for a gateway that is gone. On Linux the kernel
can send the child a signal when its parent dies (``PR_SET_PDEATHSIG``); the worker asks for
SIGTERM — Celery's warm shutdown, and acks-late redelivers whatever it does not finish.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = ["PARENT_ENV", "stop_with_parent"]

PARENT_ENV = "MIPGW_STOP_WITH_PARENT"  # the parent's PID, set by serve for its worker
_PR_SET_PDEATHSIG = 1


def stop_with_parent(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Arm SIGTERM-on-parent-death when ``$MIPGW_STOP_WITH_PARENT`` names our parent; exit at once if
    that parent is already gone. False where the kernel offers no such thing (not Linux)."""
    value = environ.get(PARENT_ENV)
    if not value or not value.isdigit():
        return False
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != int(value):  # died before we armed it: we were reparented already
        raise SystemExit(f"mip-gateway worker: the process that started it ({value}) is gone")
    return True
