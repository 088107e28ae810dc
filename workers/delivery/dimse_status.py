"""Every outcome of a C-STORE attempt, named, with whether trying again later may help.

- :class:`StoreStatus`: the C-STORE response status (PS3.4 B.2.3, PS3.7 C.4);
- :class:`Rejection`: an A-ASSOCIATE-RJ (PS3.8 9.3.4) — result, source and reason;
- :class:`ContextResult`: why a presentation context was not accepted (PS3.8 9.3.3.2);
- :class:`ConnectionOutcome`: what went wrong before or around the association.

Retry policy: transient trouble (no connection, congestion, out of resources, timeouts, aborts,
unknown failure codes) is retryable; a peer that refuses us or the object by configuration or
content (AE titles, SOP class, data set errors, credentials, certificates) is not.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from enum import Enum, IntEnum

__all__ = ["ConnectionOutcome", "ContextResult", "Rejection", "StatusCategory", "StoreStatus"]


class StatusCategory(Enum):
    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


class StoreStatus(Enum):
    """A C-STORE response status; :meth:`of` maps a status code to its name."""

    SUCCESS = "success"
    COERCION_OF_DATA_ELEMENTS = "coercion of data elements"
    ELEMENTS_DISCARDED = "elements discarded"
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = "data set does not match SOP class (stored anyway)"
    OTHER_WARNING = "warning"
    OUT_OF_RESOURCES = "refused: out of resources"
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = "data set does not match SOP class"
    CANNOT_UNDERSTAND = "cannot understand"
    SOP_CLASS_NOT_SUPPORTED = "SOP class not supported"
    INVALID_SOP_INSTANCE = "invalid SOP instance"
    NOT_AUTHORISED = "not authorised"
    PROCESSING_FAILURE = "processing failure"
    DUPLICATE_INVOCATION = "duplicate invocation"
    UNRECOGNISED_OPERATION = "unrecognised operation"
    MISTYPED_ARGUMENT = "mistyped argument"
    RESOURCE_LIMITATION = "resource limitation"
    OTHER_FAILURE = "failure"

    @classmethod
    def of(cls, code: int) -> StoreStatus:
        if code in _EXACT:
            return _EXACT[code]
        for low, high, status in _RANGES:
            if low <= code <= high:
                return status
        return cls.OTHER_FAILURE

    @property
    def category(self) -> StatusCategory:
        if self is StoreStatus.SUCCESS:
            return StatusCategory.SUCCESS
        return StatusCategory.WARNING if self in _WARNINGS else StatusCategory.FAILURE

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_EXACT = {
    0x0000: StoreStatus.SUCCESS,
    0xB000: StoreStatus.COERCION_OF_DATA_ELEMENTS,
    0xB006: StoreStatus.ELEMENTS_DISCARDED,
    0xB007: StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING,
    0x0001: StoreStatus.OTHER_WARNING,  # general warnings of PS3.7 C.4
    0x0107: StoreStatus.OTHER_WARNING,  # attribute list error
    0x0116: StoreStatus.OTHER_WARNING,  # attribute value out of range
    0x0110: StoreStatus.PROCESSING_FAILURE,
    0x0117: StoreStatus.INVALID_SOP_INSTANCE,
    0x0122: StoreStatus.SOP_CLASS_NOT_SUPPORTED,
    0x0124: StoreStatus.NOT_AUTHORISED,
    0x0210: StoreStatus.DUPLICATE_INVOCATION,
    0x0211: StoreStatus.UNRECOGNISED_OPERATION,
    0x0212: StoreStatus.MISTYPED_ARGUMENT,
    0x0213: StoreStatus.RESOURCE_LIMITATION,
}
_RANGES = (
    (0xA700, 0xA7FF, StoreStatus.OUT_OF_RESOURCES),
    (0xA900, 0xA9FF, StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
    (0xB000, 0xBFFF, StoreStatus.OTHER_WARNING),
    (0xC000, 0xCFFF, StoreStatus.CANNOT_UNDERSTAND),
)
_WARNINGS = frozenset(
    {
        StoreStatus.COERCION_OF_DATA_ELEMENTS,
        StoreStatus.ELEMENTS_DISCARDED,
        StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING,
        StoreStatus.OTHER_WARNING,
    }
)
# Unknown failure codes are retried: the attempts are bounded and a vendor's "busy" must not lose a result.
_RETRYABLE = frozenset(
    {
        StoreStatus.OUT_OF_RESOURCES,
        StoreStatus.PROCESSING_FAILURE,
        StoreStatus.DUPLICATE_INVOCATION,
        StoreStatus.RESOURCE_LIMITATION,
        StoreStatus.OTHER_FAILURE,
    }
)


_RESULTS = {1: "permanent", 2: "transient"}
_SOURCES = {1: "the service user", 2: "the service provider (ACSE)", 3: "the service provider (presentation)"}
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_TRANSIENT_REASONS = frozenset({(3, 1), (3, 2)})


@dataclass(frozen=True, slots=True)
class Rejection:
    """An A-ASSOCIATE-RJ: ``result`` 1 permanent / 2 transient, ``source`` 1-3, ``diagnostic``."""

    result: int
    source: int
    diagnostic: int

    @property
    def reason(self) -> str:
        return _REASONS.get((self.source, self.diagnostic), f"reason {self.diagnostic}")

    @property
    def retryable(self) -> bool:
        return self.result == 2 or (self.source, self.diagnostic) in _TRANSIENT_REASONS

    def describe(self) -> str:
        result = _RESULTS.get(self.result, f"result {self.result}")
        source = _SOURCES.get(self.source, f"source {self.source}")
        return f"association rejected ({result}) by {source}: {self.reason}"


class ContextResult(IntEnum):
    ACCEPTED = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

    def describe(self) -> str:
        return self.name.lower().replace("_", " ")

    @classmethod
    def describe_code(cls, code: int) -> str:
        return cls(code).describe() if code in cls._value2member_map_ else f"result {code}"


class ConnectionOutcome(Enum):
    """Failures outside the C-STORE status: ``retryable`` unless the configuration is at fault."""

    CONNECTION_REFUSED = "connection refused"
    CONNECTION_TIMEOUT = "connection timed out"
    HOST_NOT_FOUND = "host name not resolved"
    NETWORK_ERROR = "cannot connect"
    TLS_FAILURE = "TLS handshake failed"
    NO_ASSOCIATION_RESPONSE = "no answer to the association request"
    ABORTED = "association aborted"
    NO_ACCEPTED_CONTEXT = "no accepted presentation context"
    NO_STORE_RESPONSE = "no C-STORE response"

    @property
    def retryable(self) -> bool:
        return self not in (ConnectionOutcome.TLS_FAILURE, ConnectionOutcome.NO_ACCEPTED_CONTEXT)

    @classmethod
    def of_connect_error(cls, exc: OSError) -> ConnectionOutcome:
        if isinstance(exc, ssl.SSLError):  # certificate checks, protocol mismatch
            return cls.TLS_FAILURE
        if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            return cls.CONNECTION_REFUSED
        if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
            return cls.CONNECTION_TIMEOUT
        if isinstance(exc, socket.gaierror):
            return cls.HOST_NOT_FOUND
        return cls.NETWORK_ERROR
