"""The generated parts of the DICOM Conformance Statement (``docs/conformance.md``), from the code itself.

The statement's prose is written by hand; every table that states a fact the code decides — the SOP
classes and transfer syntaxes the listener accepts, its statuses and refusals, what the sender and
the puller propose, the DICOMweb routes, the coded concepts of the default rules, the configuration
defaults — sits between ``<!-- generated:NAME -->`` and ``<!-- end:NAME -->`` markers and is rendered
here. ``tests/unit/test_conformance_doc.py`` fails when the document and the code disagree;
``python -m service.conformance --write`` brings the document up to date.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AllStoragePresentationContexts, StoragePresentationContexts
from pynetdicom.presentation import DEFAULT_TRANSFER_SYNTAXES  # type: ignore[attr-defined]
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from config.rules_file import default_rules_path, load_rules
from config.settings import ApiSettings, ListenerSettings
from dicom_io.codes import coded_target
from service.scp import TRANSFER_SYNTAXES
from service.scp_status import Refusal, StoreOutcome
from workers import pull
from workers.delivery.dimse import proposed_transfer_syntaxes
from workers.dicom_identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = ["BLOCKS", "DOCUMENT", "render", "stale_blocks", "update"]

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"

SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.4")
# what the SEG writer (highdicom's default) encodes, and so what the sender proposes first
SEG_TRANSFER_SYNTAX = ExplicitVRLittleEndian

_BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end:(?P=name) -->)", re.S)


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _uid_row(value: str) -> tuple[str, str]:
    return UID(value).name, f"`{value}`"


def storage_scp_sop_classes() -> str:
    rows = [_uid_row(Verification)]
    rows += [_uid_row(str(cx.abstract_syntax)) for cx in AllStoragePresentationContexts]
    return f"{len(rows)} SOP classes.\n\n" + _table(["SOP class", "UID"], rows)


def storage_scp_transfer_syntaxes() -> str:
    return _table(["Transfer syntax", "UID"], (_uid_row(ts) for ts in TRANSFER_SYNTAXES))


def c_store_statuses() -> str:
    return _table(
        ["Status", "Meaning", "When"],
        ((f"`0x{o.status:04X}`", o.name, o.value) for o in StoreOutcome),
    )


def association_refusals() -> str:
    rows = []
    for refusal in Refusal:
        result, source, reason = refusal.fields
        rows.append((refusal.value, result, source, reason, refusal.rejection.describe()))
    return _table(["Condition", "Result", "Source", "Reason", "As the peer logs it"], rows)


def stow_failure_reasons() -> str:
    from service.api.stow_parts import FailureReason

    return _table(
        ["FailureReason (0008,1197)", "Name", "When"],
        ((f"`0x{reason.value:04X}`", reason.name, reason.meaning) for reason in FailureReason),
    )


def storage_scu() -> str:
    proposed = proposed_transfer_syntaxes(SEG_TRANSFER_SYNTAX)
    return _table(
        ["SOP class", "UID", "Transfer syntaxes proposed (one context each)", "Role"],
        [(*_uid_row(SEGMENTATION_STORAGE), ", ".join(UID(ts).name for ts in proposed), "SCU")],
    )


def query_retrieve_scu() -> str:
    # pynetdicom proposes its default transfer syntaxes when none are given (workers/pull.py gives none)
    syntaxes = ", ".join(UID(ts).name for ts in DEFAULT_TRANSFER_SYNTAXES)
    rows = [
        (*_uid_row(pull._STUDY_ROOT_FIND), syntaxes, "SCU", "SERIES"),
        (*_uid_row(pull._STUDY_ROOT_GET), syntaxes, "SCU", "STUDY, SERIES"),
        (*_uid_row(pull._STUDY_ROOT_MOVE), syntaxes, "SCU", "STUDY, SERIES"),
    ]
    storage = StoragePresentationContexts[: pull.PULL_STORAGE_CONTEXTS]
    first, last = storage[0].abstract_syntax, storage[-1].abstract_syntax
    text = _table(["SOP class", "UID", "Transfer syntaxes", "Role", "Levels"], rows)
    return text + (
        f"\nOn the C-GET association the gateway also proposes the first {len(storage)} storage SOP classes "
        f"of pynetdicom's list ({UID(str(first)).name} … {UID(str(last)).name}) with the SCP role "
        "(SCP/SCU Role Selection), each in the same transfer syntaxes.\n"
    )


def dicomweb_services() -> str:
    from service.api import health, jobs, metrics, stow

    rows: list[tuple[str, str, str]] = []
    for module in (stow, jobs, health, metrics):
        for route in module.router.routes:
            methods = sorted(getattr(route, "methods", ()) or ())
            summary = str(getattr(route, "summary", None) or getattr(route, "name", ""))
            path = str(getattr(route, "path", ""))
            rows.extend((method, f"`{path}`", summary) for method in methods)
    return _table(["Method", "Path", "What it does"], rows)


def coded_concepts() -> str:
    rules = load_rules(default_rules_path())
    prompts: dict[str, None] = {}
    for rule in rules.rules:
        for group in rule.action.groups:
            prompts.update(dict.fromkeys(group.prompts))
    rows = []
    for prompt in prompts:
        target = coded_target(prompt)
        modifier = target.type_modifier
        rows.append(
            (
                prompt,
                _code(target.category),
                _code(target.type),
                _code(modifier) if modifier is not None else "",
            )
        )
    return _table(
        ["Prompt (default rules)", "Segmented Property Category", "Segmented Property Type", "Type Modifier"],
        rows,
    )


def _code(code: object) -> str:
    return f'({code.value}, {code.scheme_designator}, "{code.meaning}")'  # type: ignore[attr-defined]


def configuration() -> str:
    rows = []
    for prefix, model in (("listener", ListenerSettings), ("api", ApiSettings)):
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = "" if default in ((), None) else f"`{default}`"
            rows.append((f"`{prefix}.{name}`", f"`MIPGW_{prefix.upper()}__{name.upper()}`", shown))
    return _table(["Setting", "Environment", "Default"], rows)


def implementation() -> str:
    return _table(
        ["Item", "Value"],
        [
            ("Implementation Class UID (associations, listener files)", f"`{IMPLEMENTATION_CLASS_UID}`"),
            ("Implementation Version Name", f"`{IMPLEMENTATION_VERSION_NAME}`"),
        ],
    )


BLOCKS: dict[str, Callable[[], str]] = {
    "storage-scp-sop-classes": storage_scp_sop_classes,
    "storage-scp-transfer-syntaxes": storage_scp_transfer_syntaxes,
    "c-store-statuses": c_store_statuses,
    "association-refusals": association_refusals,
    "stow-failure-reasons": stow_failure_reasons,
    "storage-scu": storage_scu,
    "query-retrieve-scu": query_retrieve_scu,
    "dicomweb-services": dicomweb_services,
    "coded-concepts": coded_concepts,
    "configuration": configuration,
    "implementation": implementation,
}


def render(text: str) -> str:
    """``text`` with every generated block rendered afresh; unknown block names are an error."""

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"docs/conformance.md names an unknown generated block {name!r}")
        return f"{match.group(1)}{BLOCKS[name]()}{match.group(4)}"

    return _BLOCK.sub(fill, text)


def stale_blocks(text: str) -> list[str]:
    """The names of the blocks whose text differs from what the code renders now."""
    present = {m["name"]: m["body"] for m in _BLOCK.finditer(text)}
    return [name for name, body in present.items() if name in BLOCKS and body != BLOCKS[name]()]


def update(path: Path = DOCUMENT) -> bool:
    text = path.read_text(encoding="utf-8")
    fresh = render(text)
    if fresh == text:
        return False
    path.write_text(fresh, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.conformance", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the generated blocks in place")
    args = parser.parse_args(argv)
    if args.write:
        print("updated" if update() else "up to date", DOCUMENT)
        return 0
    stale = stale_blocks(DOCUMENT.read_text(encoding="utf-8"))
    for name in stale:
        print(f"{DOCUMENT}: block {name!r} differs from the code", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
