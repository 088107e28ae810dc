"""Delivery of SEG files to the configured destinations, and webhook notifications.

    Sender (Protocol: one attempt to deliver one file → DeliveryReceipt, or DeliveryError)
     ├── DimseSender   C-STORE SCU (pynetdicom), optional TLS           dimse.py, dimse_status.py,
     │                                                                  dimse_transport.py
     └── StowSender    STOW-RS (httpx), bearer token or basic auth      stow.py
    post_webhook       signed JSON notifications, retried inline        webhooks.py

Senders make one attempt each; backing off between attempts is the task layer's job, decided by
``DeliveryError.retryable``.
"""

from __future__ import annotations

from config.settings import DicomNode, DicomWebNode
from workers.delivery.base import DeliveryReceipt, Sender
from workers.delivery.dimse import DimseSender
from workers.delivery.dimse_status import ConnectionOutcome, Rejection, StoreStatus
from workers.delivery.stow import FailureReason, StowSender
from workers.delivery.webhooks import post_webhook, sign, verify_signature

__all__ = [
    "ConnectionOutcome",
    "DeliveryReceipt",
    "DimseSender",
    "FailureReason",
    "Rejection",
    "Sender",
    "StoreStatus",
    "StowSender",
    "post_webhook",
    "sender_for",
    "sign",
    "verify_signature",
]


def sender_for(name: str, destination: DicomNode | DicomWebNode, *, calling_ae: str) -> Sender:
    """The sender for a configured destination; ``calling_ae`` is the gateway's own AE title."""
    if isinstance(destination, DicomNode):
        return DimseSender(name, destination, calling_ae=calling_ae)
    return StowSender(name, destination)
