"""The pipeline's own cost and its scaling, with real processes: Redis, Celery workers, the mock endpoint
(its own process), dcmtk storescp as the PACS.

1. Overhead: one 300-slice 512² CT through the 3D path with a zero-latency mock: wall time from
   enqueue to the SEG stored in storescp / the sum of the stages measured alone in one process
   (load, NIfTI export, the endpoint call, mask import, SEG build + write, C-STORE). Target ≤ 1.3.
2. Scaling: N series queued at once, with 1 and then 2 worker processes, against an endpoint that
   takes ``--latency-ms`` per request (a GPU deployment elsewhere): series per minute, and the 2-worker
   rate / 2 × the 1-worker rate. Target ≥ 0.8.

    python bench/pipeline.py [--slices 300] [--series 20] [--small-slices 48] [--latency-ms 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ctgen import ct_series

CLI = str(Path(sys.executable).with_name("mip-gateway"))
BROKER = "redis://127.0.0.1:6379/9"
RULES = """
version: 1
rules:
  - name: ct-liver-3d
    match: {attribute: Modality, equals: CT}
    action: {endpoint: mip3d, model: 3d, prompts: [liver, spleen], window: soft_tissue, destinations: [pacs]}
"""


def dcmtk(name: str) -> str:
    """dcmtk's tool, not the pynetdicom app of the same name in the virtualenv's bin."""
    venv_bin = Path(sys.prefix) / "bin"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin)
    found = shutil.which(name, path=path)
    if found is None:
        sys.exit(f"{name} is not installed (apt-get install dcmtk)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rig:
    def __init__(self, work: Path, latency_ms: int) -> None:
        import redis

        redis.Redis.from_url(BROKER).flushdb()
        self.work = work
        self.received = work / "received"
        self.received.mkdir(parents=True)
        port = free_port()
        self.scp = subprocess.Popen(
            [dcmtk("storescp"), "-aet", "PACS", "-od", str(self.received), "+xa", str(port)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        flags = ["--latency-ms", str(latency_ms)] if latency_ms else []
        self.mock = subprocess.Popen(
            [CLI, "mock-endpoint", "--port", "0", *flags], stdout=subprocess.PIPE, text=True
        )
        assert self.mock.stdout is not None
        self.mock_url = self.mock.stdout.readline().strip().rsplit(" ", 1)[-1]
        (work / "rules.yaml").write_text(RULES)
        self.env = {
            **os.environ,
            "MIPGW_DATA_DIR": str(work / "data"),
            "MIPGW_BROKER_URL": BROKER,
            "MIPGW_DATABASE_URL": f"sqlite+pysqlite:///{work / 'jobs.sqlite3'}",
            "MIPGW_RULES_FILE": str(work / "rules.yaml"),
            "MIPGW_ENDPOINTS__MIP3D__URL": f"{self.mock_url}/score",
            "MIPGW_ENDPOINTS__MIP3D__MODEL": "3d",
            "MIPGW_DESTINATIONS__PACS__KIND": "dicom",
            "MIPGW_DESTINATIONS__PACS__AE_TITLE": "PACS",
            "MIPGW_DESTINATIONS__PACS__HOST": "127.0.0.1",
            "MIPGW_DESTINATIONS__PACS__PORT": str(port),
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("MIPGW_")})
        from config.settings import Settings
        from workers.celery_app import create_celery
        from workers.store import open_store
        from workers.tasks import CeleryEnqueuer

        self.settings = Settings()
        self.store = open_store(self.env["MIPGW_DATABASE_URL"], migrate=True)
        self.enqueue = CeleryEnqueuer(create_celery(self.settings))
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_workers(self, count: int) -> None:
        for n in range(count):
            log = (self.work / f"worker-{len(self.workers)}.log").open("wb")
            proc = subprocess.Popen(
                [CLI, "worker", "--name", f"bench{len(self.workers)}-{n}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.workers.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = [p.read_text(errors="replace") for p in self.work.glob("worker-*.log")]
            if sum(" ready." in text for text in logs) >= len(self.workers):
                return
            time.sleep(0.2)
        raise RuntimeError("workers did not start")

    def stop_workers(self) -> None:
        for proc in self.workers:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            proc.wait(timeout=60)
        self.workers.clear()
        for log in self.work.glob("worker-*.log"):
            log.unlink()

    def submit(self, folder: Path) -> str:
        from dicom_io.reading import scan
        from workers.jobs import JobState, Priority, Route
        from workers.storage import DataDir
        from workers.store import create_job

        (series,) = {(i.study_instance_uid, i.series_instance_uid) for i in scan([folder]).instances}
        data = DataDir(self.settings.data_dir)
        spool = data.incoming_series(*series)
        if not spool.exists():
            spool.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, spool, copy_function=os.link)
        with self.store.session() as s:
            job = create_job(
                s,
                actor="bench",
                source="BENCH",
                route=Route.DIMSE,
                study_instance_uid=series[0],
                series_instance_uid=series[1],
                instance_count=len(list(folder.iterdir())),
                spool_path=data.relative(spool),
                state=JobState.QUEUED,
            )
        self.enqueue.process(job.id, Priority.ROUTINE)
        return job.id

    def wait_received(self, count: int, timeout: float = 900) -> float:
        start = time.perf_counter()
        while len(list(self.received.iterdir())) < count:
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"only {len(list(self.received.iterdir()))} of {count} SEGs arrived")
            time.sleep(0.05)
        return time.perf_counter()

    def close(self) -> None:
        self.stop_workers()
        for proc in (self.scp, self.mock):
            proc.terminate()
            proc.wait(timeout=10)


def stages_alone(folder: Path, rig: Rig) -> dict[str, float]:
    """The same work, stage by stage, in this process (warm), no queue and no store."""
    import numpy as np
    import pydicom

    from config.settings import DicomNode, EndpointSettings
    from dicom_io.intensity import Normalisation
    from dicom_io.nifti3d import NiftiLayout, VolumeIntensity, export_nifti
    from dicom_io.nifti_masks import masks_from_nifti
    from dicom_io.reading import scan
    from dicom_io.seg import AlgorithmInfo, SegmentRequest, SegOptions, build_seg
    from dicom_io.series import assemble
    from workers.delivery import sender_for
    from workers.endpoint.client import EndpointClient

    times: dict[str, float] = {}

    def clock(name: str, start: float) -> float:
        now = time.perf_counter()
        times[name] = now - start
        return now

    assemble(scan([folder]).instances)  # warm the page cache and imports, as a worker would be
    options = SegOptions(
        rule_name="alone",
        software_version="b",
        device_serial_number="b",
        content_datetime=dt.datetime.now(dt.UTC),
    )
    (warm,) = assemble(scan([folder]).instances)
    head = [warm.instances[0].header]
    build_seg(
        head,
        [(0, 0)],
        np.ones((1, warm.geometry.rows, warm.geometry.columns, 1), bool),
        [SegmentRequest("liver")],
        AlgorithmInfo("mock", "b"),
        options,
    )  # highdicom's first call
    t = time.perf_counter()
    (series,) = assemble(scan([folder]).instances)
    t = clock("load", t)
    nifti, volume = export_nifti(
        series,
        intensity=VolumeIntensity.UINT8,
        layout=NiftiLayout.SLICES_FIRST,
        normalisation=Normalisation.named_window("soft_tissue", "3d"),
    )
    t = clock("convert", t)
    with EndpointClient("alone", EndpointSettings(url=f"{rig.mock_url}/score", model="3d")) as client:
        answer = client.predict_3d(nifti, ["liver", "spleen"])
    t = clock("endpoint", t)
    masks = np.ascontiguousarray(np.moveaxis(masks_from_nifti(answer, volume, 2), 0, -1))
    t = clock("import", t)
    sources = list(series.instances)
    index = {inst.sop_instance_uid: n for n, inst in enumerate(sources)}
    result = build_seg(
        [i.header for i in sources],
        [(index[f.sop_instance_uid], f.index) for f in series.frames],
        masks,
        [SegmentRequest("liver"), SegmentRequest("spleen")],
        AlgorithmInfo("mock", "b"),
        options,
    )
    assert result.dataset is not None
    path = rig.work / "alone-seg.dcm"
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, result.dataset, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    t = clock("seg", t)
    node = DicomNode(ae_title="PACS", host="127.0.0.1", port=int(rig.env["MIPGW_DESTINATIONS__PACS__PORT"]))
    with sender_for("pacs", node, calling_ae="MIPGW") as sender:
        sender.send(path)
    clock("deliver", t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--small-slices", type=int, default=48)
    parser.add_argument("--latency-ms", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, Any] = {"bench": "pipeline"}

    big = ct_series(args.slices, 512)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    rig = Rig(work / "overhead", 0)
    try:
        alone = stages_alone(big, rig)
        shutil.rmtree(rig.received)
        rig.received.mkdir()
        rig.start_workers(1)
        start = time.perf_counter()
        rig.submit(big)
        wall = rig.wait_received(1) - start
    finally:
        rig.close()
    total = sum(alone.values())
    results["overhead"] = {"wall_s": wall, "stages_alone_s": alone, "sum_s": total, "ratio": wall / total}

    smalls = [ct_series(args.small_slices, 256, seed=100 + n) for n in range(args.series)]
    rates = {}
    for workers in (1, 2):
        rig = Rig(work / f"scale{workers}", args.latency_ms)
        try:
            rig.start_workers(workers)
            start = time.perf_counter()
            for folder in smalls:
                rig.submit(folder)
            elapsed = rig.wait_received(len(smalls)) - start
        finally:
            rig.close()
        rates[workers] = len(smalls) / elapsed * 60
    results["scaling"] = {
        "series": args.series,
        "slices": args.small_slices,
        "latency_ms": args.latency_ms,
        "per_minute": rates,
        "ratio": rates[2] / (2 * rates[1]),
    }
    shutil.rmtree(work, ignore_errors=True)

    o, sc = results["overhead"], results["scaling"]
    print(f"{args.slices}-slice 512² CT, 3D path, zero-latency mock, storescp as PACS, 1 worker")
    wall, alone_s, ratio = o["wall_s"], o["sum_s"], o["ratio"]
    print(f"  enqueue → SEG stored {wall:.2f} s / stages alone {alone_s:.2f} s = {ratio:.2f} (≤ 1.3)")
    print("  stages alone: " + ", ".join(f"{k} {v:.2f} s" for k, v in alone.items()))
    print(
        f"{args.series} series × {args.small_slices} slices 256², endpoint {args.latency_ms} ms per request"
    )
    print(
        f"  1 worker {rates[1]:.1f}/min, 2 workers {rates[2]:.1f}/min: {sc['ratio']:.2f} of twice one (≥ 0.8)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
