"""Testing one series against conditions, and saying why a condition holds or not.

What the comparisons mean (the rules file's contract, also summarised at the top of rules.yaml):

- ``equals`` / ``in``: text compares stripped and case-insensitively (DICOM pads values with spaces,
  and descriptions vary in case even where CS values are upper case); a number in the rule compares
  numerically with a numeric value (DS ``"5.0"`` equals ``5``). Multi-valued attributes (ImageType)
  match when ANY value matches, for every test.
- ``regex``: :func:`re.search` on each value's text; case-sensitive unless the pattern says ``(?i)``.
- ``range``: inclusive; a missing, empty or non-numeric value does not match.
- ``present``: in the header with a non-empty value; ``absent`` is its negation.
- An attribute missing from the top level of an enhanced multi-frame header is looked up in the
  SharedFunctionalGroupsSequence macros, then in the first PerFrameFunctionalGroupsSequence item.
- Calling AE titles compare exactly after stripping spaces; a series without one (STOW, API) fails
  any ``calling_ae`` condition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydicom.multival import ConstrainedList

from config.rules_conditions import (
    AllCondition,
    AnyCondition,
    AttributeCondition,
    CallingAECondition,
    CountCondition,
    KindCondition,
    NotCondition,
    OrientationCondition,
    RouteCondition,
)

if TYPE_CHECKING:
    from workers.rules import SeriesFacts

__all__ = ["Checker"]


def _values(value: Any) -> tuple[Any, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, ConstrainedList | list | tuple):  # MultiValue, pydicom's Sequence
        return tuple(v for v in value if v is not None and v != "")
    return (value,)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\x00 ")
    return str(value).strip()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(_text(value))
    except ValueError:
        return None


def _show(values: Sequence[Any]) -> str:
    def one(v: Any) -> str:
        return _text(v) if isinstance(v, int | float) else f"'{_text(v)}'"

    return one(values[0]) if len(values) == 1 else f"[{', '.join(_text(v) for v in values)}]"


def _listing(items: Sequence[Any]) -> str:
    return f"[{', '.join(str(i) for i in items)}]"


def _bounds(low: float | None, high: float | None) -> str:
    return f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]"


class Checker:
    """One series' conditions: ``test`` is the fast path, ``why`` says what made a test come out so."""

    def __init__(self, facts: SeriesFacts) -> None:
        self.facts = facts
        self._cache: dict[str, tuple[Any, ...]] = {}
        self._tests: dict[type, Callable[[Any], bool]] = {
            AttributeCondition: self._attribute,
            CountCondition: self._count,
            OrientationCondition: lambda c: self.facts.plane in c.orientation,
            KindCondition: lambda c: self.facts.kind.value in c.kind,
            RouteCondition: lambda c: self.facts.route in c.route,
            CallingAECondition: self._calling_ae,
            AllCondition: lambda c: all(self.test(x) for x in c.all),
            AnyCondition: lambda c: any(self.test(x) for x in c.any),
            NotCondition: lambda c: not self.test(c.not_),
        }

    def test(self, condition: Any) -> bool:
        return self._tests[type(condition)](condition)

    def values(self, keyword: str) -> tuple[Any, ...]:
        if keyword not in self._cache:
            self._cache[keyword] = _values(self.facts.attribute(keyword))
        return self._cache[keyword]

    def _attribute(self, c: AttributeCondition) -> bool:
        values = self.values(c.attribute)
        if c.present or c.absent:
            return bool(values) == bool(c.present)
        if c.pattern is not None:
            return any(c.pattern.search(_text(v)) for v in values)
        if c.range is not None:
            return any(self._in_range(_number(v), c.range.min, c.range.max) for v in values)
        for v in values:
            if c.numbers and _number(v) in c.numbers:
                return True
            if c.texts and _text(v).casefold() in c.texts:
                return True
        return False

    @staticmethod
    def _in_range(n: float | None, low: float | None, high: float | None) -> bool:
        return n is not None and (low is None or n >= low) and (high is None or n <= high)

    def _count(self, c: CountCondition) -> bool:
        bounds = c.instances or c.frames
        n = self.facts.instances if c.instances is not None else self.facts.frames
        return bounds is not None and self._in_range(n, bounds.min, bounds.max)

    def _calling_ae(self, c: CallingAECondition) -> bool:
        ae = self.facts.calling_ae
        if ae is None:
            return False
        pattern = c.calling_ae.pattern
        return bool(pattern.search(ae)) if pattern is not None else ae in c.calling_ae.titles

    def why(self, condition: Any) -> str:
        """Why ``condition`` holds or not, as a person would say it."""
        outcome = self.test(condition)
        match condition:
            case AllCondition():
                if outcome:
                    return "; ".join(self.why(c) for c in condition.all)
                return next(self.why(c) for c in condition.all if not self.test(c))
            case AnyCondition():
                if outcome:
                    return next(self.why(c) for c in condition.any if self.test(c))
                return "none of: " + "; ".join(self.why(c) for c in condition.any)
            case NotCondition():
                return self.why(condition.not_)
            case AttributeCondition():
                return self._why_attribute(condition, outcome)
            case CountCondition():
                name, n = (
                    ("instances", self.facts.instances)
                    if condition.instances
                    else ("frames", self.facts.frames)
                )
                bounds = condition.instances or condition.frames
                assert bounds is not None
                if outcome:
                    return f"{n} {name}, within {_bounds(bounds.min, bounds.max)}"
                if bounds.min is not None and n < bounds.min:
                    return f"{n} {name}, fewer than {bounds.min}"
                return f"{n} {name}, more than {bounds.max}"
            case OrientationCondition():
                plane = self.facts.plane
                if plane is None:
                    return "plane unknown (no single image orientation)"
                return f"plane {plane}" + ("" if outcome else f" not in {_listing(condition.orientation)}")
            case KindCondition():
                return f"series is {self.facts.kind}" + (
                    "" if outcome else f", not {_listing(condition.kind)}"
                )
            case RouteCondition():
                return f"route {self.facts.route}" + (
                    "" if outcome else f" not in {_listing(condition.route)}"
                )
            case CallingAECondition():
                return self._why_calling_ae(condition, outcome)
        raise TypeError(f"not a condition: {condition!r}")

    def _why_attribute(self, c: AttributeCondition, outcome: bool) -> str:
        name, values = c.attribute, self.values(c.attribute)
        if c.present or c.absent:
            return f"{name} is present" if values else f"{name} is absent or empty"
        if not values:
            return f"{name} is absent"
        shown = _show(values)
        if c.pattern is not None:
            if outcome:
                hit = next(v for v in values if c.pattern.search(_text(v)))
                return f"{name} {_show([hit])} matches /{c.regex}/"
            return f"{name} {shown} does not match /{c.regex}/"
        if c.range is not None:
            low, high = c.range.min, c.range.max
            numbers = [n for n in (_number(v) for v in values) if n is not None]
            if outcome:
                return f"{name} {shown} is within {_bounds(low, high)}"
            if not numbers:
                return f"{name} {shown} is not a number"
            n = numbers[0]
            return (
                f"{name} {n:g} is below {low:g}"
                if low is not None and n < low
                else f"{name} {n:g} is above {high:g}"
            )
        if c.in_ is not None:
            return f"{name} {shown} {'in' if outcome else 'not in'} {_listing(c.in_)}"
        target = c.equals if not isinstance(c.equals, str) else f"'{c.equals}'"
        if len(values) > 1:
            return f"{name} {shown} {'has' if outcome else 'has no'} value {target}"
        return f"{name} is {target}" if outcome else f"{name} {shown} is not {target}"

    def _why_calling_ae(self, c: CallingAECondition, outcome: bool) -> str:
        ae, test = self.facts.calling_ae, c.calling_ae
        if ae is None:
            return f"no calling AE (route {self.facts.route})"
        if test.regex is not None:
            return f"calling AE '{ae}' {'matches' if outcome else 'does not match'} /{test.regex}/"
        if test.equals is not None:
            return f"calling AE is '{ae}'" if outcome else f"calling AE '{ae}' is not '{test.equals}'"
        return f"calling AE '{ae}' {'in' if outcome else 'not in'} {_listing(test.in_ or ())}"
