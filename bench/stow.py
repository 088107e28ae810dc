"""STOW-RS ingest into ``mip-gateway api`` (a process of its own, on loopback): MB/s and peak RSS.

One request carries a 300-slice 512² CT (``bench/ctgen.py``), streamed from disk by httpx; then the
same files sent two and three times in one request, each copy with new study/series/SOP UIDs. Each
size runs against a fresh API process (temp data directory, SQLite job store and broker) whose peak
RSS (VmHWM from /proc) is read after a small warm-up request and after the big one: the growth is
what the request cost in memory, and it must not follow the request's size.

    python bench/stow.py [--slices 300] [--copies 1,2,3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import pydicom
from pydicom.uid import generate_uid

from bench.ctgen import ct_series

CLI = str(Path(sys.executable).with_name("mip-gateway"))
KEY = "bench-key"
BOUNDARY = "mipgw-bench-boundary"
CHUNK = 1024 * 1024


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
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"the API did not start: {(tmp / 'api.log').read_text()[-2000:]}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def stow(url: str, files: list[Path]) -> tuple[float, int]:
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Content-Length": str(body_length(files)),
    }
    start = time.perf_counter()
    response = httpx.post(f"{url}/dicomweb/studies", content=body(files), headers=headers, timeout=600)
    seconds = time.perf_counter() - start
    response.raise_for_status()
    stored = len(response.json().get("00081199", {}).get("Value", []))
    if stored != len(files):
        raise RuntimeError(f"{stored} of {len(files)} stored: {response.text[:500]}")
    return seconds, response.status_code


def run(files: list[Path], warmup: list[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mipgw-bench-stow-") as tmp:
        proc, url = start_api(Path(tmp))
        try:
            stow(url, warmup)
            before = vm(proc.pid, "VmHWM")
            seconds, status = stow(url, files)
            peak = vm(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
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
            runs = [run(files, warmup) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["copies"] = count
            best["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
            results.append(best)
    print(f"STOW-RS of a {args.slices}-slice 512² CT into `mip-gateway api` (loopback, one request)")
    header = ("request", "instances", "MB", "s", "MB/s", "RSS warm", "peak", "growth")
    print("".join(f"{h:>10}" for h in header))
    for r in results:
        row = (
            f"{r['copies']}×",
            r["instances"],
            f"{r['mb']:.1f}",
            f"{r['seconds']:.2f}",
            f"{r['mb_per_s']:.1f}",
            f"{r['rss_after_warmup_mb']:.0f} MiB",
            f"{r['peak_rss_mb']:.0f} MiB",
            f"{r['rss_growth_mb']:.1f} MiB",
        )
        print("".join(f"{value:>10}" for value in row))
    print(json.dumps({"bench": "stow", "slices": args.slices, "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
