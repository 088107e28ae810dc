"""End to end through the front door, as production runs: dcmtk ``storescu`` → ``mip-gateway scp`` →
Redis → one ``mip-gateway worker`` (3D path, zero-latency mock endpoint in its own process) → SEG
C-STOREd into Orthanc. ``mip-gateway api`` runs beside them and is where the job record is read.

For each run a fresh 300-slice 512² CT (bench/ctgen.py, one seed per run) is sent over one
association. Measured:

- **total**: seconds from the last instance acknowledged (storescu has exited) to the SEG being stored
  in Orthanc (its REST API polled every 20 ms);
- **stages**: the job's own times from its record (``GET /jobs/{id}``): the stage rows load, match,
  infer (the whole segmentation: NIfTI export, endpoint call, mask import, SEG build) and persist, and
  deliver (entering ``delivering`` to the delivery's ``delivered_at``: the hop through the delivery
  queue and the C-STORE); and the job's state changes relative to the last acknowledgement;
- **ratio** total / sum of stage times: what the front door, the queue and the hand-offs add around
  the work itself (1.0 would be none).

A small warm-up series goes first (the worker's first job pays its imports). Idle timer 2 s
(``listener.completion_idle_s``), Redis database 8 (flushed before and after), job store in a fresh
PostgreSQL database (created and dropped) or ``--database sqlite``.

    python bench/end_to_end.py [--slices 300] [--size 512] [--repeats 3] [--database postgresql|sqlite]
                               [--json FILE|-] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import pydicom

from bench.ctgen import ct_series
from tests.gateway_processes import GatewayProcesses, ProcessStartError, gateway_env
from tests.helpers import system_tool
from tests.peers import Orthanc

BROKER = "redis://127.0.0.1:6379/8"
API_KEY = "bench-end-to-end"
SENDER_AET = "BENCH"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk 3.6.7 leaves Nagle on otherwise (29x slower)
# the job record times these (infer spans the whole segmentation: NIfTI export, the endpoint call,
# mask import and the SEG build); deliver comes from the delivery record
STAGES = ("load", "match", "infer", "persist", "deliver")
RULES = """
version: 1
rules:
  - name: bench-ct-3d
    match:
      all:
        - {attribute: Modality, equals: CT}
        - {kind: volume}
    action:
      endpoint: mip3d
      model: 3d
      prompts: [liver, spleen]
      window: soft_tissue
      nifti: {intensity: uint8, layout: slices-first}
      seg: {series_description: "AI bench (MedImageParse 3D)", series_number: 9901}
      destinations: [pacs]
