"""The rules file's schema: which series get which prompts, on which model, sent where.

A rule is ``match`` (a condition tree, :mod:`config.rules_conditions`) plus ``action`` (endpoint,
model, prompts and their windows, NIfTI and SEG options, destinations). The models validate
structure and single fields, every prompt through the endpoint contract's ``validate_prompt``; what
needs several fields at once (a window against the model, ``nifti`` on a 2D rule) is checked by
:func:`action_problems`; the file as a whole (line numbers, duplicate names) by
:mod:`config.rules_file`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from config.rules_conditions import Condition, StrictModel, as_tuple, not_bool
from dicom_io.nifti3d import NiftiLayout, VolumeIntensity
from dicom_io.windows import WINDOWS_2D, WINDOWS_3D, ModelKind
from workers.endpoint.contract import validate_prompt
from workers.errors import PromptError
from workers.jobs import Priority

__all__ = [
    "Action",
    "NiftiOptions",
    "PromptGroup",
    "Rule",
    "SegSettings",
    "action_problems",
]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
NON_WINDOW_NORMALISATIONS = {ModelKind.TWO_D: ("percentile", "voi"), ModelKind.THREE_D: ("percentile",)}


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _window_key(value: Any) -> Any:
    # the spelling windows.get_window accepts: "Soft tissue" → soft_tissue
    return "_".join(value.lower().replace("-", " ").split()) if isinstance(value, str) else value


def _prompt(value: Any) -> str:
    try:
        return validate_prompt(not_bool(value))
    except PromptError as exc:
        raise ValueError(str(exc)) from exc


Prompt = Annotated[str, BeforeValidator(_prompt)]


class PromptGroup(StrictModel):
    """Prompts sent together with one intensity window (one request per group)."""

    prompts: tuple[Prompt, ...] = Field(min_length=1)
    window: Annotated[str, BeforeValidator(_window_key)] | None = None


class NiftiOptions(StrictModel):
    """3D only. Defaults follow contract §4.2 (send 0..255) and §4.3 (slice axis first)."""

    intensity: VolumeIntensity = VolumeIntensity.UINT8
    layout: NiftiLayout = NiftiLayout.SLICES_FIRST


class SegSettings(StrictModel):
    """Empty description / number 0 are filled in at load: ``<rule> (MedImageParse 3D)``, 9900 + position."""

    # The values of dicom_io.seg.SegmentationType (a StrEnum, so they compare equal), spelled out to
    # keep highdicom out of the import of a rules file.
    type: Annotated[
        Literal["BINARY", "FRACTIONAL"], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
    ] = "BINARY"
    series_description: Annotated[str, Field(max_length=64, pattern=r"^[^\\]*$")] = ""
    series_number: Annotated[int, Field(ge=0, lt=2**31)] = 0


class Action(StrictModel):
    endpoint: str = Field(min_length=1)
    model: Annotated[ModelKind, BeforeValidator(_lower)]
    prompts: tuple[Prompt, ...] | None = Field(default=None, min_length=1)
    window: Annotated[str, BeforeValidator(_window_key)] | None = None
    prompt_groups: tuple[PromptGroup, ...] | None = Field(default=None, min_length=1)
    nifti: NiftiOptions | None = None
    seg: SegSettings = SegSettings()
    destinations: Annotated[tuple[str, ...], BeforeValidator(as_tuple)] = Field(min_length=1)
    # a 4D series (kind: phases): segment every phase (one SEG each, in one SEG series), or one of
    # them; other series are not affected
    phases: Literal["all", "first", "last"] = "all"

    @property
    def groups(self) -> tuple[PromptGroup, ...]:
        """One group per request; ``prompts`` + ``window`` is the one-group shorthand, and ``window``
        is also the default of groups that name none."""
        if self.prompt_groups is None:
            return (PromptGroup(prompts=self.prompts or (), window=self.window),)
        return tuple(
            g if g.window is not None else g.model_copy(update={"window": self.window})
            for g in self.prompt_groups
        )

    @property
    def nifti_options(self) -> NiftiOptions | None:
        if self.model is ModelKind.TWO_D:
            return None
        return self.nifti or NiftiOptions()


def _window_problem(window: str, model: ModelKind) -> str | None:
    key = window
    presets = WINDOWS_2D if model is ModelKind.TWO_D else WINDOWS_3D
    others = NON_WINDOW_NORMALISATIONS[model]
    if key in presets or key in others:
        return None
    hint = " ('voi' is a 2D notion: a 3D volume uses percentile)" if key == "voi" else ""
    return f"window {window!r} is not a {model.upper()} choice ({', '.join((*presets, *others))}){hint}"


def action_problems(action: Action) -> list[tuple[tuple[str | int, ...], str]]:
    """What the fields cannot check one by one: (path under ``action``, message)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if (action.prompts is None) == (action.prompt_groups is None):
        found.append(((), "give prompts (with an optional window) or prompt_groups, not both or neither"))
    if action.window is not None and (problem := _window_problem(action.window, action.model)):
        found.append((("window",), problem))
    for i, group in enumerate(action.prompt_groups or ()):
        if group.window is not None and (problem := _window_problem(group.window, action.model)):
            found.append((("prompt_groups", i, "window"), problem))
    if action.prompts is None and action.prompt_groups is None:
        return found  # no prompts at all: ``groups`` below cannot even be built
    seen: set[str] = set()
    for i, group in enumerate(action.groups):
        for j, prompt in enumerate(group.prompts):
            if prompt.casefold() in seen:
                path = ("prompts", j) if action.prompt_groups is None else ("prompt_groups", i, "prompts", j)
                found.append((path, f"prompt {prompt!r} is asked twice"))
            seen.add(prompt.casefold())
    if action.nifti is not None and action.model is ModelKind.TWO_D:
        found.append((("nifti",), "nifti options apply to the 3D model only"))
    options = action.nifti_options
    raw = options is not None and options.intensity is VolumeIntensity.RAW
    if raw and any(g.window is not None for g in action.groups):
        found.append((("nifti", "intensity"), "a window has no effect when raw intensities are sent"))
    return found


class Rule(StrictModel):
    name: str = Field(max_length=64)
    description: str = ""
    enabled: bool = True
    priority: Annotated[Priority, BeforeValidator(_lower)] = Priority.ROUTINE
    stop: bool = False
    # the idle timer of series this rule fires for, instead of listener.completion_idle_s (e.g. longer
    # for ultrasound, whose images trickle in during the exam)
    completion_idle_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    match: Condition
    action: Action

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use lower-case letters, digits, '-' and '_', starting with a letter or digit")
        return value


Rule.model_rebuild()
