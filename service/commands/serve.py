"""``mip-gateway serve``: the DICOM listener, the HTTP API and a worker from one command.

The listener and the API run in this process and share one store, one intake (completion tracker
and Celery enqueuer); ``mip-gateway worker`` runs as a child process with the same settings, passed
in its environment. Without ``broker_url``/``database_url`` everything stays under the data
directory: SQLite job store, SQLite broker, local spool — nothing else to install or start.

Command-line flags override the settings (each is also a ``MIPGW_`` setting): ``--dicom-port``
(``LISTENER__PORT``), ``--http-port`` (``API__PORT``), ``--bind`` (``LISTENER__BIND`` and
``API__BIND``), ``--ae-title``, ``--data-dir``, ``--rules`` (``RULES_FILE``) and ``--endpoint URL``
[``--endpoint-key KEY``], which points every endpoint the rules name (and every configured one) at
that scoring URL (``ENDPOINTS__<NAME>__URL`` / ``__KEY``). Credentials a ``MIPGW_CONFIG`` YAML file
gives an endpoint reach the worker as they are.

``--demo`` adds what a first look needs: the mock endpoint (NOT A MODEL) in this process for every
endpoint, an open API when no key is configured, loopback only unless ``--bind`` says otherwise,
and a demo DICOM node (AE title ``DEMO``) on a free loopback port. The node is both ends of a
modality or PACS: it sends a synthetic CT study (``mip-gateway sample``) to the listener by
C-STORE, and every destination the rules name that the settings do not configure is pointed at it,
so the SEG goes back to the node that sent the study (its files land in ``<data>/demo-node``).
A destination the settings do configure keeps its address. ``--demo-exit`` stops once the demo
study's jobs are final (status 0 when they are done), for scripts and tests.

SIGTERM or SIGINT: the listener and the API stop accepting, finish the instances and requests in
flight, the idle timer stops, then the worker gets SIGTERM (it finishes its task; killed after
``--worker-grace`` seconds) and the store closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
import uvicorn
from pydantic import ValidationError

from config.rules_file import RulesError, configured_rules_path, parse_rules
from config.settings import ApiSettings, DicomNode, EndpointSettings, ListenerSettings, Settings, get_settings
from service.api.app import create_app
from service.commands.wiring import api_auth_problem, api_config, build_intake, remove_stale_stow_parts
from service.demo_node import DemoNode, send_study
from service.mock.server import bind_socket, socket_url
from service.parent_death import PARENT_ENV
from service.scp import DicomListener
from service.worker_process import WorkerProcess
from workers.jobs import FINAL_STATES, JobState
from workers.storage import DataDir
from workers.store import Store, database_url, deliveries_for, list_jobs, open_store, results_for

__all__ = ["DEMO_AE", "run_serve"]

log = structlog.get_logger(__name__)

DEMO_AE = "DEMO"
_DEMO_DATA_DIR = Path("mipgw-demo")
_ANY_ADDRESS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class _Plan:
    """The settings this process runs on, and what the worker's environment adds to the inherited one."""

    settings: Settings
    worker_env: dict[str, str]
    dropped_env: tuple[str, ...]  # inherited MIPGW_ variables the overrides replace


def run_serve(args: argparse.Namespace) -> int:
    # pynetdicom narrates every association at INFO; the listener logs its own lines
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    with ExitStack() as stack:
        try:
            plan = _plan(get_settings(), args, stack)
        except RulesError as exc:
            print(f"mip-gateway serve: the rules do not fit the settings:\n{exc}", file=sys.stderr)
            print(
                "configure what they name (MIPGW_ENDPOINTS__<NAME>__URL, MIPGW_DESTINATIONS__<NAME>__...), "
                "pass --rules FILE, or try --demo",
                file=sys.stderr,
            )
            return 2
        except (ValueError, ValidationError, OSError) as exc:
            print(f"mip-gateway serve: {exc}", file=sys.stderr)
            return 2
        return _serve(args, plan, stack)