"""


@contextmanager
def _redis(url: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        sys.exit(f"Redis not reachable at {url}: {exc}")
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@contextmanager
def _database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+pysqlite:///{work / 'jobs.sqlite3'}"
        return
    import pytest

    from tests.unit.workers.store.backends import temporary_postgres_database

    try:
        with temporary_postgres_database() as url:
            yield url
    except pytest.skip.Exception as exc:  # its way of saying the server is not there
        sys.exit(str(exc))


class Rig:
    """Orthanc, the mock endpoint, scp, api and one worker, started in that order."""

    def __init__(self, stack: ExitStack, work: Path, database: str) -> None:
        self.pacs = stack.enter_context(Orthanc(work / "orthanc", {"mipgw": ("MIPGW", 1)}))
        broker = stack.enter_context(_redis(BROKER))
        (work / "rules.yaml").write_text(RULES)
        env = gateway_env(
            work / "data",
            broker_url=broker,
            database_url=database,
            rules_file=work / "rules.yaml",
            settings={
                "MIPGW_LISTENER__COMPLETION_IDLE_S": "2",
                "MIPGW_LISTENER__ALLOWED_CALLING_AES": json.dumps([SENDER_AET, "ORTHANC"]),
                "MIPGW_API__KEYS": json.dumps([API_KEY]),
                "MIPGW_ENDPOINTS__MIP3D__MODEL": "3d",
                "MIPGW_DESTINATIONS__PACS__KIND": "dicom",
                "MIPGW_DESTINATIONS__PACS__AE_TITLE": self.pacs.aet,
                "MIPGW_DESTINATIONS__PACS__HOST": "127.0.0.1",
                "MIPGW_DESTINATIONS__PACS__PORT": str(self.pacs.dicom_port),
            },
        )
        self.gateway = stack.enter_context(GatewayProcesses(work, env))
        try:
            mock = self.gateway.start_mock_endpoint()  # zero latency: the model is not what is measured
            self.gateway.env["MIPGW_ENDPOINTS__MIP3D__URL"] = f"{mock}/score"
            self.scp_port = self.gateway.start_scp()
            self.pacs.set_modality("mipgw", "MIPGW", self.scp_port)
            self.api = stack.enter_context(
                httpx.Client(
                    base_url=self.gateway.start_api(),
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=30,
                )
            )
            self.gateway.start_worker()
        except ProcessStartError as exc:
            sys.exit(f"the gateway did not start: {exc}")

    def send(self, files: list[Path]) -> tuple[float, float]:
        """storescu over one association; (seconds sending, wall clock of the last acknowledgement)."""
        storescu = system_tool("storescu")
        assert storescu is not None
        command = [storescu, "-aet", SENDER_AET, "-aec", "MIPGW", "127.0.0.1", str(self.scp_port)]
        start = time.perf_counter()
        sent = subprocess.run(
            [*command, *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, check=False
        )
        acked = time.time()
        if sent.returncode != 0:
            sys.exit(f"storescu failed ({sent.returncode}): {(sent.stdout + sent.stderr)[-1500:]}")
        return time.perf_counter() - start, acked

    def wait_seg(self, study_uid: str, timeout: float = 1800) -> float:
        """Wall clock when Orthanc first lists a SEG series in the study."""
        query = {"Level": "Series", "Query": {"StudyInstanceUID": study_uid, "Modality": "SEG"}}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.pacs.client.post("/tools/find", json=query)
            response.raise_for_status()
            if response.json():
                return time.time()
            time.sleep(0.02)
        sys.exit(f"no SEG in Orthanc after {timeout} s\n{self.gateway.logs()}")

    def job(self, series_uid: str, timeout: float = 120) -> dict[str, Any]:
        """The series' job in full, once it is done (the SEG may reach Orthanc just before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.api.get("/jobs", params={"series": series_uid}).raise_for_status().json()["jobs"]
            if jobs and jobs[0]["state"] in ("done", "no_findings", "failed", "delivery_failed"):
                if jobs[0]["state"] != "done":
                    sys.exit(f"job ended {jobs[0]['state']}: {jobs[0]['error']}\n{self.gateway.logs()}")
                return dict(self.api.get(f"/jobs/{jobs[0]['id']}").raise_for_status().json())
            time.sleep(0.1)
        sys.exit(f"job of {series_uid} not done in {timeout} s\n{self.gateway.logs()}")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def run_once(rig: Rig, folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("*.dcm"))
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    send_s, acked = rig.send(files)
    stored = rig.wait_seg(str(head.StudyInstanceUID))
    job = rig.job(str(head.SeriesInstanceUID))
    stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for stage in job["stages"]:  # every attempt counts: a retried stage was work done too
        stages[stage["stage"]] = stages.get(stage["stage"], 0.0) + float(stage["seconds"] or 0.0)
    # delivery is no stage row but a delivery record: from entering `delivering` to delivered_at
    entered = {change["state"]: _epoch(change["at"]) for change in job["states"]}
    (delivery,) = job["deliveries"]
    stages["deliver"] = _epoch(delivery["delivered_at"]) - entered["delivering"]
    total = stored - acked
    return {
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "send_s": send_s,
        "total_s": total,
        "stages_s": stages,
        "sum_stages_s": sum(stages.values()),
        "ratio": total / sum(stages.values()),
        "states": [(change["state"], _epoch(change["at"]) - acked) for change in job["states"]],
        "completion_reason": job["completion_reason"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="series sent, one after the other (default 3)")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-': stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data directory)")
    args = parser.parse_args()
    if system_tool("storescu") is None:
        sys.exit("dcmtk is not installed (apt-get install dcmtk)")

    warmup = ct_series(24, 128, seed=990)
    series = [ct_series(args.slices, args.size, seed=1000 + n) for n in range(args.repeats)]
    work = Path(tempfile.mkdtemp(prefix="bench-end-to-end-"))
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        database = stack.enter_context(_database(args.database, work))
        rig = Rig(stack, work, database)
        run_once(rig, warmup)
        for folder in series:
            runs.append(run_once(rig, folder))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    medians = {
        "send_s": statistics.median(r["send_s"] for r in runs),
        "total_s": statistics.median(r["total_s"] for r in runs),
        "sum_stages_s": statistics.median(r["sum_stages_s"] for r in runs),
        "ratio": statistics.median(r["ratio"] for r in runs),
    }
    mb = runs[0]["bytes"] / 1e6
    print(
        f"{args.slices}-slice {args.size}² CT ({mb:.1f} MB) by storescu → mip-gateway scp → Redis → 1 worker "
        f"(3D, zero-latency mock) → Orthanc C-STORE; {args.database} job store, idle timer 2 s"
    )
    print(f"{'run':>4} {'send s':>8} {'ack→SEG s':>10} {'Σ stages s':>11} {'total/Σ':>8}  completion")
    for n, r in enumerate(runs, 1):
        print(
            f"{n:>4} {r['send_s']:>8.2f} {r['total_s']:>10.2f} {r['sum_stages_s']:>11.2f} "
            f"{r['ratio']:>8.2f}  {r['completion_reason']}"
        )
    print(
        f"{'med':>4} {medians['send_s']:>8.2f} {medians['total_s']:>10.2f} {medians['sum_stages_s']:>11.2f} "
        f"{medians['ratio']:>8.2f}"
    )
    print(
        "stage times (median s): "
        + ", ".join(
            f"{stage} {statistics.median(r['stages_s'][stage] for r in runs):.3f}" for stage in STAGES
        )
    )
    last = runs[-1]
    print("last run, states after the last ack (s): " + ", ".join(f"{s} {t:+.2f}" for s, t in last["states"]))
    if args.json:
        report = {"bench": "end_to_end", "slices": args.slices, "size": args.size, "database": args.database}
        text = json.dumps(report | {"medians": medians, "runs": runs}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
