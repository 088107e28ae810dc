"""STOW-RS ingest: ``mip-gateway api`` against Orthanc (DICOMweb plugin), both on loopback; MB/s and peak RSS.

One request carries a 300-slice 512² CT (``bench/ctgen.py``), streamed from disk by httpx; then the
same files sent two and three times in one request, each copy with new study/series/SOP UIDs. The
byte-identical multipart body goes to our ``/dicomweb/studies`` and to Orthanc's
``/dicom-web/studies``. Trials alternate A/B then B/A so machine noise hits both alike; every
trial starts a fresh server process on an empty store (temp data directory; for ours a SQLite job
store and broker), sends a 10-instance warm-up request, reads peak RSS (VmHWM from /proc), sends
the big request and reads VmHWM again: the growth is what the request cost in memory. Reported per
size: best MB/s of each (file bytes / request wall time), the ratio ours / Orthanc, and both RSS.

Not the same work, said plainly: we parse each part's header, fsync every instance as a Part 10
file before answering, and record it for the intake; Orthanc (1.10, DICOMweb 1.7, its defaults)
parses every instance fully, indexes it into its SQLite database, stores an MD5 and writes the
file with ``SyncStorageArea`` left at its default ``true`` (an fsync per file). Orthanc's HTTP
server reads the whole request body into memory before the plugin sees it, so its RSS is expected
to follow the request's size; ours should not.

    python bench/stow.py [--slices 300] [--copies 1,2,3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import pydicom
from pydicom.uid import generate_uid

from bench.common import free_port
from bench.ctgen import ct_series

CLI = str(Path(sys.executable).with_name("mip-gateway"))
KEY = "bench-key"
BOUNDARY = "mipgw-bench-boundary"
CHUNK = 1024 * 1024
ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def relabelled_copy(source: Path, target: Path) -> list[Path]:
    """The series again under new study/series/SOP UIDs (a different series to the gateway)."""
    target.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out = target / path.name
        ds.save_as(out, enforce_file_format=True)
        paths.append(out)
    return paths


def _part_head() -> bytes:
    return f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()


def body_length(files: list[Path]) -> int:
    closing = len(f"--{BOUNDARY}--\r\n")
    return sum(len(_part_head()) + f.stat().st_size + 2 for f in files) + closing


def body(files: list[Path]) -> Iterator[bytes]:
    """The multipart body, read from disk a chunk at a time."""
    for path in files:
        yield _part_head()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the server we started (its own process group), SIGKILL it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start_api(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "MIPGW_DATA_DIR": str(tmp / "data"),
        "MIPGW_DATABASE_URL": f"sqlite+pysqlite:///{tmp / 'jobs.sqlite3'}",
        "MIPGW_API__KEYS": json.dumps([KEY]),
        "MIPGW_LISTENER__SPOOL_RESERVE_BYTES": "0",
    }
    env.pop("MIPGW_BROKER_URL", None)
    log = (tmp / "api.log").open("w")
    proc = subprocess.Popen(
        [CLI, "api", "--bind", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        stop(proc)
        raise RuntimeError(f"the API did not start: {(tmp / 'api.log').read_text()[-2000:]}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def _orthanc_log(logs: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*")) if not p.is_symlink())


def start_orthanc(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Orthanc on a free loopback HTTP port, its storage and SQLite index under ``tmp``, DICOM off.

    The port is picked free, then bound by Orthanc: if someone takes it in between, Orthanc exits
    (or another server answers without our unique ``Name``) and we try again on a new port.
    """
    if not ORTHANC.exists() or not DICOMWEB_PLUGIN.exists():
        sys.exit(f"Orthanc peer missing: need {ORTHANC} and {DICOMWEB_PLUGIN} (orthanc, orthanc-dicomweb)")
    logs = tmp / "orthanc-logs"
    logs.mkdir(exist_ok=True)
    for _ in range(3):
        port, name = free_port(), f"bench-{uuid.uuid4().hex[:12]}"
        # Everything not named here stays at Orthanc's defaults (SyncStorageArea true, MD5 on,
        # no compression, no ingest transcoding, 50 HTTP threads).
        config = {
            "Name": name,
            "StorageDirectory": str(tmp / "storage"),
            "IndexDirectory": str(tmp / "storage"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "HttpServerEnabled": True,
            "HttpPort": port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": False,
            "SaveJobs": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config_file = tmp / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        proc = subprocess.Popen(
            [str(ORTHANC), f"--logdir={logs}", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"{url}/system", timeout=1)
                if answer.status_code == 200 and answer.json().get("Name") == name:
                    return proc, url
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        stop(proc)
    raise RuntimeError(f"Orthanc did not start: {_orthanc_log(logs)[-2000:]}")


def stow(url: str, files: list[Path], headers: dict[str, str] | None = None) -> tuple[float, int]:
    """POST the multipart body to ``url`` (a STOW-RS studies endpoint); seconds until the answer."""
    headers = {
        **(headers or {}),
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Content-Length": str(body_length(files)),
    }
    start = time.perf_counter()
    response = httpx.post(url, content=body(files), headers=headers, timeout=600)
    seconds = time.perf_counter() - start
    response.raise_for_status()
    stored = len(response.json().get("00081199", {}).get("Value", []))
    if stored != len(files):
        raise RuntimeError(f"{stored} of {len(files)} stored: {response.text[:500]}")
    return seconds, response.status_code


def _measure(
    pid: int, send: Callable[[list[Path]], tuple[float, int]], files: list[Path], warmup: list[Path]
) -> dict[str, Any]:
    send(warmup)
    before = vm(pid, "VmHWM")
    seconds, status = send(files)
    peak = vm(pid, "VmHWM")
    size = sum(f.stat().st_size for f in files)
    return {
        "instances": len(files),
        "mb": size / 1e6,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
        "status": status,
        "rss_after_warmup_mb": before / 2**20,
        "peak_rss_mb": peak / 2**20,
        "rss_growth_mb": (peak - before) / 2**20,
    }


def run_ours(files: list[Path], warmup: list[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mipgw-bench-stow-") as tmp:
        proc, url = start_api(Path(tmp))
        try:
            headers = {"Authorization": f"Bearer {KEY}"}
            return _measure(proc.pid, lambda f: stow(f"{url}/dicomweb/studies", f, headers), files, warmup)
        finally:
            stop(proc)


def run_orthanc(files: list[Path], warmup: list[Path]) -> dict[str, Any]:
    # A fresh process on a fresh storage directory: an empty store without a timed DELETE
    # between trials, and the same cold start and warm-up as ours.
    with tempfile.TemporaryDirectory(prefix="mipgw-bench-stow-orthanc-") as tmp:
        proc, url = start_orthanc(Path(tmp))
        try:
            return _measure(proc.pid, lambda f: stow(f"{url}/dicom-web/studies", f), files, warmup)
        finally:
            stop(proc)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
    best["mb_per_s_all"] = [round(r["mb_per_s"], 2) for r in runs]
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--copies", default="1,2,3", help="request sizes, in copies of the series")
    parser.add_argument("--repeat", type=int, default=2, help="runs per size (the best is reported)")
    args = parser.parse_args()
    source = ct_series(args.slices, 512)
    copies = [int(c) for c in args.copies.split(",")]
    with tempfile.TemporaryDirectory(prefix="mipgw-bench-ct-") as tmp:
        series = [sorted(source.glob("*.dcm"))]
        for n in range(1, max(copies)):
            series.append(relabelled_copy(source, Path(tmp) / f"copy{n}"))
        warmup = relabelled_copy(source, Path(tmp) / "warmup")[:10]
        results = []
        for count in copies:
            files = [f for s in series[:count] for f in s]
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "orthanc": []}
            runners = {"ours": run_ours, "orthanc": run_orthanc}
            for trial in range(args.repeat):
                # A/B then B/A: whatever drifts on the machine falls on both sides alike.
                for side in ("ours", "orthanc") if trial % 2 == 0 else ("orthanc", "ours"):
                    runs[side].append(runners[side](files, warmup))
            ours, orthanc = _best(runs["ours"]), _best(runs["orthanc"])
            results.append(
                {
                    **ours,
                    "copies": count,
                    "orthanc": orthanc,
                    "ratio_mb_per_s": ours["mb_per_s"] / orthanc["mb_per_s"],
                }
            )
    print(
        f"STOW-RS of a {args.slices}-slice 512² CT, one request on loopback: `mip-gateway api` (ours) vs "
        f"Orthanc + DICOMweb plugin; best of {args.repeat} interleaved trials, "
        "each on a fresh process and store"
    )
    header = [
        "request",
        "inst",
        "MB",
        "ours-MB/s",
        "Orth-MB/s",
        "ours/Orth",
        "ours-peak",
        "ours-grow",
        "Orth-peak",
        "Orth-grow",
    ]
    print("".join(f"{h:>11}" for h in header))
    for r in results:
        o = r["orthanc"]
        row = (
            f"{r['copies']}×",
            r["instances"],
            f"{r['mb']:.1f}",
            f"{r['mb_per_s']:.1f}",
            f"{o['mb_per_s']:.1f}",
            f"{r['ratio_mb_per_s']:.2f}",
            f"{r['peak_rss_mb']:.0f} MiB",
            f"{r['rss_growth_mb']:.1f} MiB",
            f"{o['peak_rss_mb']:.0f} MiB",
            f"{o['rss_growth_mb']:.1f} MiB",
        )
        print("".join(f"{value:>11}" for value in row))
    print(
        "Work differs: ours fsyncs each instance as a Part 10 file and records it for the intake; Orthanc "
        "parses each instance fully, indexes it in SQLite, stores an MD5 and fsyncs each file "
        "(SyncStorageArea left at its default, true). Orthanc buffers the whole request body in memory."
    )
    print(json.dumps({"bench": "stow", "peer": "orthanc", "slices": args.slices, "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
