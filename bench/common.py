"""Small helpers the side-by-side benchmarks share."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

__all__ = ["empty_folder", "free_port"]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def empty_folder(folder: Path) -> None:
    """``folder`` exists and is empty (a trial writes into a fresh folder)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
