"""Deterministic UIDs for the objects the gateway writes.

A retried job must write the *same* SEG (same Series and SOP Instance UIDs) so that the PACS
replaces or de-duplicates it instead of showing the radiologist two copies; any change of input
must give a new UID. So UIDs are derived from their inputs, never drawn at random.

Form: ``2.25.<decimal of a 128-bit UUID>`` (ISO/IEC 9834-8 / ITU-T X.667, DICOM PS3.5 §B.2), which
needs no registered organisation root. The UUID is a name-based version-5 UUID (RFC 4122 §4.3)
in a fixed namespace, so it is a genuine UUID rather than hash bits dressed as one. The name is
a purpose tag followed by the inputs, each length-prefixed, so ``("a", "bc")`` and ``("ab", "c")``
never produce the same name. SHA-1 inside UUIDv5 is used for naming, not for security: nobody
gains anything by forging a collision here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence

__all__ = ["child_uid", "is_valid_uid", "seg_instance_uid", "seg_series_uid"]

# PS3.5 §9.1: components of digits without leading zeros, separated by dots, at most 64 chars.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_MAX_UID_LENGTH = 64

# Fixed for ever: changing it would change every UID the gateway has ever written.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mip-gateway:dicom-uids")


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` follows the DICOM UID grammar (PS3.5 §9.1), including the 64-char limit."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_UID_LENGTH and bool(_UID_RE.match(value))


def _uid_from_name(purpose: str, parts: Iterable[str]) -> str:
    # "<len>:<text>" per part: a prefix code, so the concatenation can be parsed back uniquely.
    name = "".join(f"{len(p)}:{p}" for p in (purpose, *parts))
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def seg_series_uid(source_series_uid: str, rule_name: str, model_name: str, model_version: str) -> str:
    """The Series Instance UID of the SEG written for one source series by one rule and model.

    Re-running the same rule with the same model on the same series lands in the same SEG series;
    a new model version starts a new series, so old and new results stay apart in the viewer.
    """
    _require_uid(source_series_uid, "source_series_uid")
    return _uid_from_name("seg-series", (source_series_uid, rule_name, model_name, model_version))


def seg_instance_uid(
    seg_series_uid: str, source_sop_instance_uids: Iterable[str], content_key: Sequence[str] = ()
) -> str:
    """The SOP Instance UID of a SEG in ``seg_series_uid`` that references exactly these sources.

    Order-independent (the set is sorted) and insensitive to duplicates; adding or removing one
    source instance gives a new UID in the same series. ``content_key`` names what the SEG says
    beyond its sources (the prompts asked, the segmentation type), so an edited rule that keeps its
    name never reuses a UID for different content.
    """
    _require_uid(seg_series_uid, "seg_series_uid")
    sources = sorted(set(source_sop_instance_uids))
    if not sources:
        raise ValueError("a SEG instance UID needs at least one source SOP Instance UID")
    for uid in sources:
        _require_uid(uid, "source SOP Instance UID")
    return _uid_from_name("seg-instance", (seg_series_uid, str(len(content_key)), *content_key, *sources))


def child_uid(parent_uid: str, purpose: str) -> str:
    """A UID owned by ``parent_uid`` for one ``purpose`` (e.g. a dimension organisation of a SEG)."""
    _require_uid(parent_uid, "parent_uid")
    return _uid_from_name("child", (parent_uid, purpose))


def _require_uid(value: str, what: str) -> None:
    if not is_valid_uid(value):
        raise ValueError(f"{what} is not a valid DICOM UID: {value!r}")
