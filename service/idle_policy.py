"""Per-rule idle timers: the rules decide how long a quiet series may still be growing.

A rule's ``completion_idle_s`` applies to the series it fires for. Which rules fire is only known from
the series itself, so the tracker asks once the series has been quiet for the shortest timer any rule
sets (or the default, when shorter): the headers received so far are read from the spool and the
rules evaluated as the pipeline will evaluate them. Of the rules that fire and set a timer, the
longest wins — waiting too long costs minutes, completing too early splits a study. No rule that sets
a timer: nothing is read, the listener's ``completion_idle_s`` applies.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from config.rules_file import RulesError, RuleSet
from dicom_io.reading import scan
from dicom_io.series import assemble
from service.completion import IdleChoice, PendingSeries
from workers.rules import evaluate, facts_for
from workers.rules_loader import RulesSource
from workers.storage import DataDir

__all__ = ["RuleIdlePolicy"]

log = structlog.get_logger(__name__)


class RuleIdlePolicy:
    """``rules`` is a rules file or a loaded source. A file that cannot be loaded never stops the
    listener: its series get the default timer until the file is fixed."""

    def __init__(self, rules: RulesSource | Path, data: DataDir) -> None:
        self._source = rules if isinstance(rules, RulesSource) else None
        self._path = rules if isinstance(rules, Path) else None
        self._refused: str | None = None
        self.data = data

    def _rules(self) -> RuleSet | None:
        if self._source is None and self._path is not None:
            try:
                self._source = RulesSource(self._path)
            except RulesError as exc:
                if str(exc) != self._refused:  # said once per distinct problem, not at every tick
                    self._refused = str(exc)
                    log.warning("completion.rules_unreadable", path=str(self._path), error=str(exc)[:500])
                return None
        return self._source.current() if self._source is not None else None

    def shortest(self) -> float | None:
        rules = self._rules()
        timers = [r.completion_idle_s for r in rules.enabled if r.completion_idle_s] if rules else []
        return min(timers) if timers else None

    def idle_for(self, series: PendingSeries) -> IdleChoice | None:
        rules = self._rules()
        if rules is None or not any(r.completion_idle_s for r in rules.enabled):
            return None
        folder = self.data.incoming_series(series.study_instance_uid, series.series_instance_uid)
        found = [
            s
            for s in assemble(scan([folder]).instances)
            if s.series_instance_uid == series.series_instance_uid
        ]
        if not found:
            return None
        facts = facts_for(found[0], route=series.route, calling_ae=series.calling_ae)
        timed = [(r.completion_idle_s, r.name) for r in evaluate(rules, facts).fired if r.completion_idle_s]
        if not timed:
            return None
        seconds, name = max(timed)
        return IdleChoice(seconds, name)
