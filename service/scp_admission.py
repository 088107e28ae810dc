"""Whether an association request is let in: one pure decision, checked when the request arrives.

Order: shutting down, calling AE (allow-list), called AE, association limit, spool reserve (last:
the only check that asks the disk). AE titles compare exactly after stripping their padding spaces
(AE titles are case-sensitive, as dcmtk and pynetdicom treat them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.settings import ListenerSettings
from service.scp_status import Refusal

__all__ = ["AssociationRequest", "admission"]


@dataclass(frozen=True, slots=True)
class AssociationRequest:
    calling_ae: str
    called_ae: str
    active_associations: int  # already running, this one not counted


def admission(
    request: AssociationRequest,
    *,
    listener: ListenerSettings,
    ae_title: str,
    free_bytes: Callable[[], int],
    draining: bool = False,
    move_sources: frozenset[str] = frozenset(),
) -> Refusal | None:
    """The refusal for this request, or None to accept it. ``move_sources``: the AE titles of the
    C-MOVE sources, admitted with the allow-list (they store what a pull asked for)."""
    if draining:
        return Refusal.SHUTTING_DOWN
    allowed = {ae.strip() for ae in listener.allowed_calling_aes}
    if allowed and request.calling_ae.strip() not in allowed | move_sources:
        return Refusal.CALLING_AE_NOT_RECOGNISED
    if listener.check_called_ae and request.called_ae.strip() != ae_title.strip():
        return Refusal.CALLED_AE_NOT_RECOGNISED
    if request.active_associations >= listener.max_associations:
        return Refusal.TOO_MANY_ASSOCIATIONS
    if listener.spool_reserve_bytes and free_bytes() < listener.spool_reserve_bytes:
        return Refusal.SPOOL_RESERVE
    return None
