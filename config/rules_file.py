"""Loading a rules file: YAML → a validated, frozen :class:`RuleSet`, every problem tied to its line.

    ValueError
     └── RulesError     all problems of a rules file (or of the rules against the settings), each
                        printed as ``FILE:LINE: rule 'NAME': message``

Line numbers come from PyYAML's composed node tree (``SafeLoader``; node start marks are kept): each
mapping key and sequence item is indexed by its path (``("rules", 2, "match", "all", 0)``). A
pydantic error location is walked along that index, skipping what pydantic adds itself (the
condition tags, union member names), down to the deepest node it names; a missing key reports its
parent's line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from config.rules_conditions import StrictModel
from config.rules_schema import Action, Rule, action_problems

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "RuleProblem",
    "RuleSet",
    "RulesError",
    "action_problems_against",
    "configured_rules_path",
    "default_rules_path",
    "load_rules",
    "parse_rules",
]

YamlPath = tuple[str | int, ...]
_TOP_KEYS = ("version", "rules")


def _model_keys(model: type[StrictModel]) -> set[str]:
    keys = {f.alias or name for name, f in model.model_fields.items()}
    for sub in model.__subclasses__():
        keys |= _model_keys(sub)
    return keys


_KNOWN_KEYS = sorted(_model_keys(StrictModel))


@dataclass(frozen=True, slots=True)
class RuleProblem:
    source: str
    line: int | None
    message: str
    rule: str | None = None  # the rule's name, or "#N" when it has none (yet)

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:" if self.line is not None else f"{self.source}:"
        who = ""
        if self.rule is not None:
            who = f" rule {self.rule}:" if self.rule.startswith("#") else f" rule '{self.rule}':"
        return f"{where}{who} {self.message}"


class RulesError(ValueError):
    """Every problem found, in file order."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: p.line or 0))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of one file version, in file order."""

    rules: tuple[Rule, ...]
    source: str
    sha256: str
    mtime_ns: int | None = None
    size: int = 0
    lines: Mapping[YamlPath, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def get(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def problems_against(self, settings: Settings) -> list[RuleProblem]:
        """Enabled rules' endpoints (and their model) and destinations that the settings lack.

        Disabled rules are not checked: they may name an endpoint a site has not set up yet."""
        problems: list[RuleProblem] = []
        for i, rule in enumerate(self.rules):
            if not rule.enabled:
                continue
            for path, message in action_problems_against(rule.action, settings):
                line = _line(self.lines, ("rules", i, "action", *path))
                problems.append(RuleProblem(self.source, line, message, rule.name))
        return problems

    def validate_against(self, settings: Settings) -> None:
        if problems := self.problems_against(settings):
            raise RulesError(problems)


def action_problems_against(action: Action, settings: Settings) -> list[tuple[YamlPath, str]]:
    """The action's endpoint (and its model) and destinations that the settings lack: (path under
    ``action``, message). Rules files and the inline actions of ``POST /jobs`` are checked alike."""
    found: list[tuple[YamlPath, str]] = []
    endpoints = ", ".join(settings.endpoints) or "none configured"
    destinations = ", ".join(settings.destinations) or "none configured"
    endpoint = settings.endpoints.get(action.endpoint)
    if endpoint is None:
        found.append((("endpoint",), f"endpoint {action.endpoint!r} is not configured ({endpoints})"))
    elif endpoint.model != action.model:
        message = f"model {action.model}, but endpoint {action.endpoint!r} serves {endpoint.model}"
        found.append((("model",), message))
    for j, name in enumerate(action.destinations):
        if name not in settings.destinations:
            found.append((("destinations", j), f"destination {name!r} is not configured ({destinations})"))
    return found


def default_rules_path() -> Path:
    """The packaged ``config/rules.yaml``."""
    resource = resources.files("config") / "rules.yaml"
    if not isinstance(resource, Path):  # pragma: no cover - zipped installs
        raise RuntimeError("the packaged rules.yaml is not a plain file")
    return resource


def configured_rules_path(settings: Settings | None) -> Path:
    if settings is not None and settings.rules_file is not None:
        return settings.rules_file
    return default_rules_path()


def load_rules(path: Path | str) -> RuleSet:
    """Read and validate a rules file, or RulesError listing every problem."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            data = fh.read()
    except OSError as exc:
        raise RulesError([RuleProblem(source, None, f"cannot read: {exc.strerror or exc}")]) from exc
    return parse_rules(data, source=source, mtime_ns=stat.st_mtime_ns)


def parse_rules(text: str | bytes, *, source: str = "<rules>", mtime_ns: int | None = None) -> RuleSet:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    try:
        document, lines, problems = _compose(raw.decode("utf-8"), source)
    except UnicodeDecodeError as exc:
        raise RulesError([RuleProblem(source, None, f"not UTF-8 text: {exc}")]) from exc
    rules = _validate(document, lines, source, problems)
    if problems:
        raise RulesError(problems)
    return RuleSet(
        rules=tuple(rules),
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        mtime_ns=mtime_ns,
        size=len(raw),
        lines=MappingProxyType(lines),
    )


def _compose(text: str, source: str) -> tuple[Any, dict[YamlPath, int], list[RuleProblem]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RulesError([RuleProblem(source, line, f"not valid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise RulesError([RuleProblem(source, None, f"not valid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    lines: dict[YamlPath, int] = {}
    problems: list[RuleProblem] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _index(node, (), lines, problems, source)
    return document, lines, problems


def _index(
    node: Node, path: YamlPath, lines: dict[YamlPath, int], problems: list[RuleProblem], source: str
) -> None:
    if len(path) > 64:  # a recursive alias; nothing a rules file needs
        return
    if isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else str(key_node.start_mark)
            line = key_node.start_mark.line + 1
            if key in first:
                problems.append(
                    RuleProblem(source, line, f"duplicate key '{key}' (first on line {first[key]})")
                )
            first.setdefault(key, line)
            lines[(*path, key)] = line
            _index(value_node, (*path, key), lines, problems, source)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index(item, (*path, i), lines, problems, source)


def _resolve(lines: Mapping[YamlPath, int], path: YamlPath) -> YamlPath:
    """The deepest indexed path along ``path``, skipping parts the file does not have."""
    found: YamlPath = ()
    for part in path:
        if (*found, part) in lines:
            found = (*found, part)
    return found


def _line(lines: Mapping[YamlPath, int], path: YamlPath) -> int | None:
    return lines.get(_resolve(lines, path))


def _dotted(path: YamlPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _validate(
    document: Any, lines: Mapping[YamlPath, int], source: str, problems: list[RuleProblem]
) -> list[Rule]:
    def top(message: str, path: YamlPath = ()) -> None:
        problems.append(RuleProblem(source, _line(lines, path), message))

    if not isinstance(document, dict):
        top("a rules file is a mapping with 'version: 1' and 'rules:'")
        return []
    for key in document:
        if key not in _TOP_KEYS:
            top(f"unknown key '{key}' (a rules file has version and rules)", (key,))
    if document.get("version") != 1:
        top("version must be 1", ("version",))
    raw_rules = document.get("rules") or []
    if not isinstance(raw_rules, list):
        top("rules must be a list of rules", ("rules",))
        return []
    rules: list[Rule] = []
    first_line: dict[str, int | None] = {}
    for i, raw in enumerate(raw_rules):
        base: YamlPath = ("rules", i)
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) and name else f"#{i + 1}"

        def add(path: YamlPath, message: str, label: str = label) -> None:
            problems.append(RuleProblem(source, _line(lines, path), message, label))

        if not isinstance(raw, dict):
            add(base, "a rule is a mapping with name, match and action")
            continue
        if isinstance(name, str) and name in first_line:
            add((*base, "name"), f"duplicate rule name (first on line {first_line[name]})")
        elif isinstance(name, str):
            first_line[name] = _line(lines, (*base, "name"))
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as exc:
            for path, message in _pydantic_problems(exc, lines, base):
                add(path, message)
            action = _valid_action(raw.get("action"))  # its cross-field problems, reported now too
        else:
            rules.append(_with_defaults(rule, position=i + 1))
            action = rule.action
        for path, message in action_problems(action) if action is not None else ():
            add((*base, "action", *path), f"{_dotted(('action', *path))}: {message}")
    return rules


def _valid_action(raw: Any) -> Action | None:
    try:
        return Action.model_validate(raw)
    except ValidationError:
        return None


def _pydantic_problems(
    exc: ValidationError, lines: Mapping[YamlPath, int], base: YamlPath
) -> list[tuple[YamlPath, str]]:
    found: dict[YamlPath, tuple[YamlPath, str]] = {}
    for error in exc.errors():
        loc: YamlPath = (*base, *error["loc"])
        kind, message = error["type"], str(error["msg"]).removeprefix("Value error, ")
        if kind == "too_short" and error.get("input"):
            continue  # the items themselves failed and are reported
        resolved = _resolve(lines, loc)
        field_name = _dotted(resolved[len(base) :])
        if kind == "missing":
            key, message = (*resolved, loc[-1]), f"missing '{loc[-1]}'"
        elif kind == "extra_forbidden":
            close = get_close_matches(str(loc[-1]), _KNOWN_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            key, message = resolved, f"unknown key '{loc[-1]}'{hint}"
        else:
            key, message = resolved, f"{field_name}: {message}" if field_name else message
        found.setdefault(key, (resolved, message))
    return list(found.values())


def _with_defaults(rule: Rule, *, position: int) -> Rule:
    """Fill the SEG series description and number the rule left to us."""
    seg = rule.action.seg
    update: dict[str, Any] = {}
    if not seg.series_description:
        suffix = f" (MedImageParse {rule.action.model.upper()})"
        update["series_description"] = rule.name[: 64 - len(suffix)] + suffix
    if not seg.series_number:
        update["series_number"] = 9900 + position
    if not update:
        return rule
    action = rule.action.model_copy(update={"seg": seg.model_copy(update=update)})
    return rule.model_copy(update={"action": action})
