"""Small helpers the side-by-side benchmarks share."""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
from pathlib import Path

__all__ = ["empty_folder", "free_port", "series_parser", "stop"]


def stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL after 30 s)."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def series_parser(description: str | None, *, repeats: int) -> argparse.ArgumentParser:
    """The arguments of a bench on a generated CT series: --slices, --size, --repeats."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def empty_folder(folder: Path) -> None:
    """``folder`` exists and is empty (a trial writes into a fresh folder)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