def _plan(base: Settings, args: argparse.Namespace, stack: ExitStack) -> _Plan:
    """Apply the command line (and, for --demo, the mock endpoint and the demo node) to the settings."""
    env: dict[str, str] = {}
    dropped: list[str] = []
    update: dict[str, Any] = {}
    data_dir = base.data_dir
    if args.data_dir is not None:
        data_dir = Path(args.data_dir)
    elif args.demo and "data_dir" not in base.model_fields_set:
        data_dir = _DEMO_DATA_DIR  # the packaged default (/var/lib) is rarely writable for a first try
    data_dir = data_dir.resolve()
    update["data_dir"] = data_dir
    env["MIPGW_DATA_DIR"] = str(data_dir)
    if args.ae_title is not None:
        if not 1 <= len(args.ae_title.strip()) <= 16:
            raise ValueError("--ae-title must be 1 to 16 characters")
        update["ae_title"] = args.ae_title.strip()
        env["MIPGW_AE_TITLE"] = update["ae_title"]
    bind = args.bind
    explicit_bind = "bind" in base.listener.model_fields_set or "bind" in base.api.model_fields_set
    if bind is None and args.demo and not explicit_bind:
        bind = "127.0.0.1"  # the demo's API is open: keep it on this machine
    listener = base.listener.model_dump()
    api = base.api.model_dump()
    if bind is not None:
        listener["bind"] = api["bind"] = bind
    if args.dicom_port is not None:
        listener["port"] = args.dicom_port
    if args.http_port is not None:
        api["port"] = args.http_port
    update["listener"] = ListenerSettings.model_validate(listener)
    update["api"] = ApiSettings.model_validate(api)
    if args.rules is not None:
        rules_path = Path(args.rules).resolve()
        update["rules_file"] = rules_path
        env["MIPGW_RULES_FILE"] = str(rules_path)
    settings = base.model_copy(update=update)
    path = configured_rules_path(settings)
    rules = parse_rules(path.read_text(encoding="utf-8"), source=str(path))
    models = {rule.action.endpoint: str(rule.action.model) for rule in rules.enabled}

    url, key = None, args.endpoint_key
    if args.demo:
        from service.mock_endpoint import MockEndpointServer

        url, key = stack.enter_context(MockEndpointServer()).score_url, None
        print("mock endpoint (NOT A MODEL: thresholding, for demos) on " + url, flush=True)
    elif args.endpoint is not None:
        if "://" not in args.endpoint:
            raise ValueError("--endpoint takes a scoring URL (http[s]://host/score)")
        url = args.endpoint
    elif args.endpoint_key is not None:
        raise ValueError("--endpoint-key goes with --endpoint URL")
    if url is not None:
        endpoints = dict(settings.endpoints)
        for name in sorted(set(models) | set(endpoints)):
            old = endpoints.get(name)
            model = models.get(name) or (old.model if old else "2d")
            kept = old.model_dump(exclude={"url", "model", "key", "key_file", "entra"}) if old else {}
            endpoints[name] = EndpointSettings.model_validate(
                {**kept, "url": url, "model": model, "key": key}
            )
            prefix = f"MIPGW_ENDPOINTS__{name.upper()}__"
            env[prefix + "URL"], env[prefix + "MODEL"] = url, model
            if key is not None:
                env[prefix + "KEY"] = key
            dropped += [
                prefix + field for field in ("KEY", "KEY_FILE", "ENTRA") if key is None or field != "KEY"
            ]
        settings = settings.model_copy(update={"endpoints": endpoints})

    if args.demo:
        node = stack.enter_context(DemoNode(data_dir / "demo-node", ae_title=DEMO_AE))
        wanted = {name for rule in rules.enabled for name in rule.action.destinations}
        missing = sorted(wanted - set(settings.destinations))
        destinations = dict(settings.destinations)
        for name in missing:
            destinations[name] = DicomNode(ae_title=DEMO_AE, host=node.host, port=node.port)
            prefix = f"MIPGW_DESTINATIONS__{name.upper()}__"
            env |= {
                prefix + "KIND": "dicom",
                prefix + "AE_TITLE": DEMO_AE,
                prefix + "HOST": node.host,
                prefix + "PORT": str(node.port),
            }
        settings = settings.model_copy(update={"destinations": destinations})
        for name in sorted(wanted):
            where = (
                f"the demo node {DEMO_AE} at {node.host}:{node.port} (files in {node.folder})"
                if name in missing
                else "as configured"
            )
            print(f"destination {name}: {where}", flush=True)
    rules.validate_against(settings)  # the worker would refuse these rules: say so now, with lines
    return _Plan(settings, env, tuple(dropped))


