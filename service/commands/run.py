"""``mip-gateway run``: the whole pipeline in one process, no broker: folders in, SEGs and a report out.

Every series found becomes a job in a throwaway store, goes through the same pipeline functions the
Celery workers run, and its SEG(s) land in ``--out`` as ``<SEG SOPInstanceUID>.dcm`` next to
``report.json``. ``--send`` also delivers them to the rules' destinations; ``--demo`` starts the mock
endpoint in-process; ``--model/--prompt`` tries a prompt on every image series without a rules file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import deque
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from config.rules_file import configured_rules_path, parse_rules
from config.settings import EndpointSettings, Settings, get_settings
from dicom_io.reading import scan
from dicom_io.series import Series, assemble
from workers import pipeline
from workers.context import build_deps
from workers.delivery.base import DeliveryReceipt, Sender
from workers.jobs import JobState, Priority, Route
from workers.rules import evaluate, facts_for
from workers.rules_loader import RulesSource
from workers.store import JobView, create_job, deliveries_for, get_job, list_jobs, open_store, results_for

__all__ = ["run_pipeline"]

_ADHOC = "adhoc"


class _Queue:
    """The in-process stand-in for the broker: work is done in the order it was queued."""

    def __init__(self) -> None:
        self.items: deque[tuple[str, ...]] = deque()

    def process(self, job_id: str, priority: Priority) -> None:
        self.items.append(("process", job_id))

    def deliver(self, job_id: str, destination: str) -> None:
        self.items.append(("deliver", job_id, destination))

    def pull(self, job_id: str) -> None:
        raise NotImplementedError("mip-gateway run reads local files; it never pulls")


class _NotSent:
    """Without --send, a destination only records that the SEG was not sent."""

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, path: Path, *, job_id: str | None = None) -> DeliveryReceipt:
        return DeliveryReceipt(self.name, path.stem, "not sent (run without --send)")

    def close(self) -> None:
        pass

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def _adhoc_rules(args: argparse.Namespace, endpoint: str) -> str:
    prompts = json.dumps(args.prompt)
    window = f"\n      window: {json.dumps(args.window)}" if args.window else ""
    return (
        f"version: 1\nrules:\n  - name: {_ADHOC}\n    description: ad-hoc prompts from the command line\n"
        f"    match: {{kind: [volume, images]}}\n    action:\n      endpoint: {endpoint}\n"
        f"      model: {args.model}\n      prompts: {prompts}{window}\n      destinations: [none]\n"
    )


def _endpoints(
    args: argparse.Namespace, settings: Settings, models: dict[str, str], stack: ExitStack
) -> Settings:
    """Point the rules' endpoints where the command line says (mock, a URL), or keep the settings'."""
    url = None
    if args.demo:
        from service.mock_endpoint import MockEndpointServer

        url = stack.enter_context(MockEndpointServer()).score_url
    elif args.endpoint and "://" in args.endpoint:
        url = args.endpoint
    if url is None:
        return settings
    endpoints = dict(settings.endpoints)
    for name, model in models.items():
        endpoints[name] = EndpointSettings.model_validate(
            {"url": url, "model": model, "key": args.endpoint_key}
        )
    return settings.model_copy(update={"endpoints": endpoints})


def run_pipeline(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = get_settings()
    if args.prompt:
        if not args.model:
            print("--prompt needs --model 2d|3d", file=sys.stderr)
            return 2
        named = args.endpoint if args.endpoint and "://" not in args.endpoint else _ADHOC
        text = _adhoc_rules(args, named)
    else:
        text = (Path(args.rules) if args.rules else configured_rules_path(base)).read_text(encoding="utf-8")
    rules = parse_rules(text, source=args.rules or "<rules>")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mipgw-run-")))
        rules_file = work / "rules.yaml"
        rules_file.write_text(text, encoding="utf-8")
        models = {rule.action.endpoint: str(rule.action.model) for rule in rules.enabled}
        settings = _endpoints(args, base, models, stack)
        settings = settings.model_copy(update={"data_dir": work / "data", "rules_file": rules_file})
        return _run(args, settings, out)


def _run(args: argparse.Namespace, settings: Settings, out: Path) -> int:
    store = open_store(f"sqlite+pysqlite:///{settings.data_dir / 'run.sqlite3'}", migrate=True)
    queue = _Queue()
    # without --send the destinations are not used: do not ask for them to be configured
    rules = None if args.send else RulesSource(Path(str(settings.rules_file)))
    deps = build_deps(settings, store, queue, actor="cli", rules=rules)
    if not args.send:
        deps.sender = _NotSent
    series_by_uid: dict[str, Series] = {}
    deps.load_series = lambda job: [series_by_uid[job.series_instance_uid]]
    result = scan(args.paths)
    report: list[dict[str, Any]] = []
    for series in assemble(result.instances):
        series_by_uid[series.series_instance_uid] = series
        with store.session() as s:
            job = create_job(
                s,
                actor="cli",
                source="cli",
                route=Route.CLI,
                study_instance_uid=series.study_instance_uid,
                series_instance_uid=series.series_instance_uid,
                instance_count=len(series.instances),
                completion_reason="files given on the command line",
                state=JobState.QUEUED,
            )
        queue.process(job.id, Priority.ROUTINE)
    while queue.items:
        kind, job_id, *rest = queue.items.popleft()
        try:
            if kind == "process":
                pipeline.process_job(job_id, deps)
            else:
                pipeline.deliver(job_id, rest[0], deps, last_attempt=True)
        except pipeline.TransientJobError as exc:  # the client already retried: this is final here
            pipeline.fail_job(job_id, exc.stage, exc.reason, deps)
    failed = 0
    with store.session() as s:
        for job in list_jobs(s, limit=100_000):
            report.append(_entry(s, job, series_by_uid, deps, out))
            failed += job.state is JobState.FAILED
    if not args.send:  # nothing left the machine: the "deliveries" were only bookkeeping
        for entry in report:
            entry["deliveries"] = []
    (out / "report.json").write_text(json.dumps({"series": report, "sent": bool(args.send)}, indent=1))
    for entry in report:
        print(
            f"{entry['series_instance_uid']}  {entry['rule'] or '-'}  {entry['state']}"
            f"{'  ' + entry['error'] if entry['error'] else ''}"
        )
    print(f"report: {out / 'report.json'}")
    return 1 if failed else 0


def _entry(
    session: Any, job: JobView, series: dict[str, Series], deps: pipeline.Deps, out: Path
) -> dict[str, Any]:
    job = get_job(session, job.id)
    segs = []
    for result in results_for(session, job.id):
        source = deps.data.seg(
            job.study_instance_uid, result.seg_series_instance_uid, result.seg_sop_instance_uid
        )
        target = out / f"{result.seg_sop_instance_uid}.dcm"
        shutil.copyfile(source, target)
        segs.append({"file": target.name, "segments": [_record(s) for s in result.segments]})
    known = series.get(job.series_instance_uid)
    fired = []
    if known is not None:
        match = evaluate(deps.rules.current(), facts_for(known, route=Route.CLI))
        fired = [r.rule.name for r in match.results if r.fired]
    return {
        "series_instance_uid": job.series_instance_uid,
        "modality": known.modality if known else None,
        "rules_fired": fired,
        "rule": job.rule,
        "state": str(job.state),
        "stage": str(job.error_stage) if job.error_stage else None,
        "error": job.error,
        "segs": segs,
        "deliveries": [
            {"destination": d.destination, "state": str(d.state), "error": d.last_error}
            for d in deliveries_for(session, job.id)
        ],
    }


def _record(segment: Any) -> dict[str, Any]:
    return {
        "prompt": segment.prompt,
        "category": segment.category or None,
        "segment_number": segment.segment_number,
        "empty": segment.empty,
        "pixels": segment.pixel_count,
        "volume_ml": None if segment.volume_ml is None else round(segment.volume_ml, 3),
    }
