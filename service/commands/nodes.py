"""``mip-gateway nodes check``: does every configured node answer, reached the way the gateway reaches it?

An integration engineer's first question on site. Each destination and source is tried with the
settings a delivery or a pull would use (AE titles, TLS, credentials, timeouts): DICOM nodes by
C-ECHO, DICOMweb nodes by a QIDO-RS query for one study, segmentation endpoints by an HTTP request to
their origin. Failures carry the same named reasons as a failed delivery ("association rejected
(permanent) by the service user: calling AE title not recognised", "rejected the credentials
(401)"...). For a C-MOVE source it also says what the node must know about the gateway, since no
C-ECHO can prove that.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from config.settings import DicomNode, DicomWebNode, Settings, get_settings
from service.api.health import http_origin_check
from workers.delivery.dimse import DimseSender
from workers.delivery.stow import StowSender
from workers.errors import DeliveryError

__all__ = ["NodeCheck", "check_nodes", "run_check"]


@dataclass(frozen=True, slots=True)
class NodeCheck:
    role: str  # destination / source / endpoint
    name: str
    address: str
    ok: bool
    detail: str
    note: str = ""


def run_check(args: argparse.Namespace) -> int:
    settings = get_settings()
    results = check_nodes(settings, set(args.names))
    if not results:
        print(
            "no nodes configured" + (f" named {', '.join(args.names)}" if args.names else ""), file=sys.stderr
        )
        return 2
    if args.json:
        for result in results:
            print(json.dumps(asdict(result)))
    else:
        width = max(len(f"{r.role} {r.name}") for r in results)
        for r in results:
            print(f"{'ok  ' if r.ok else 'FAIL'} {f'{r.role} {r.name}':{width}}  {r.address}  {r.detail}")
            if r.note:
                print(f"     {'':{width}}  note: {r.note}")
    return 0 if all(r.ok for r in results) else 1


def check_nodes(settings: Settings, names: set[str] | None = None) -> list[NodeCheck]:
    """Every configured node (or those named), checked at once; in settings order."""
    planned: list[tuple[str, str, str, Callable[[], str], str]] = []
    for role, nodes in (("destination", settings.destinations), ("source", settings.sources)):
        for name, node in nodes.items():
            planned.append((role, name, *_node_check(name, node, settings)))
    for name, endpoint in settings.endpoints.items():
        # the endpoint's own connect timeout: readiness probes answer in 2 s, an engineer can wait
        check = http_origin_check(str(endpoint.url), timeout_s=endpoint.connect_timeout_s)
        planned.append(("endpoint", name, str(endpoint.url), check, ""))
    if names:
        planned = [item for item in planned if item[1] in names]
    if not planned:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(planned)), thread_name_prefix="mipgw-nodes") as pool:
        futures = [pool.submit(_run, check) for _, _, _, check, _ in planned]
        outcomes = [future.result() for future in futures]
    return [
        NodeCheck(role, name, address, ok, detail, note)
        for (role, name, address, _, note), (ok, detail) in zip(planned, outcomes, strict=True)
    ]


def _node_check(
    name: str, node: DicomNode | DicomWebNode, settings: Settings
) -> tuple[str, Callable[[], str], str]:
    if isinstance(node, DicomWebNode):
        url = str(node.url)

        def qido() -> str:
            with StowSender(name, node) as sender:
                return sender.probe()

        return url, qido, ""
    calling = node.calling_ae_title or settings.ae_title
    address = f"{node.ae_title}@{node.host}:{node.port} (as {calling}{', TLS' if node.tls else ''})"
    note = ""
    if node.retrieve == "c-move" and name in settings.sources:
        note = (
            f"C-MOVE source: it must know AE {settings.ae_title} at this gateway's listener (port "
            f"{settings.listener.port}); only a pull proves it"
        )
    return address, DimseSender(name, node, calling_ae=settings.ae_title).echo, note


def _run(check: Callable[[], str]) -> tuple[bool, str]:
    started = time.monotonic()
    try:
        return True, check()
    except DeliveryError as exc:
        return False, exc.reason
    except Exception as exc:  # a check reports, it never raises
        elapsed = time.monotonic() - started
        return False, f"{type(exc).__name__}: {str(exc)[:200]} (after {elapsed:.1f} s)"
