"""The gateway as production runs it: separate ``mip-gateway`` processes on one data directory.

    env = gateway_env(work / "data", broker_url=..., database_url=..., rules_file=..., endpoint_url=...)
    with GatewayProcesses(work, env) as gateway:
        scp_port = gateway.start_scp()                   # mip-gateway scp --port 0
        api_url = gateway.start_api()                    # mip-gateway api --port 0
        gateway.start_worker()                           # mip-gateway worker, once Celery says ready
        ...
        print(gateway.logs())                            # every process's stderr, for a failure report

Each process runs in its own session (process group), so a worker's pool children go with it; it is
stopped by its PID's group (SIGTERM, then SIGKILL after a grace period) when the block ends, in
reverse start order. stdout and stderr of each process go to ``<work>/logs/<name>.{stdout,stderr}``;
the address a command prints on stdout when it listens is read from the first line.

Shared by ``tests/e2e/test_front_door_orthanc.py`` and ``bench/end_to_end.py``: nothing here imports
pytest, so the benchmark runs without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["GatewayProcesses", "ManagedProcess", "ProcessStartError", "gateway_env", "mip_gateway_command"]

_STOP_GRACE_S = 20.0


class ProcessStartError(RuntimeError):
    """A gateway process exited or stayed silent instead of starting; the message holds its stderr."""


def mip_gateway_command() -> list[str]:
    """The console script next to this interpreter (the virtualenv's), else the module."""
    script = Path(sys.executable).with_name("mip-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def gateway_env(
    data_dir: Path,
    *,
    broker_url: str,
    database_url: str,
    rules_file: Path,
    settings: Mapping[str, str] = {},
) -> dict[str, str]:
    """The process environment: ours without any MIPGW_ setting the caller's shell may carry, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIPGW_")}
    env |= {
        "MIPGW_DATA_DIR": str(data_dir),
        "MIPGW_BROKER_URL": broker_url,
        "MIPGW_DATABASE_URL": database_url,
        "MIPGW_RULES_FILE": str(rules_file),
        # test machines are small: the 2 GiB default reserve would refuse every association
        "MIPGW_LISTENER__SPOOL_RESERVE_BYTES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env |= dict(settings)
    return env


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    stdout_file: Path
    stderr_file: Path
    first_line: str = ""
    _line_seen: threading.Event = field(default_factory=threading.Event)
    _pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr_text(self) -> str:
        return self.stderr_file.read_text(errors="replace") if self.stderr_file.exists() else ""

    def stdout_text(self) -> str:
        return self.stdout_file.read_text(errors="replace") if self.stdout_file.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; the group is ours alone."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        if self._pump is not None:
            self._pump.join(timeout=5)


def _pump_stdout(process: ManagedProcess, stream: IO[bytes]) -> None:
    """Copy stdout to its file, keeping the first line (the listening address) for the starter."""
    with process.stdout_file.open("ab") as sink:
        for raw in iter(stream.readline, b""):
            if not process._line_seen.is_set():
                process.first_line = raw.decode(errors="replace").strip()
                process._line_seen.set()
            sink.write(raw)
            sink.flush()
    process._line_seen.set()  # EOF: the process is gone, the waiter must not wait on


class GatewayProcesses:
    """Starts and stops the gateway's processes; ``logs()`` tells what each of them said."""

    def __init__(self, work: Path, env: Mapping[str, str], *, start_timeout_s: float = 90.0) -> None:
        self.work = Path(work)
        self.log_dir = self.work / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.start_timeout_s = start_timeout_s
        self.processes: list[ManagedProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        while self.processes:
            self.processes.pop().stop()

    def spawn(self, name: str, args: Sequence[str], *, announce: bool) -> ManagedProcess:
        """Start ``mip-gateway args``; with ``announce``, wait for its first stdout line."""
        stdout_file, stderr_file = self.log_dir / f"{name}.stdout", self.log_dir / f"{name}.stderr"
        with stderr_file.open("ab") as stderr:
            popen = subprocess.Popen(
                [*mip_gateway_command(), *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # its own process group: stopped with its children, by PID
            )
        process = ManagedProcess(name, popen, stdout_file, stderr_file)
        self.processes.append(process)
        assert popen.stdout is not None
        process._pump = threading.Thread(
            target=_pump_stdout, args=(process, popen.stdout), name=f"stdout-{name}", daemon=True
        )
        process._pump.start()
        if announce and not process._line_seen.wait(self.start_timeout_s):
            raise ProcessStartError(f"{name} printed nothing in {self.start_timeout_s} s:\n{self.logs(name)}")
        if announce and "listening on" not in process.first_line:
            raise ProcessStartError(f"{name} did not start ({process.first_line!r}):\n{self.logs(name)}")
        return process

    def start_mock_endpoint(self, *extra: str) -> str:
        """``mip-gateway mock-endpoint --port 0``; its base URL (``/score`` is the scoring route)."""
        process = self.spawn("mock-endpoint", ["mock-endpoint", "--port", "0", *extra], announce=True)
        return process.first_line.rsplit(" ", 1)[-1]

    def start_scp(self) -> int:
        """``mip-gateway scp --port 0 --bind 127.0.0.1``; the port it listens on."""
        process = self.spawn("scp", ["scp", "--port", "0", "--bind", "127.0.0.1"], announce=True)
        return int(process.first_line.rsplit(":", 1)[1])

    def start_api(self) -> str:
        """``mip-gateway api --port 0 --bind 127.0.0.1``; its base URL."""
        process = self.spawn("api", ["api", "--port", "0", "--bind", "127.0.0.1"], announce=True)
        return process.first_line.rsplit(" ", 1)[-1]

    def start_worker(self, name: str = "worker") -> ManagedProcess:
        """``mip-gateway worker``, returned once Celery logs that it is ready to consume."""
        process = self.spawn(name, ["worker", "--name", f"{name}-{os.getpid()}@e2e"], announce=False)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ProcessStartError(f"{name} exited ({process.popen.returncode}):\n{self.logs(name)}")
            if " ready." in process.stderr_text() or " ready." in process.stdout_text():
                return process
            time.sleep(0.1)
        raise ProcessStartError(f"{name} not ready in {self.start_timeout_s} s:\n{self.logs(name)}")

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def logs(self, *names: str, tail: int = 6000) -> str:
        """The last ``tail`` characters of each process's stderr (and stdout), named."""
        parts = []
        for process in self.processes:
            if names and process.name not in names:
                continue
            state = "running" if process.popen.poll() is None else f"exited {process.popen.returncode}"
            for label, text in (("stderr", process.stderr_text()), ("stdout", process.stdout_text())):
                if text.strip():
                    parts.append(f"----- {process.name} (pid {process.pid}, {state}) {label} -----")
                    parts.append(text[-tail:])
        return "\n".join(parts)
