"""Which rules fire for a series, and for every other rule the reason it did not.

:func:`facts_for` gathers what conditions look at (the first instance's header, counts, plane,
classification, how the series arrived); :func:`evaluate` walks the rules in file order. A rule that
fires with ``stop: true`` ends the walk. Nothing is explained unless a rule fails: the fast path
only tests, and the explanation walk reruns the failed rule's tree.

What the comparisons mean is documented in :mod:`workers.rules_checker`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache, partial
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from config.rules_file import RuleSet
from config.rules_schema import Rule
from dicom_io.geometry import Plane
from dicom_io.series import Series, SeriesKind
from workers.jobs import Route
from workers.rules_checker import Checker

__all__ = ["MatchReport", "Outcome", "RuleResult", "SeriesFacts", "evaluate", "facts_for"]

_FUNCTIONAL_GROUPS = (BaseTag(0x52009229), BaseTag(0x52009230))  # Shared-, PerFrameFunctionalGroupsSequence


@dataclass(frozen=True, slots=True, eq=False)
class SeriesFacts:
    series_instance_uid: str
    header: Dataset  # the first instance's
    instances: int
    frames: int
    plane: Plane | None
    kind: SeriesKind
    route: Route
    calling_ae: str | None = None

    def attribute(self, keyword: str) -> Any:
        """The header's value (pydicom types), or None when the attribute is not there."""
        tag = _tag(keyword)  # by tag: ~5x faster than pydicom's keyword lookup
        if tag in self.header:
            return self.header[tag].value
        for group in _FUNCTIONAL_GROUPS:
            items = self.header[group].value if group in self.header else None
            if not items:
                continue
            for macro in items[0]:
                if macro.VR == "SQ" and macro.value and tag in macro.value[0]:
                    return macro.value[0][tag].value
        return None


@lru_cache(maxsize=4096)
def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    return BaseTag(tag)


def facts_for(series: Series, *, route: Route, calling_ae: str | None = None) -> SeriesFacts:
    return SeriesFacts(
        series_instance_uid=series.series_instance_uid,
        header=series.header,
        instances=len(series.instances),
        frames=len(series.frames),
        plane=series.plane,
        kind=series.kind,
        route=Route(route),
        calling_ae=calling_ae.strip() if calling_ae else None,
    )


class Outcome(StrEnum):
    FIRED = "fired"
    NOT_MATCHED = "not-matched"
    DISABLED = "disabled"
    NOT_EVALUATED = "not-evaluated"


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: Rule
    outcome: Outcome
    # NOT_MATCHED: the first failing condition, worded only when asked for (it costs more than the test)
    detail: str | Callable[[], str] = ""

    @property
    def reason(self) -> str:
        return self.detail() if callable(self.detail) else self.detail

    @property
    def fired(self) -> bool:
        return self.outcome is Outcome.FIRED

    def describe(self) -> str:
        if self.outcome is Outcome.NOT_MATCHED:
            return f"no: {self.reason}"
        if self.outcome is Outcome.NOT_EVALUATED:
            return f"not evaluated ({self.reason})"
        return "FIRES" if self.fired else "disabled"


@dataclass(frozen=True, slots=True)
class MatchReport:
    series_instance_uid: str
    results: tuple[RuleResult, ...]
    note: str | None = None  # set when the series itself rules out every rule

    @property
    def fired(self) -> list[Rule]:
        return [r.rule for r in self.results if r.fired]

    def result(self, name: str) -> RuleResult:
        for result in self.results:
            if result.rule.name == name:
                return result
        raise KeyError(name)


def evaluate(rules: RuleSet | Sequence[Rule], facts: SeriesFacts) -> MatchReport:
    """Each rule's outcome, in file order."""
    ordered = rules.rules if isinstance(rules, RuleSet) else tuple(rules)
    results: list[RuleResult] = []
    if facts.kind is SeriesKind.NON_IMAGE:
        note = "a non-image series (SR, SEG, PR, ...) is never segmented"
        for rule in ordered:
            outcome = Outcome.NOT_EVALUATED if rule.enabled else Outcome.DISABLED
            results.append(RuleResult(rule, outcome, note if rule.enabled else ""))
        return MatchReport(facts.series_instance_uid, tuple(results), note)
    check = Checker(facts)
    stopped_by: str | None = None
    for rule in ordered:
        if not rule.enabled:
            results.append(RuleResult(rule, Outcome.DISABLED))
        elif stopped_by is not None:
            results.append(RuleResult(rule, Outcome.NOT_EVALUATED, f"stopped by rule {stopped_by}"))
        elif check.test(rule.match):
            results.append(RuleResult(rule, Outcome.FIRED))
            stopped_by = rule.name if rule.stop else None
        else:
            results.append(RuleResult(rule, Outcome.NOT_MATCHED, partial(check.why, rule.match)))
    return MatchReport(facts.series_instance_uid, tuple(results))
