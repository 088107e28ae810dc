"""The ``match`` side of a rule: a tree of conditions over the series, validated and precompiled.

Conditions are told apart by their one key (mercure-style discriminated models, the key being the
discriminator): ``attribute``, ``instances``, ``frames``, ``orientation``, ``calling_ae``, ``route``,
``kind``, and the combinators ``all``, ``any``, ``not``. Keywords are checked against pydicom's
dictionary and regexes are compiled when the file is loaded; :mod:`workers.rules` evaluates them.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicom_io.geometry import Plane
from workers.jobs import Route

__all__ = [
    "ATTRIBUTE_TESTS",
    "CONDITION_KEYS",
    "AETest",
    "AllCondition",
    "AnyCondition",
    "AttributeCondition",
    "CallingAECondition",
    "Condition",
    "CountCondition",
    "CountRange",
    "KindCondition",
    "NotCondition",
    "NumberRange",
    "OrientationCondition",
    "RouteCondition",
    "StrictModel",
    "as_tuple",
    "not_bool",
]

CONDITION_KEYS = ("attribute", "instances", "frames", "orientation", "calling_ae", "route", "kind")
COMBINATOR_KEYS = ("all", "any", "not")
ATTRIBUTE_TESTS = ("equals", "in", "regex", "range", "present", "absent")


def not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("YAML read this as a boolean (yes/no/on/off/true/false): put it in quotes")
    return value


def as_tuple(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _compile(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
    return pattern


Scalar = Annotated[str | int | float, BeforeValidator(not_bool)]
Pattern = Annotated[str, BeforeValidator(not_bool), Field(min_length=1)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberRange(StrictModel):
    """Inclusive bounds; at least one of them."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> NumberRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class CountRange(StrictModel):
    """Inclusive counts; at least one bound."""

    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> CountRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class AttributeCondition(StrictModel):
    """One DICOM attribute of the series header, by keyword, with exactly one test."""

    attribute: str
    equals: Scalar | None = None
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in", min_length=1)
    regex: Pattern | None = None
    range: NumberRange | None = None
    present: Literal[True] | None = None
    absent: Literal[True] | None = None

    @field_validator("attribute")
    @classmethod
    def _keyword(cls, value: str) -> str:
        if tag_for_keyword(value) is None:
            from difflib import get_close_matches

            from pydicom.datadict import keyword_dict

            close = get_close_matches(value, keyword_dict, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown DICOM keyword {value!r}{hint}")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @model_validator(mode="after")
    def _one_test(self) -> AttributeCondition:
        given = self.tests()
        if not given:
            raise ValueError(f"attribute {self.attribute}: add one test of {', '.join(ATTRIBUTE_TESTS)}")
        if len(given) > 1:
            raise ValueError(
                f"attribute {self.attribute} has {len(given)} tests ({' and '.join(given)}): "
                "one per condition; combine several with all/any"
            )
        tag = tag_for_keyword(self.attribute)
        if tag is not None and dictionary_VR(tag) == "SQ" and given[0] not in ("present", "absent"):
            raise ValueError(f"{self.attribute} is a sequence: only present/absent can test it")
        return self

    # Compiled once, when the file is loaded (cached in the instance: plain attribute reads later).
    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return None if self.regex is None else re.compile(self.regex)

    @cached_property
    def texts(self) -> frozenset[str]:
        """``equals`` / ``in`` text values, folded for comparison."""
        values = (self.equals,) if self.equals is not None else self.in_ or ()
        return frozenset(v.strip().casefold() for v in values if isinstance(v, str))

    @cached_property
    def numbers(self) -> frozenset[float]:
        values = (self.equals,) if self.equals is not None else self.in_ or ()
        return frozenset(float(v) for v in values if not isinstance(v, str))

    def model_post_init(self, context: Any) -> None:
        _ = self.pattern, self.texts, self.numbers

    def tests(self) -> list[str]:
        fields = {"equals": self.equals, "in": self.in_, "regex": self.regex, "range": self.range}
        fields |= {"present": self.present, "absent": self.absent}
        return [name for name, value in fields.items() if value is not None]


class CountCondition(StrictModel):
    """``{instances: {min, max}}`` or ``{frames: {min, max}}`` (inclusive)."""

    instances: CountRange | None = None
    frames: CountRange | None = None

    @model_validator(mode="after")
    def _one(self) -> CountCondition:
        if (self.instances is None) == (self.frames is None):
            raise ValueError("count either instances or frames")
        return self


class OrientationCondition(StrictModel):
    orientation: Annotated[tuple[Plane, ...], BeforeValidator(as_tuple), Field(min_length=1)]


class RouteCondition(StrictModel):
    route: Annotated[tuple[Route, ...], BeforeValidator(as_tuple), Field(min_length=1)]


class KindCondition(StrictModel):
    # phases: several volumes on one grid in one series (multi-phase CT, dynamic / multi-echo MR, DWI)
    kind: Annotated[
        tuple[Literal["volume", "phases", "images"], ...], BeforeValidator(as_tuple), Field(min_length=1)
    ]


def _ae_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"equals": value}
    if isinstance(value, list | tuple):
        return {"in": value}
    return value


