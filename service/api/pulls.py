"""``POST /jobs``: what a pull request becomes, one job per series (and per named rule).

    body checked      the source is configured, the named rules exist, an inline action's endpoint
                      (serving its model) and destinations are configured (422 naming what is not)
    replay?           an Idempotency-Key seen before gives back its jobs (200), or 409 for another body
    series resolved   the one given, or every series the source holds for the study (QIDO-RS / C-FIND;
                      an unreachable source is 503, a refusal 502, a study it does not hold 404)
    jobs created      state ``received``, route ``api``, source = the node's name; then ``pull`` queued

An inline action is stored on each job (its JSON), whose rule is named after a digest of it
(:func:`workers.job_rules.inline_rule_name`): the same action on the same series gives the same SEG.

A replayed key is recognised without asking the source again: the jobs of a request carry the key's
digest and the body's fingerprint in their idempotency keys, so a replay finds them by prefix, and two
requests racing with the same key and body end with the same jobs (the store's unique key decides).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy import select

from config.rules_file import (
    RulesError,
    RuleSet,
    action_problems_against,
    configured_rules_path,
    load_rules,
)
from config.rules_schema import Action, Rule
from config.settings import DicomNode, DicomWebNode, Settings
from service.api.problems import ApiError, ConflictError, NotFoundError, ServiceUnavailableError
from service.api.schemas import PullRequest
from workers.errors import DeliveryError
from workers.job_rules import action_document, inline_rule
from workers.jobs import JobState, Priority, Route
from workers.pull import series_in_study
from workers.store import JobView, Store, ensure_job
from workers.store.models import Job

__all__ = [
    "InvalidPullError",
    "PlannedPull",
    "SourceFailedError",
    "create_jobs",
    "document_pull_choices",
    "plan",
    "replayed",
    "resolve_series",
]

log = structlog.get_logger(__name__)

_KEY_PREFIX = "pull:"


class InvalidPullError(ApiError):
    status, slug, title = 422, "invalid-pull-request", "The pull request names something not configured"


class SourceFailedError(ApiError):
    status, slug, title = 502, "source-failed", "The source node refused or failed the query"


@dataclass(frozen=True, slots=True)
class PlannedPull:
    request: PullRequest
    node: DicomNode | DicomWebNode
    rules: tuple[Rule, ...]  # empty: the pipeline matches the rules as usual
    action: dict[str, Any] | None  # an inline action's JSON, stored on every job (``rules``: its rule)
    fingerprint: str  # of the body, to tell a replay from a reused key
    key_prefix: str | None  # of every job this request makes; None without an Idempotency-Key


def plan(settings: Settings, request: PullRequest, idempotency_key: str | None) -> PlannedPull:
    """Raises InvalidPullError for an unknown source or rule, or an inline action naming an endpoint
    or destination not configured; ServiceUnavailableError for broken rules."""
    node = settings.sources.get(request.source)
    if node is None:
        known = ", ".join(sorted(settings.sources)) or "none configured"
        raise InvalidPullError(f"source {request.source[:64]!r} is not configured (sources: {known})")
    rules: tuple[Rule, ...] = ()
    if request.rules:
        ruleset = _load_rules(settings)
        names = {rule.name for rule in ruleset.rules}
        unknown = [name for name in request.rules if name not in names]
        if unknown:
            raise InvalidPullError(f"rule(s) not in the rules file: {', '.join(unknown)}")
        rules = tuple(ruleset.get(name) for name in dict.fromkeys(request.rules))
    action = None
    if request.action is not None:
        if problems := action_problems_against(request.action, settings):
            raise InvalidPullError(
                "; ".join(f"action.{_dotted(path)}: {message}" for path, message in problems)
            )
        action = action_document(request.action)
        rules = (inline_rule(request.action),)
    dumped = request.model_dump(mode="json")
    if dumped["action"] is None:
        del dumped["action"]  # a body without one keeps the fingerprint it had before actions existed
    body = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    fingerprint = hashlib.sha256(body.encode()).hexdigest()[:16]
    prefix = None
    if idempotency_key is not None:
        prefix = f"{_KEY_PREFIX}{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}:"
    return PlannedPull(request, node, rules, action, fingerprint, prefix)


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


def _load_rules(settings: Settings) -> RuleSet:
    try:
        return load_rules(configured_rules_path(settings))
    except RulesError as exc:
        log.error("pull.rules_unreadable", error=str(exc)[:300])
        raise ServiceUnavailableError("the rules file cannot be loaded; see the gateway's log") from exc


def replayed(store: Store, planned: PlannedPull) -> list[JobView] | None:
    """The jobs an earlier request with the same key made; None when the key is new (or absent).

    Raises ConflictError when the key was used with another body."""
    if planned.key_prefix is None:
        return None
    statement = select(Job).where(Job.idempotency_key.startswith(planned.key_prefix, autoescape=True))
    with store.session(readonly=True) as s:
        found = [JobView.of(job) for job in s.execute(statement).scalars()]
    # the pipeline names the jobs of further matching rules "<key>/rule:<name>": not this request's
    found = [job for job in found if "/" not in (job.idempotency_key or "")]
    if not found:
        return None
    if any(not (job.idempotency_key or "").startswith(_fingerprinted(planned)) for job in found):
        raise ConflictError("this Idempotency-Key was used with another request body")
    return _ordered(found)


def _fingerprinted(planned: PlannedPull) -> str:
    assert planned.key_prefix is not None
    return f"{planned.key_prefix}{planned.fingerprint}:"


def resolve_series(planned: PlannedPull, *, calling_ae: str) -> list[str]:
    """The series to pull: the one requested, or every series of the study the source holds.

    Blocking (network): call it off the event loop."""
    request = planned.request
    if request.series_instance_uid is not None:
        return [request.series_instance_uid]
    try:
        found = series_in_study(
            request.source, planned.node, request.study_instance_uid, calling_ae=calling_ae
        )
    except DeliveryError as exc:
        log.warning("pull.source_failed", source=request.source, reason=exc.reason, retryable=exc.retryable)
        if exc.retryable:
            raise ServiceUnavailableError(
                f"source {request.source} cannot be reached: {exc.reason}", headers={"Retry-After": "30"}
            ) from exc
        raise SourceFailedError(f"source {request.source}: {exc.reason}") from exc
    if not found:
        raise NotFoundError(f"source {request.source} holds no series of study {request.study_instance_uid}")
    return list(dict.fromkeys(found))


def create_jobs(
    store: Store, planned: PlannedPull, series: Iterable[str], *, actor: str
) -> tuple[list[JobView], list[str]]:
    """One job per series (and per named rule), in one transaction: every job, in a stable order, and
    the ids of those this call created (a racing twin with the same key may have made the others)."""
    request = planned.request
    names = [rule.name for rule in planned.rules]
    jobs: list[JobView] = []
    created: list[str] = []
    with store.session() as s:
        for uid in series:
            for rule in planned.rules or (None,):
                job, new = ensure_job(
                    s,
                    actor=actor,
                    source=request.source,
                    route=Route.API,
                    study_instance_uid=request.study_instance_uid,
                    series_instance_uid=uid,
                    instance_count=0,  # unknown until pulled
                    rule=rule.name if rule else None,
                    rules=names,
                    endpoint=rule.action.endpoint if rule else None,
                    model=str(rule.action.model) if rule else None,
                    action=planned.action,
                    priority=request.priority or (rule.priority if rule else Priority.ROUTINE),
                    state=JobState.RECEIVED,
                    idempotency_key=_job_key(planned, uid, rule),
                )
                jobs.append(job)
                if new:
                    created.append(job.id)
    return _ordered(jobs), created


def _job_key(planned: PlannedPull, series: str, rule: Rule | None) -> str | None:
    if planned.key_prefix is None:
        return None
    which = hashlib.sha256(f"{series}\n{rule.name if rule else ''}".encode()).hexdigest()[:24]
    return f"{_fingerprinted(planned)}{which}"


def _ordered(jobs: list[JobView]) -> list[JobView]:
    """The same order for the first answer and every replay: by series, then rule."""
    return sorted(jobs, key=lambda job: (job.series_instance_uid, job.rule or ""))


def document_pull_choices(app: FastAPI, settings: Settings) -> None:
    """Name the configured sources (the rules in the rules file, the endpoints and destinations an
    inline action may use) as the only values ``POST /jobs`` takes, in the app's OpenAPI document:
    clients and fuzzers then see which bodies are valid."""
    base: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = copy.deepcopy(base())  # FastAPI caches the base; the rules file may change
        schema = document.get("components", {}).get("schemas", {}).get(PullRequest.__name__)
        if schema is None:
            return document
        properties = schema["properties"]
        sources = sorted(settings.sources)
        if sources:
            properties["source"]["enum"] = sources
            for example in schema.get("examples", []):
                example["source"] = sources[0]
        try:
            rules = [rule.name for rule in load_rules(configured_rules_path(settings)).rules]
        except RulesError:
            rules = []
        for variant in properties["rules"].get("anyOf", [properties["rules"]]):
            if variant.get("type") == "array" and rules:
                variant["items"]["enum"] = rules
        if rules:
            for example in schema.get("examples", []):
                if "rules" in example:
                    example["rules"] = rules[:1]
        _document_action_choices(document, schema, settings)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _document_action_choices(document: dict[str, Any], schema: dict[str, Any], settings: Settings) -> None:
    """An inline action can only name configured endpoints and destinations: without either there is
    no valid action, and the property is left out of the document altogether."""
    if not settings.endpoints or not settings.destinations:
        schema["properties"].pop("action", None)
        return
    action = document.get("components", {}).get("schemas", {}).get(Action.__name__)
    if action is None:
        return
    action["properties"]["endpoint"]["enum"] = sorted(settings.endpoints)
    action["properties"]["destinations"]["items"]["enum"] = sorted(settings.destinations)
