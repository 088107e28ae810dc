"""What the listener answers, named: C-STORE outcomes, association refusals, and the errors behind them.

The listener's exceptions, translated to a DICOM status in exactly one place
(:func:`service.scp_store.store_received`)::

    InstanceRefusedError(outcome)     the instance is refused with ``outcome`` (never acknowledged)

Every outcome except :attr:`StoreOutcome.STORED` is a failure status: an instance that was not written
durably is never answered with success or a warning.

======================================  ======  ====================================================
StoreOutcome                            status  when
======================================  ======  ====================================================
STORED                                  0x0000  the Part 10 file is fsynced under its final name
OUT_OF_RESOURCES                        0xA700  the spool could not be written (full disk, I/O error)
DATA_SET_DOES_NOT_MATCH_SOP_CLASS       0xA900  data set SOP Class UID differs from the request's
SOP_CLASS_NOT_SUPPORTED                 0x0122  request SOP Class differs from the context's
MISSING_UID                             0xC001  SOP Instance / Study / Series UID absent or empty
INVALID_UID                             0xC002  a UID breaks the grammar (e.g. ``../``): no path
SOP_INSTANCE_MISMATCH                   0xC003  data set SOP Instance UID differs from the request's
UNREADABLE_DATA_SET                     0xC004  the data set cannot be parsed up to its UIDs
PROCESSING_FAILURE                      0x0110  an unexpected error (logged with its traceback)
======================================  ======  ====================================================

Association refusals (A-ASSOCIATE-RJ, PS3.8 9.3.4) name result, source and reason the way
:class:`workers.delivery.dimse_status.Rejection` describes the ones we receive.
"""

from __future__ import annotations

from enum import Enum

from workers.delivery.dimse_status import Rejection

__all__ = ["InstanceRefusedError", "Refusal", "StoreOutcome"]


class StoreOutcome(Enum):
    """The C-STORE response the listener sends for one instance."""

    STORED = "stored"
    OUT_OF_RESOURCES = "refused: out of resources (the spool could not be written)"
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = "data set does not match the SOP class of the request"
    SOP_CLASS_NOT_SUPPORTED = "SOP class differs from the presentation context's"
    MISSING_UID = "cannot understand: a required UID is missing"
    INVALID_UID = "cannot understand: a UID does not follow the UID grammar"
    SOP_INSTANCE_MISMATCH = "cannot understand: data set SOP Instance UID differs from the request's"
    UNREADABLE_DATA_SET = "cannot understand: the data set cannot be parsed"
    PROCESSING_FAILURE = "processing failure"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def stored(self) -> bool:
        return self is StoreOutcome.STORED


_STATUS = {
    StoreOutcome.STORED: 0x0000,
    StoreOutcome.OUT_OF_RESOURCES: 0xA700,
    StoreOutcome.DATA_SET_DOES_NOT_MATCH_SOP_CLASS: 0xA900,
    StoreOutcome.SOP_CLASS_NOT_SUPPORTED: 0x0122,
    StoreOutcome.MISSING_UID: 0xC001,
    StoreOutcome.INVALID_UID: 0xC002,
    StoreOutcome.SOP_INSTANCE_MISMATCH: 0xC003,
    StoreOutcome.UNREADABLE_DATA_SET: 0xC004,
    StoreOutcome.PROCESSING_FAILURE: 0x0110,
}


class InstanceRefusedError(Exception):
    """One received instance is refused: answered with ``outcome``, nothing acknowledged."""

    def __init__(self, outcome: StoreOutcome, detail: str) -> None:
        super().__init__(f"{outcome.value}: {detail}")
        self.outcome = outcome
        self.detail = detail


class Refusal(Enum):
    """Why an association request is refused, with the A-ASSOCIATE-RJ fields that say so."""

    CALLING_AE_NOT_RECOGNISED = "calling AE title not in the allow-list"
    CALLED_AE_NOT_RECOGNISED = "called AE title is not ours"
    SPOOL_RESERVE = "the spool's disk is below its reserve"
    TOO_MANY_ASSOCIATIONS = "the maximum number of associations is reached"
    SHUTTING_DOWN = "the listener is shutting down"

    @property
    def rejection(self) -> Rejection:
        """``result`` 1 permanent / 2 transient; ``source`` 1 service user / 3 provider (presentation)."""
        return Rejection(*_REJECTIONS[self])

    @property
    def fields(self) -> tuple[int, int, int]:
        return _REJECTIONS[self]

    def describe(self) -> str:
        return f"{self.rejection.describe()} ({self.value})"


_REJECTIONS = {
    Refusal.CALLING_AE_NOT_RECOGNISED: (1, 1, 3),
    Refusal.CALLED_AE_NOT_RECOGNISED: (1, 1, 7),
    Refusal.SPOOL_RESERVE: (2, 3, 2),
    Refusal.TOO_MANY_ASSOCIATIONS: (2, 3, 2),
    Refusal.SHUTTING_DOWN: (2, 3, 1),
}