def _serve(args: argparse.Namespace, plan: _Plan, stack: ExitStack) -> int:
    settings = plan.settings
    insecure = bool(args.insecure_no_auth or args.demo)
    if problem := api_auth_problem(settings, insecure_no_auth=insecure):
        print(f"mip-gateway serve: {problem}", file=sys.stderr)
        return 2
    data = DataDir(settings.data_dir)
    data.root.mkdir(parents=True, exist_ok=True)
    remove_stale_stow_parts(data)
    store = open_store(database_url(settings), migrate=True)  # before the worker migrates it too
    stack.callback(store.close)
    intake = build_intake(settings, store, actor="serve")
    listener = DicomListener(settings, intake, data)
    app = create_app(settings, store=store, intake=intake, enqueue=intake.enqueue, allow_no_auth=insecure)
    try:
        sock = bind_socket(settings.api.bind, settings.api.port)
    except OSError as exc:
        print(
            f"mip-gateway serve: cannot listen on {settings.api.bind}:{settings.api.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    stack.callback(sock.close)
    try:
        listener.start()
    except (OSError, ValueError) as exc:
        print(
            f"mip-gateway serve: cannot listen on {settings.listener.bind}:{settings.listener.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    stack.callback(listener.stop)  # on an early exit; normally the stop thread below has stopped it
    worker = WorkerProcess(
        _worker_argv(args),
        _child_env(os.environ, plan) | {PARENT_ENV: str(os.getpid())},  # even if we are SIGKILLed
        grace_s=args.worker_grace,
    )
    worker.start()
    stack.callback(worker.stop)
    intake.start()
    stack.callback(intake.stop)  # runs before worker.stop: callbacks unwind last in, first out

    http_url = socket_url(sock)
    print(f"DICOM listener {settings.ae_title} on {settings.listener.bind}:{listener.port}", flush=True)
    print(f"HTTP API on {http_url}", flush=True)
    print(f"worker pid {worker.pid}; data directory {settings.data_dir}", flush=True)
    if insecure and api_auth_problem(settings, insecure_no_auth=False):
        print("insecure: the HTTP API is open, no API key is required", flush=True)

    stopping = threading.Event()
    server = _Server(api_config(app), on_exit=stopping.set)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.handle_exit)  # uvicorn installs the same handler once it runs
    status = _Status()

    def stop(code: int) -> None:
        status.set(code)
        stopping.set()
        server.should_exit = True

    def stop_listener() -> None:
        stopping.wait()
        listener.stop()  # stop accepting now, while uvicorn drains its requests

    def watch_worker() -> None:
        while not stopping.wait(1.0):
            code = worker.poll()
            if code is not None:
                log.error("serve.worker_exited", status=code)
                print(f"mip-gateway serve: the worker exited with status {code}", file=sys.stderr)
                stop(1)

    stopper = threading.Thread(target=stop_listener, name="mipgw-serve-stop", daemon=True)
    stopper.start()
    threading.Thread(target=watch_worker, name="mipgw-serve-worker", daemon=True).start()
    if args.demo:
        demo = _Demo(settings, store, listener.port, _client_url(http_url), timeout_s=args.demo_timeout)

        def run_demo() -> None:
            code = demo.run(lambda: stopping.is_set())
            if args.demo_exit:
                stop(code)
            elif code == 0:
                print("serving until Ctrl-C (SIGINT) or SIGTERM", flush=True)

        threading.Thread(target=run_demo, name="mipgw-serve-demo", daemon=True).start()
    log.info("serve.start", http=http_url, dicom_port=listener.port, data_dir=str(settings.data_dir))
    try:
        server.run(sockets=[sock])
    finally:
        stopping.set()
        stopper.join()  # no instance is being written when the intake and the worker stop
        log.info("serve.stopping", pending_series=intake.tracker.pending())
    return status.code


class _Status:
    def __init__(self) -> None:
        self.code = 0
        self._lock = threading.Lock()

    def set(self, code: int) -> None:
        with self._lock:
            self.code = max(self.code, code)


class _Server(uvicorn.Server):
    """uvicorn, telling us when a signal asks it to stop (so the listener stops accepting too)."""

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "service.cli"]
    if args.log_json:
        argv.append("--log-json")
    if args.verbose:
        argv.append("--verbose")
    return [*argv, "worker", "--queues", "all", "--concurrency", str(args.worker_concurrency)]


