"""docs/conformance.md states what the code does: its generated tables match the code, and they are there."""

from __future__ import annotations

import re

from pynetdicom import AllStoragePresentationContexts

from service import conformance
from service.scp import TRANSFER_SYNTAXES
from service.scp_status import StoreOutcome


def _text() -> str:
    return conformance.DOCUMENT.read_text(encoding="utf-8")


def test_every_generated_block_matches_the_code() -> None:
    stale = conformance.stale_blocks(_text())
    assert not stale, f"run `python -m service.conformance --write`: {stale} differ from the code"


def test_every_block_the_code_renders_is_in_the_document() -> None:
    text = _text()
    missing = [name for name in conformance.BLOCKS if f"<!-- generated:{name} -->" not in text]
    assert not missing


def test_the_document_names_what_the_listener_accepts() -> None:
    text = _text()
    for context in AllStoragePresentationContexts:
        assert f"`{context.abstract_syntax}`" in text
    for syntax in TRANSFER_SYNTAXES:
        assert f"`{syntax}`" in text
    for outcome in StoreOutcome:
        assert f"`0x{outcome.status:04X}`" in text


def test_a_changed_fact_is_caught() -> None:
    text = _text()
    tampered = text.replace("| `0xC002` | INVALID_UID", "| `0xC002` | SOMETHING_ELSE", 1)
    assert tampered != text
    assert conformance.stale_blocks(tampered) == ["c-store-statuses"]
    assert conformance.render(tampered) == text


def test_the_outline_follows_ps3_2() -> None:
    headings = re.findall(r"^## (\d) ", _text(), flags=re.M)
    assert headings == ["1", "2", "3", "4", "5", "6", "7", "8"]
