"""The rule a job runs: the inline action it was created with, or a rule of the rules file by name.

``POST /jobs`` may carry its own action (endpoint, model, prompts, windows, destinations) instead of
naming rules. The job stores that action as JSON, and its ``rule`` is :func:`inline_rule_name` of it:
a digest of the action's canonical JSON, so the same action on the same series gives the same rule
name, hence the same SEG UIDs (they are derived from the rule name), on every node and every replay.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from config.rules_conditions import RouteCondition
from config.rules_file import RuleSet
from config.rules_schema import Action, Rule
from workers.jobs import Route
from workers.store import JobView

__all__ = ["INLINE_PREFIX", "action_document", "inline_rule", "inline_rule_name", "rule_for_job"]

INLINE_PREFIX = "adhoc-"


def action_document(action: Action) -> dict[str, Any]:
    """The action as the job stores it (JSON, defaults filled in)."""
    return action.model_dump(mode="json")


def inline_rule_name(action: Action) -> str:
    document = action_document(action)
    if document.get("phases") == "all":
        del document["phases"]  # the default: an action keeps the name it had before phases existed
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{INLINE_PREFIX}{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def inline_rule(action: Action, name: str | None = None) -> Rule:
    """A rule around an inline action. Its match is never evaluated (a job with a rule skips matching);
    ``route: api`` only says where such jobs come from."""
    name = name or inline_rule_name(action)
    seg = action.seg
    if not seg.series_description:
        # the default a rules file gives its rules, so a viewer lists an inline SEG the same way
        suffix = f" (MedImageParse {action.model.upper()})"
        action = action.model_copy(
            update={"seg": seg.model_copy(update={"series_description": name + suffix})}
        )
    return Rule(name=name, match=RouteCondition(route=(Route.API,)), action=action)


def rule_for_job(job: JobView, rules: RuleSet) -> Rule | None:
    """The rule ``job`` runs: built from its stored action, else looked up in ``rules`` by its name;
    None when the job has neither (its rules are yet to be matched).

    Raises KeyError for a name the rules file no longer has, and pydantic's ValidationError (a
    ValueError) for a stored action that no longer validates."""
    if job.action is not None:
        return inline_rule(Action.model_validate(job.action), job.rule)
    return None if job.rule is None else rules.get(job.rule)