def _child_env(inherited: Mapping[str, str], plan: _Plan) -> dict[str, str]:
    dropped = {name.upper() for name in plan.dropped_env}
    env = {name: value for name, value in inherited.items() if name.upper() not in dropped}
    return env | plan.worker_env


def _client_url(url: str) -> str:
    """The URL a client on this machine uses (a wildcard bind is reached on loopback)."""
    for wildcard in ("//0.0.0.0:", "//[::]:"):
        if wildcard in url:
            return url.replace(wildcard, "//127.0.0.1:")
    return url


class _Demo:
    """Send the sample study to our own listener, wait for its jobs, say where the SEG is."""

    def __init__(
        self, settings: Settings, store: Store, dicom_port: int, http_url: str, *, timeout_s: float
    ) -> None:
        self.settings = settings
        self.store = store
        self.dicom_port = dicom_port
        self.http_url = http_url
        self.timeout_s = timeout_s
        self.data = DataDir(settings.data_dir)

    def run(self, stopping: Callable[[], bool]) -> int:
        from service.commands.sample import run_sample

        folder = self.data.root / "demo-sample"
        run_sample(argparse.Namespace(out=str(folder), modality="CT", size=256, slices=48, seed=1))
        host = self.settings.listener.bind
        host = "127.0.0.1" if host in _ANY_ADDRESS else host
        try:
            study, sent = send_study(
                folder, host=host, port=self.dicom_port, calling_ae=DEMO_AE, called_ae=self.settings.ae_title
            )
        except (OSError, RuntimeError) as exc:
            print(f"demo: sending the sample failed: {exc}", file=sys.stderr, flush=True)
            return 1
        print(
            f"demo: sent {sent} instances by C-STORE from {DEMO_AE} to {self.settings.ae_title}", flush=True
        )
        deadline = time.monotonic() + self.timeout_s
        jobs = []
        while time.monotonic() < deadline and not stopping():
            with self.store.session(readonly=True) as s:
                jobs = list_jobs(s, study_uid=study)
            if jobs and all(job.state in FINAL_STATES for job in jobs):
                break
            time.sleep(0.5)
        else:
            print(
                f"demo: the study's jobs did not finish within {self.timeout_s:g} s",
                file=sys.stderr,
                flush=True,
            )
            return 1
        failed = 0
        for job in jobs:
            print(
                f"demo: job {job.id} rule {job.rule or '-'}: {job.state}"
                f"{' (' + job.error + ')' if job.error else ''}",
                flush=True,
            )
            failed += job.state is not JobState.DONE
            with self.store.session(readonly=True) as s:
                results = results_for(s, job.id)
                deliveries = deliveries_for(s, job.id)
            for index, result in enumerate(results):
                path = self.data.seg(
                    job.study_instance_uid, result.seg_series_instance_uid, result.seg_sop_instance_uid
                )
                query = f"?index={index}" if len(results) > 1 else ""
                print(f"demo: SEG {self.http_url}/jobs/{job.id}/seg{query}", flush=True)
                print(f"demo: SEG file {path}", flush=True)
            for delivery in deliveries:
                error = f" ({delivery.last_error})" if delivery.last_error else ""
                print(
                    f"demo: sent to destination {delivery.destination}: {delivery.state}{error}", flush=True
                )
        return 1 if failed else 0
