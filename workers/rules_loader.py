"""The rules in force, reloaded when their file changes; a broken edit never replaces good rules.

:meth:`RulesSource.current` costs one ``stat()`` while the file is unchanged (mtime_ns and size).
When those change, the file is read and hashed; the same content (a ``touch``, an editor's
rewrite) keeps the loaded rules. New content is validated (and checked against the settings, when
given): on success it is in force from this call on; on failure the refusal is logged with every
problem and kept in :attr:`RulesSource.last_error`, the last good rules stay, and the same broken
version is not parsed again. Putting the good file back clears the error.

Editors that write in place can expose a half-written file for a moment: it is refused like any
broken edit, and the complete file, having another size or mtime, is loaded on a later call.
Replacing the file by rename (what most editors and ``kubectl`` config maps do) avoids the window.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from config.rules_file import RuleProblem, RulesError, RuleSet, parse_rules

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["RulesSource"]

_log = structlog.get_logger(__name__)

_StatKey = tuple[int, int]  # (st_mtime_ns, st_size)


class RulesSource:
    """Thread-safe; one per process is enough. Raises RulesError at start when the file is broken."""

    def __init__(self, path: Path | str, *, settings: Settings | None = None) -> None:
        self.path = Path(path)
        self._settings = settings
        self._lock = threading.RLock()
        key, data = self._read()
        self._rules = self._parse(data, key)  # no last good rules yet: let the error out
        self._key: _StatKey = key
        self._refused: _StatKey | None = None
        self._last_error: RulesError | None = None
        _log.info(
            "rules_loaded", path=str(self.path), rules=len(self._rules.rules), sha256=self._rules.sha256
        )

    @property
    def last_error(self) -> RulesError | None:
        """Why the file's current content is not in force, or None when it is."""
        return self._last_error

    def current(self) -> RuleSet:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            return self._refuse(None, RulesError([self._problem(f"cannot read: {exc.strerror or exc}")]))
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self._key:
            if self._last_error is not None:  # the good file is back as it was (e.g. moved back)
                with self._lock:
                    self._refused, self._last_error = None, None
            return self._rules
        if key == self._refused:
            return self._rules
        with self._lock:
            if key == self._key or key == self._refused:  # another thread got here first
                return self._rules
            try:
                key, data = self._read()
            except RulesError as exc:
                return self._refuse(None, exc)
            if hashlib.sha256(data).hexdigest() == self._rules.sha256:
                self._key, self._refused, self._last_error = key, None, None
                return self._rules
            try:
                rules = self._parse(data, key)
            except RulesError as exc:
                return self._refuse(key, exc)
            self._rules, self._key, self._refused, self._last_error = rules, key, None, None
            _log.info("rules_reloaded", path=str(self.path), rules=len(rules.rules), sha256=rules.sha256)
            return rules

    def _read(self) -> tuple[_StatKey, bytes]:
        try:
            with open(self.path, "rb") as fh:
                stat = os.fstat(fh.fileno())
                return (stat.st_mtime_ns, stat.st_size), fh.read()
        except OSError as exc:
            raise RulesError([self._problem(f"cannot read: {exc.strerror or exc}")]) from exc

    def _parse(self, data: bytes, key: _StatKey) -> RuleSet:
        rules = parse_rules(data, source=str(self.path), mtime_ns=key[0])
        if self._settings is not None:
            rules.validate_against(self._settings)
        return rules

    def _problem(self, message: str) -> RuleProblem:
        return RuleProblem(str(self.path), None, message)

    def _refuse(self, key: _StatKey | None, error: RulesError) -> RuleSet:
        with self._lock:
            repeated = self._last_error is not None and str(self._last_error) == str(error)
            self._refused, self._last_error = key, error
        if not repeated:
            _log.error(
                "rules_reload_refused",
                path=str(self.path),
                errors=[str(p) for p in error.problems],
                in_force=self._rules.sha256,
            )
        return self._rules
