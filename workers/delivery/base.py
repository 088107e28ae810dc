"""What every sender offers the pipeline: one attempt to deliver one file, and a receipt when it worked.

A sender raises :class:`workers.errors.DeliveryError` when the file was not delivered; its
``retryable`` says whether the same attempt may work later (the task layer backs off and retries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DeliveryReceipt", "Sender", "public_url"]


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    destination: str  # the configured destination name
    sop_instance_uid: str
    detail: str  # what the peer said, e.g. "C-STORE success (0x0000)", warnings included


class Sender(Protocol):
    """One destination (a DICOM node, a DICOMweb server); ``send`` makes exactly one attempt.

    A sender may keep connections between sends (STOW keeps an HTTP connection pool): ``close``
    it when done, or use it as a context manager.
    """

    name: str

    def send(self, path: Path, *, job_id: str | None = None) -> DeliveryReceipt: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sender: ...

    def __exit__(self, *exc_info: object) -> None: ...


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
