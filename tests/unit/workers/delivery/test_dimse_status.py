"""Every C-STORE outcome has a name and a retry decision."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from workers.delivery.dimse_status import (
    ConnectionOutcome,
    ContextResult,
    Rejection,
    StatusCategory,
    StoreStatus,
)


@pytest.mark.parametrize(
    ("code", "status", "category", "retryable"),
    [
        (0x0000, StoreStatus.SUCCESS, StatusCategory.SUCCESS, False),
        (0xB000, StoreStatus.COERCION_OF_DATA_ELEMENTS, StatusCategory.WARNING, False),
        (0xB006, StoreStatus.ELEMENTS_DISCARDED, StatusCategory.WARNING, False),
        (0xB007, StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING, StatusCategory.WARNING, False),
        (0xB123, StoreStatus.OTHER_WARNING, StatusCategory.WARNING, False),
        (0x0001, StoreStatus.OTHER_WARNING, StatusCategory.WARNING, False),
        (0x0107, StoreStatus.OTHER_WARNING, StatusCategory.WARNING, False),
        (0xA700, StoreStatus.OUT_OF_RESOURCES, StatusCategory.FAILURE, True),
        (0xA7FF, StoreStatus.OUT_OF_RESOURCES, StatusCategory.FAILURE, True),
        (0xA900, StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, StatusCategory.FAILURE, False),
        (0xA9FF, StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, StatusCategory.FAILURE, False),
        (0xC000, StoreStatus.CANNOT_UNDERSTAND, StatusCategory.FAILURE, False),
        (0xC211, StoreStatus.CANNOT_UNDERSTAND, StatusCategory.FAILURE, False),
        (0xCFFF, StoreStatus.CANNOT_UNDERSTAND, StatusCategory.FAILURE, False),
        (0x0110, StoreStatus.PROCESSING_FAILURE, StatusCategory.FAILURE, True),
        (0x0117, StoreStatus.INVALID_SOP_INSTANCE, StatusCategory.FAILURE, False),
        (0x0122, StoreStatus.SOP_CLASS_NOT_SUPPORTED, StatusCategory.FAILURE, False),
        (0x0124, StoreStatus.NOT_AUTHORISED, StatusCategory.FAILURE, False),
        (0x0210, StoreStatus.DUPLICATE_INVOCATION, StatusCategory.FAILURE, True),
        (0x0211, StoreStatus.UNRECOGNISED_OPERATION, StatusCategory.FAILURE, False),
        (0x0212, StoreStatus.MISTYPED_ARGUMENT, StatusCategory.FAILURE, False),
        (0x0213, StoreStatus.RESOURCE_LIMITATION, StatusCategory.FAILURE, True),
        (0xFE00, StoreStatus.OTHER_FAILURE, StatusCategory.FAILURE, True),
        (0xD000, StoreStatus.OTHER_FAILURE, StatusCategory.FAILURE, True),
    ],
)
def test_store_status_table(
    code: int, status: StoreStatus, category: StatusCategory, retryable: bool
) -> None:
    named = StoreStatus.of(code)
    assert named is status
    assert named.category is category
    assert named.retryable is retryable


@pytest.mark.parametrize(
    ("rejection", "text", "retryable"),
    [
        (
            Rejection(1, 1, 7),
            "association rejected (permanent) by the service user: called AE title not recognised",
            False,
        ),
        (
            Rejection(1, 1, 3),
            "association rejected (permanent) by the service user: calling AE title not recognised",
            False,
        ),
        (Rejection(1, 1, 2), "by the service user: application context name not supported", False),
        (Rejection(1, 1, 1), "by the service user: no reason given", False),
        (Rejection(1, 2, 2), "by the service provider (ACSE): protocol version not supported", False),
        (
            Rejection(2, 3, 1),
            "(transient) by the service provider (presentation): temporary congestion",
            True,
        ),
        (
            Rejection(1, 3, 2),
            "(permanent) by the service provider (presentation): local limit exceeded",
            True,
        ),
        (Rejection(2, 1, 7), "(transient) by the service user: called AE title not recognised", True),
        (Rejection(1, 1, 9), "by the service user: reason 9", False),
    ],
)
def test_rejections_are_decoded(rejection: Rejection, text: str, retryable: bool) -> None:
    assert text in rejection.describe()
    assert rejection.retryable is retryable


def test_context_results_are_named() -> None:
    assert ContextResult(3).describe() == "abstract syntax not supported"
    assert ContextResult(4).describe() == "transfer syntaxes not supported"
    assert ContextResult.describe_code(3) == "abstract syntax not supported"
    assert ContextResult.describe_code(9) == "result 9"


@pytest.mark.parametrize(
    ("exc", "outcome", "retryable"),
    [
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            ConnectionOutcome.CONNECTION_REFUSED,
            True,
        ),
        (TimeoutError("timed out"), ConnectionOutcome.CONNECTION_TIMEOUT, True),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), ConnectionOutcome.CONNECTION_TIMEOUT, True),
        (socket.gaierror(-2, "Name or service not known"), ConnectionOutcome.HOST_NOT_FOUND, True),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), ConnectionOutcome.NETWORK_ERROR, True),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), ConnectionOutcome.TLS_FAILURE, False),
        (ssl.SSLError(1, "wrong version number"), ConnectionOutcome.TLS_FAILURE, False),
    ],
)
def test_connect_errors_are_named(exc: OSError, outcome: ConnectionOutcome, retryable: bool) -> None:
    assert ConnectionOutcome.of_connect_error(exc) is outcome
    assert outcome.retryable is retryable


def test_only_configuration_faults_are_final() -> None:
    final = {outcome for outcome in ConnectionOutcome if not outcome.retryable}
    assert final == {ConnectionOutcome.TLS_FAILURE, ConnectionOutcome.NO_ACCEPTED_CONTEXT}
