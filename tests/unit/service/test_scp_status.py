"""Named C-STORE outcomes and association refusals: the codes and reasons the listener answers with."""

from __future__ import annotations

import pytest

from config.settings import ListenerSettings
from service.scp_admission import AssociationRequest, admission
from service.scp_status import Refusal, StoreOutcome
from workers.delivery.dimse_status import StatusCategory, StoreStatus


def test_only_stored_is_success_and_every_code_reads_back_as_its_kind() -> None:
    assert StoreOutcome.STORED.status == 0x0000
    kinds = {
        StoreOutcome.OUT_OF_RESOURCES: StoreStatus.OUT_OF_RESOURCES,
        StoreOutcome.DATA_SET_DOES_NOT_MATCH_SOP_CLASS: StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        StoreOutcome.SOP_CLASS_NOT_SUPPORTED: StoreStatus.SOP_CLASS_NOT_SUPPORTED,
        StoreOutcome.MISSING_UID: StoreStatus.CANNOT_UNDERSTAND,
        StoreOutcome.INVALID_UID: StoreStatus.CANNOT_UNDERSTAND,
        StoreOutcome.SOP_INSTANCE_MISMATCH: StoreStatus.CANNOT_UNDERSTAND,
        StoreOutcome.UNREADABLE_DATA_SET: StoreStatus.CANNOT_UNDERSTAND,
        StoreOutcome.PROCESSING_FAILURE: StoreStatus.PROCESSING_FAILURE,
    }
    assert set(kinds) | {StoreOutcome.STORED} == set(StoreOutcome)
    for outcome, kind in kinds.items():
        # what a peer (and our own delivery code) makes of the code we send
        assert StoreStatus.of(outcome.status) is kind, outcome
        assert kind.category is StatusCategory.FAILURE
        assert not outcome.stored
    assert len({o.status for o in StoreOutcome}) == len(StoreOutcome)  # one code per name
    assert StoreOutcome.OUT_OF_RESOURCES.status == 0xA700


@pytest.mark.parametrize(
    ("refusal", "fields", "text"),
    [
        (
            Refusal.CALLING_AE_NOT_RECOGNISED,
            (1, 1, 3),
            "rejected (permanent) by the service user: calling AE",
        ),
        (Refusal.CALLED_AE_NOT_RECOGNISED, (1, 1, 7), "rejected (permanent) by the service user: called AE"),
        (
            Refusal.SPOOL_RESERVE,
            (2, 3, 2),
            "rejected (transient) by the service provider (presentation): local limit exceeded",
        ),
        (Refusal.TOO_MANY_ASSOCIATIONS, (2, 3, 2), "local limit exceeded"),
        (Refusal.SHUTTING_DOWN, (2, 3, 1), "temporary congestion"),
    ],
)
def test_refusals_carry_the_a_associate_rj_fields(
    refusal: Refusal, fields: tuple[int, ...], text: str
) -> None:
    assert refusal.fields == fields
    assert text in refusal.describe()
    assert refusal.rejection.retryable is (fields[0] == 2)


def _decide(
    listener: ListenerSettings,
    calling: str = "CT1",
    called: str = "MIPGW",
    *,
    free: int = 10**12,
    active: int = 0,
    draining: bool = False,
    move_sources: frozenset[str] = frozenset(),
) -> Refusal | None:
    return admission(
        AssociationRequest(calling, called, active_associations=active),
        listener=listener,
        ae_title="MIPGW",
        free_bytes=lambda: free,
        draining=draining,
        move_sources=move_sources,
    )


def test_allow_list_and_called_ae() -> None:
    open_to_all = ListenerSettings(check_called_ae=False)
    assert _decide(open_to_all, "ANYONE", "WHATEVER") is None
    strict = ListenerSettings(allowed_calling_aes=("CT1", "MR2 "))
    assert _decide(strict, "CT1") is None
    assert _decide(strict, "MR2") is None  # padding does not count
    assert _decide(strict, "ct1") is Refusal.CALLING_AE_NOT_RECOGNISED  # AE titles are case-sensitive
    assert _decide(strict, "CT1", "OTHER") is Refusal.CALLED_AE_NOT_RECOGNISED
    assert _decide(strict, "CT1", "MIPGW   ") is None
    assert _decide(ListenerSettings(check_called_ae=False), "CT1", "OTHER") is None
    # a C-MOVE source stores what a pull asked for: admitted with the allow-list, still by called AE
    assert _decide(strict, "PACS", move_sources=frozenset({"PACS"})) is None
    assert (
        _decide(strict, "PACS", "OTHER", move_sources=frozenset({"PACS"})) is Refusal.CALLED_AE_NOT_RECOGNISED
    )
    assert _decide(strict, "OTHER", move_sources=frozenset({"PACS"})) is Refusal.CALLING_AE_NOT_RECOGNISED


def test_limits_reserve_and_shutdown() -> None:
    listener = ListenerSettings(max_associations=2, spool_reserve_bytes=1000)
    assert _decide(listener, active=1) is None
    assert _decide(listener, active=2) is Refusal.TOO_MANY_ASSOCIATIONS
    assert _decide(listener, free=999) is Refusal.SPOOL_RESERVE
    assert _decide(listener, free=1000) is None
    assert _decide(ListenerSettings(spool_reserve_bytes=0), free=0) is None  # no reserve: never asks
    assert _decide(listener, draining=True) is Refusal.SHUTTING_DOWN
    # a stranger is told who it is not before anything about our disk
    strict = ListenerSettings(allowed_calling_aes=("CT1",), spool_reserve_bytes=1000)
    assert _decide(strict, "X", free=0) is Refusal.CALLING_AE_NOT_RECOGNISED