class AETest(StrictModel):
    """``X`` (equals), ``[X, Y]`` (in) or ``{regex: ...}``; AE titles compare exactly, stripped."""

    equals: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    in_: tuple[Annotated[str, Field(min_length=1, max_length=16)], ...] | None = Field(
        default=None, alias="in", min_length=1
    )
    regex: Pattern | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @model_validator(mode="after")
    def _one(self) -> AETest:
        if sum(v is not None for v in (self.equals, self.in_, self.regex)) != 1:
            raise ValueError("calling_ae takes one of: an AE title, a list of them, or {regex: ...}")
        return self

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        return None if self.regex is None else re.compile(self.regex)

    @cached_property
    def titles(self) -> frozenset[str]:
        return frozenset(t.strip() for t in ((self.equals,) if self.equals else self.in_ or ()))

    def model_post_init(self, context: Any) -> None:
        _ = self.pattern, self.titles


class CallingAECondition(StrictModel):
    calling_ae: Annotated[AETest, BeforeValidator(_ae_shorthand)]


class AllCondition(StrictModel):
    all: tuple[Condition, ...] = Field(min_length=1)


class AnyCondition(StrictModel):
    any: tuple[Condition, ...] = Field(min_length=1)


class NotCondition(StrictModel):
    not_: Condition = Field(alias="not")


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _TAGS.get(type(value))
    if not isinstance(value, dict):
        return None
    keys = [k for k in (*CONDITION_KEYS, *COMBINATOR_KEYS) if k in value]
    if len(keys) != 1:
        return None
    return "frames-condition" if keys[0] == "instances" else f"{keys[0]}-condition"


_TAGS: dict[type[BaseModel], str] = {}

# Tags deliberately differ from the YAML keys, so error locations map back onto the file unambiguously.
Condition = Annotated[
    Union[  # noqa: UP007 - Annotated members cannot be written with |
        Annotated[AttributeCondition, Tag("attribute-condition")],
        Annotated[CountCondition, Tag("frames-condition")],
        Annotated[OrientationCondition, Tag("orientation-condition")],
        Annotated[CallingAECondition, Tag("calling_ae-condition")],
        Annotated[RouteCondition, Tag("route-condition")],
        Annotated[KindCondition, Tag("kind-condition")],
        Annotated[AllCondition, Tag("all-condition")],
        Annotated[AnyCondition, Tag("any-condition")],
        Annotated[NotCondition, Tag("not-condition")],
    ],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message="a condition has exactly one of: "
        + ", ".join((*CONDITION_KEYS, *COMBINATOR_KEYS)),
    ),
]


_TAGS.update(
    {
        AttributeCondition: "attribute-condition",
        CountCondition: "frames-condition",
        OrientationCondition: "orientation-condition",
        CallingAECondition: "calling_ae-condition",
        RouteCondition: "route-condition",
        KindCondition: "kind-condition",
        AllCondition: "all-condition",
        AnyCondition: "any-condition",
        NotCondition: "not-condition",
    }
)
AllCondition.model_rebuild()
AnyCondition.model_rebuild()
NotCondition.model_rebuild()
