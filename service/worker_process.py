"""``mip-gateway worker`` as a child process of ``serve``: started in its own session, stopped last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress

import structlog

__all__ = ["WorkerProcess"]

log = structlog.get_logger(__name__)


class WorkerProcess:
    """``mip-gateway worker`` as a child, in its own session: a terminal's Ctrl-C reaches only us,
    and we stop it last, after the listener and the API stopped handing it work."""

    def __init__(self, argv: list[str], env: dict[str, str], *, grace_s: float) -> None:
        self.argv = argv
        self.env = env
        self.grace_s = grace_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        # the worker's banner and logs go to our stderr: stdout carries only the addresses and results
        self._proc = subprocess.Popen(
            self.argv, env=self.env, stdout=sys.stderr.fileno(), start_new_session=True
        )
        log.info("serve.worker_started", pid=self._proc.pid)

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # warm shutdown: the task in hand is finished
        try:
            proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            log.warning("serve.worker_killed", pid=proc.pid, grace_s=self.grace_s)
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own group: the pool's children go too
            proc.wait()
        log.info("serve.worker_stopped", status=proc.returncode)
