"""``mip-gateway rules check`` and ``rules test``: a rules file validated, and tried on DICOM folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from config.rules_file import RulesError, RuleSet, configured_rules_path, load_rules

if TYPE_CHECKING:
    from config.rules_schema import Rule
    from config.settings import Settings
    from dicom_io.series import Series
    from workers.rules import MatchReport

__all__ = ["run_check", "run_test"]


def run_check(args: argparse.Namespace) -> int:
    settings = None if args.no_settings else _settings()
    path = Path(args.file) if args.file else configured_rules_path(settings)
    try:
        rules = load_rules(path)
        if settings is not None and (settings.endpoints or settings.destinations):
            rules.validate_against(settings)
        elif not args.no_settings:
            print("endpoints and destinations not checked: none in the settings", file=sys.stderr)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem{'s' * (len(exc.problems) != 1)} in {path}")
        return 1
    count, enabled = len(rules.rules), len(rules.enabled)
    print(f"{count} rule{'s' * (count != 1)} OK ({enabled} enabled)")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from dicom_io.reading import scan
    from dicom_io.series import assemble
    from workers.jobs import Route
    from workers.rules import evaluate, facts_for

    path = Path(args.rules) if args.rules else configured_rules_path(_settings())
    try:
        rules = load_rules(path)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"rules: {path} ({len(rules.rules)} rules, {len(rules.enabled)} enabled)")
    result = scan(args.paths)
    for series in assemble(result.instances):
        facts = facts_for(series, route=Route(args.route), calling_ae=args.calling_ae)
        print()
        print("\n".join(_block(series, evaluate(rules, facts), rules)))
    if not result.instances:
        print("no DICOM instances found", file=sys.stderr)
        return 1
    return 0


def _settings() -> Settings | None:
    from pydantic import ValidationError

    from config.settings import get_settings

    try:
        return get_settings()
    except (ValidationError, OSError, ValueError) as exc:
        print(f"settings not loaded, using the packaged rules: {exc}", file=sys.stderr)
        return None


def _block(series: Series, report: MatchReport, rules: RuleSet) -> list[str]:
    header = series.header
    what = [series.modality, str(series.kind)]
    if series.frames:
        n = len(series.frames)
        what.append(f"{n} {'slice' if series.kind == 'volume' else 'frame'}{'s' * (n != 1)}")
    if series.plane is not None:
        what.append(str(series.plane))
    lines = [
        f"series {series.series_instance_uid}",
        f"  {', '.join(what)}: {str(header.get('SeriesDescription', '')).strip() or '(no description)'!r}"
        f" in study {str(header.get('StudyDescription', '')).strip() or '(no description)'!r}",
    ]
    if report.note:
        lines.append(f"  {report.note}")
    width = max((len(r.name) for r in rules.rules), default=0)
    lines.extend(f"  {r.rule.name:<{width}}  {r.describe()}" for r in report.results)
    lines.extend(f"  → {rule.name}: {_action(rule, series.modality)}" for rule in report.fired)
    if not report.fired:
        lines.append("  → no rule fires: the series would be skipped")
    return lines


def _action(rule: Rule, modality: str) -> str:
    from dicom_io.intensity import default_normalisation

    action = rule.action
    default = default_normalisation(modality, action.model)
    default_name = default.window.name if default.window is not None else str(default.kind)
    groups = " + ".join(
        f"[{', '.join(g.prompts)}] window {g.window or f'default ({default_name})'}" for g in action.groups
    )
    parts = [f"{action.model} model via {action.endpoint}", groups]
    if (nifti := action.nifti_options) is not None:
        parts.append(f"NIfTI {nifti.intensity} {nifti.layout}")
    seg = action.seg
    parts.append(f"SEG {seg.type.lower()} #{seg.series_number} {seg.series_description!r}")
    parts.append(f"to {', '.join(action.destinations)}; priority {rule.priority}")
    return "; ".join(parts)
