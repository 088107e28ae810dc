"""The ``mip-gateway`` command.

Subcommands import what they need when they run, so ``mip-gateway convert`` does not pay for the
HTTP stack and ``mip-gateway serve`` does not pay for what it does not use.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

from service.logs import configure_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mip-gateway",
        description="DICOM gateway for MedImageParse (2D and 3D) segmentation.",
    )
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines (production)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="one line per series: what it is and what is wrong with it")
    info.add_argument(
        "paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)"
    )
    info.set_defaults(handler="service.commands.inspect:run_info")

    convert = sub.add_parser("convert", help="convert series to model inputs (PNG for 2D, NIfTI for 3D)")
    convert.add_argument(
        "paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)"
    )
    convert.add_argument("--to", required=True, choices=["png", "nifti"], help="model input format")
    convert.add_argument("--out", required=True, metavar="DIR", help="output folder")
    convert.add_argument(
        "--window",
        metavar="NAME",
        help="CT window preset (2D: abdomen, lung, pelvis, liver, colon, pancreas; "
        "3D: soft_tissue, lung, brain, bone), or 'percentile' / 'voi'; default per modality",
    )
    convert.add_argument(
        "--layout", choices=["xyz", "slices-first"], default="xyz", help="NIfTI voxel layout (default xyz)"
    )
    convert.add_argument(
        "--intensity",
        choices=["raw", "uint8"],
        help="NIfTI voxel values: raw modality units (default) or 0..255 (default when --window is given)",
    )
    convert.set_defaults(handler="service.commands.convert:run_convert")

    sample = sub.add_parser(
        "sample", help="write a synthetic phantom series (no patient data) to try things on"
    )
    sample.add_argument("out", metavar="DIR", help="folder to write the series into")
    sample.add_argument("--modality", choices=["CT", "MR"], default="CT")
    sample.add_argument("--size", type=int, default=256, help="rows and columns (default 256)")
    sample.add_argument("--slices", type=int, default=48, help="number of slices (default 48)")
    sample.add_argument("--seed", type=int, default=1)
    sample.set_defaults(handler="service.commands.sample:run_sample")

    mock = sub.add_parser(
        "mock-endpoint",
        help="serve a stand-in segmentation endpoint (NOT A MODEL: thresholding, for tests and demos)",
    )
    mock.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    mock.add_argument(
        "--port", type=int, default=8765, help="port (default 8765; 0 = any free port, printed on stdout)"
    )
    mock.add_argument(
        "--key", help="require 'Authorization: Bearer KEY' on /score (default: $MIPGW_MOCK_KEY, else open)"
    )
    mock.add_argument("--latency-ms", type=int, metavar="N", help="added delay per request")
    mock.add_argument(
        "--fault",
        metavar="SPEC",
        help="fault injection, e.g. 'fail-first=3;status=503;retry-after=1' (see service/mock/faults.py)",
    )
    mock.set_defaults(handler="service.mock_endpoint:run_mock_endpoint")

    rules_parser = sub.add_parser(
        "rules", help="check a rules file, or see which rules fire for DICOM series"
    )
    rules_sub = rules_parser.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    rules_check = rules_sub.add_parser(
        "check", help="validate a rules file; every problem with its line (exit 1 when there are any)"
    )
    rules_check.add_argument(
        "file", nargs="?", metavar="FILE", help="default: the settings' rules_file, else the packaged rules"
    )
    rules_check.add_argument(
        "--no-settings", action="store_true", help="skip checking endpoint and destination names"
    )
    rules_check.set_defaults(handler="service.commands.rules:run_check")
    rules_test = rules_sub.add_parser(
        "test", help="per series: which rules fire, why the others do not, and what would be sent"
    )
    rules_test.add_argument(
        "paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)"
    )
    rules_test.add_argument("--rules", metavar="FILE", help="rules file (default as for 'rules check')")
    rules_test.add_argument(
        "--route", choices=["dimse", "stow", "api", "cli"], default="dimse", help="how the series came in"
    )
    rules_test.add_argument("--calling-ae", metavar="AE", help="the sender's AE title (DIMSE)")
    rules_test.set_defaults(handler="service.commands.rules:run_test")

    run = sub.add_parser(
        "run", help="the whole pipeline in this process, no broker: SEGs and report.json into --out"
    )
    run.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)")
    run.add_argument("--out", default="mipgw-out", metavar="DIR", help="where SEGs and report.json go")
    run.add_argument("--rules", metavar="FILE", help="rules file (default: the configured or packaged one)")
    run.add_argument("--endpoint", metavar="NAME|URL", help="a configured endpoint, or a scoring URL for all")
    run.add_argument("--endpoint-key", metavar="KEY", help="bearer key for --endpoint URL")
    run.add_argument("--demo", action="store_true", help="use the mock endpoint (not a model), in-process")
    run.add_argument("--send", action="store_true", help="also deliver the SEGs to the rules' destinations")
    run.add_argument("--model", choices=["2d", "3d"], help="ad-hoc: the model for --prompt, bypassing rules")
    run.add_argument("--prompt", action="append", metavar="TEXT", help="ad-hoc: a target to segment (repeat)")
    run.add_argument("--window", metavar="NAME", help="ad-hoc: window preset, percentile or voi")
    run.set_defaults(handler="service.commands.run:run_pipeline")

    worker = sub.add_parser("worker", help="a Celery worker: inference and/or delivery queues")
    worker.add_argument(
        "--queues", choices=["all", "inference", "delivery"], default="all", help="which queues to consume"
    )
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--name", help="worker node name (default: mipgw@<host>)")
    worker.set_defaults(handler="service.commands.worker:run_worker")

    scp = sub.add_parser("scp", help="the DICOM listener: C-ECHO and C-STORE into the spool, series queued")
    scp.add_argument(
        "--port", type=int, help="port (default: listener.port, 11112; 0 = any free port, printed)"
    )
    scp.add_argument("--bind", metavar="ADDR", help="address to listen on (default: listener.bind, 0.0.0.0)")
    scp.add_argument("--ae-title", metavar="AE", help="our AE title (default: ae_title, MIPGW)")
    scp.set_defaults(handler="service.commands.scp:run_scp")

    api = sub.add_parser("api", help="the HTTP API: STOW-RS in, jobs, SEGs and previews out, health, metrics")
    api.add_argument("--port", type=int, help="port (default: api.port, 8080; 0 = any free port, printed)")
    api.add_argument("--bind", metavar="ADDR", help="address to listen on (default: api.bind, 0.0.0.0)")
    api.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without API keys when none is configured (trusted networks and demos only)",
    )
    api.set_defaults(handler="service.commands.api:run_api")

    serve = sub.add_parser(
        "serve", help="listener, HTTP API and a worker in one command (--demo: a sample study end to end)"
    )
    serve.add_argument(
        "--dicom-port", type=int, metavar="PORT", help="DICOM port (default: listener.port, 11112; 0 = free)"
    )
    serve.add_argument(
        "--http-port", type=int, metavar="PORT", help="HTTP port (default: api.port, 8080; 0 = free)"
    )
    serve.add_argument(
        "--bind", metavar="ADDR", help="address for both (default: listener.bind/api.bind; --demo: 127.0.0.1)"
    )
    serve.add_argument("--ae-title", metavar="AE", help="our AE title (default: ae_title, MIPGW)")
    serve.add_argument(
        "--data-dir", metavar="DIR", help="data directory (default: data_dir; --demo: ./mipgw-demo)"
    )
    serve.add_argument(
        "--rules", metavar="FILE", help="rules file (default: rules_file, else the packaged one)"
    )
    serve.add_argument("--endpoint", metavar="URL", help="send every endpoint's requests to this scoring URL")
    serve.add_argument("--endpoint-key", metavar="KEY", help="bearer key for --endpoint")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve the API without keys when none is configured (trusted networks and demos only)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="mock endpoint (NOT a model), open API on loopback, and a sample CT study sent to ourselves",
    )
    serve.add_argument(
        "--demo-exit", action="store_true", help="with --demo: exit once the sample's SEG is out"
    )
    serve.add_argument(
        "--demo-timeout", type=float, default=300.0, metavar="S", help="with --demo: give up after S seconds"
    )
    serve.add_argument("--worker-concurrency", type=int, default=1, metavar="N", help="worker processes")
    serve.add_argument(
        "--worker-grace", type=float, default=60.0, metavar="S", help="on stop, the worker's time to finish"
    )
    serve.set_defaults(handler="service.commands.serve:run_serve")

    nodes = sub.add_parser(
        "nodes", help="check that every configured node answers, as the gateway reaches it"
    )
    nodes_sub = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    nodes_check = nodes_sub.add_parser(
        "check",
        help="C-ECHO DICOM nodes, QIDO-RS DICOMweb nodes, reach each endpoint (exit 1 when one fails)",
    )
    nodes_check.add_argument("names", nargs="*", metavar="NAME", help="only these nodes (default: all)")
    nodes_check.add_argument("--json", action="store_true", help="one JSON object per node")
    nodes_check.set_defaults(handler="service.commands.nodes:run_check")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Reading headers allocates hundreds of thousands of small objects and almost no cycles; the
    # default thresholds run the cycle collector thousands of times per study (~10-15% of a convert).
    gc.set_threshold(100_000, 50, 100)
    import logging

    configure_logging(json=args.log_json, level=logging.DEBUG if args.verbose else logging.INFO)
    module_name, _, function_name = args.handler.partition(":")
    import importlib

    handler = getattr(importlib.import_module(module_name), function_name)
    status = int(handler(args))
    # The headers read form reference cycles; the collection at interpreter exit would walk all of
    # them (~0.2 s for a CT) only to free memory the OS takes back anyway. Files are already synced.
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(main())
