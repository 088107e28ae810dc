"""C-STORE receive throughput: ``mip-gateway scp`` against dcmtk ``storescp +B -pdu 131072``, one run.

Both receive the same generated 300-slice 512² CT from dcmtk ``storescu`` on loopback
(``TCP_NODELAY=1`` for every dcmtk process; uncompressed, as storescu proposes by default), once
over 1 association and once split across 4 concurrent storescu processes (4 associations).
Trials are interleaved A/B/B/A so machine noise hits both alike; each trial writes into an empty
folder. Reports MB/s (file bytes / storescu wall time, all processes finished) and the ratio
ours / storescp (targets ≥ 0.25 for 1 association, ≥ 0.4 for 4).

Not the same work, said plainly: our listener fsyncs every instance before answering success (and
parses its header, checks its UIDs, writes a Part 10 file, tells the intake); storescp ``+B`` writes
the received bytes without fsync. storescp also takes one association at a time (no ``--fork``),
so its 4-association number is 4 transfers back to back.

The listener runs as ``mip-gateway scp`` in its own process, with a temporary data directory, job
store and the embedded SQLite broker (no worker: each completed series is just queued).

    python bench/receive.py [--slices 300] [--size 512] [--repeats 5] [--data DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import empty_folder, free_port, series_parser, stop
from bench.ctgen import ct_series
from tests.helpers import system_tool

ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk 3.6.7 leaves Nagle on otherwise (29x slower)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"receiver exited early ({process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def _send(storescu: str, port: int, files: list[Path], associations: int) -> float:
    """Wall time of ``associations`` storescu processes sending ``files`` between them."""
    shares = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [storescu, "-aet", "BENCH", "-aec", "MIPGW", "127.0.0.1", str(port), *map(str, share)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            sys.exit(f"storescu failed ({sender.returncode}): {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = series_parser(__doc__, repeats=5)
    parser.add_argument("--data", type=Path, help="an existing series folder instead of the generated CT")
    args = parser.parse_args()

    storescu, storescp = system_tool("storescu"), system_tool("storescp")
    if storescu is None or storescp is None:
        sys.exit("dcmtk is not installed (apt-get install dcmtk)")
    data = args.data or ct_series(args.slices, args.size)
    files = sorted(data.glob("*.dcm"))
    total_bytes = sum(f.stat().st_size for f in files)
    work = Path(tempfile.mkdtemp(prefix="bench-receive-"))
    ref_out, ours_data = work / "storescp", work / "gateway"
    ref_out.mkdir()
    ref_port, our_port = free_port(), 0
    log = (work / "scp.log").open("wb")
    reference = subprocess.Popen(
        [storescp, "+B", "-pdu", "131072", "-od", str(ref_out), str(ref_port)],
        env=ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ours_env = {
        **os.environ,
        "MIPGW_DATA_DIR": str(ours_data),
        "MIPGW_DATABASE_URL": f"sqlite+pysqlite:///{work / 'jobs.sqlite3'}",
        "MIPGW_LISTENER__SPOOL_RESERVE_BYTES": "0",
    }
    ours = subprocess.Popen(
        [str(Path(sys.executable).with_name("mip-gateway")), "scp", "--port", "0", "--bind", "127.0.0.1"],
        env=ours_env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert ours.stdout is not None
        line = ours.stdout.readline().decode()
        if "listening on" not in line:
            sys.exit(f"mip-gateway scp did not start: {line!r}; see {work / 'scp.log'}")
        our_port = int(line.rsplit(":", 1)[1])
        _wait_listening(ref_port, reference)
        _wait_listening(our_port, ours)
        runs: dict[str, Callable[[int], float]] = {
            "storescp": lambda n: _send(storescu, ref_port, files, n),
            "mip-gateway scp": lambda n: _send(storescu, our_port, files, n),
        }
        outputs = {"storescp": ref_out, "mip-gateway scp": ours_data / "incoming"}
        times: dict[tuple[str, int], list[float]] = {(name, n): [] for name in runs for n in (1, 4)}
        for name, n in times:  # warm-up: page cache, first association, imports
            runs[name](n)
        for trial in range(args.repeats):
            order = list(runs) if trial % 2 == 0 else list(reversed(runs))
            for n in (1, 4):
                for name in order:
                    empty_folder(outputs[name])
                    os.sync()
                    time.sleep(0.2)
                    times[(name, n)].append(runs[name](n))
    finally:
        stop(ours, reference)
        log.close()

    mb = total_bytes / 1e6
    medians = {key: statistics.median(values) for key, values in times.items()}
    rate = {key: mb / seconds for key, seconds in medians.items()}
    ratio = {n: rate[("mip-gateway scp", n)] / rate[("storescp", n)] for n in (1, 4)}
    print(f"series: {data} ({len(files)} files, {mb:.1f} MB), {args.repeats} interleaved trials")
    print(f"{'receiver':34} {'associations':>12} {'median s':>9} {'MB/s':>8} {'ours/storescp':>14}")
    for n, target in ((1, 0.25), (4, 0.4)):
        for name in runs:
            share = f"{ratio[n]:.2f} (≥ {target})" if name != "storescp" else ""
            print(f"{name:34} {n:>12} {medians[(name, n)]:>9.3f} {rate[(name, n)]:>8.1f} {share:>14}")
    print("ours fsyncs every instance before success; storescp +B does not fsync and takes one association")
    print("at a time (its 4-association figure is 4 transfers back to back).")
    print(
        json.dumps(
            {
                "bench": "receive",
                "files": len(files),
                "bytes": total_bytes,
                "medians_s": {f"{name}/{n}": value for (name, n), value in medians.items()},
                "mb_per_s": {f"{name}/{n}": round(value, 1) for (name, n), value in rate.items()},
                "ratio_single": round(ratio[1], 3),
                "ratio_aggregate_4": round(ratio[4], 3),
                "targets": {"single": 0.25, "aggregate_4": 0.4},
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
