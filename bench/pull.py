"""Pulling a series from a PACS: the gateway's C-MOVE and C-GET against dcmtk's movescu / getscu, one run.

The PACS is Orthanc (DICOM on loopback, ``TCP_NODELAY=1`` like every dcmtk process here) holding
a generated 300-slice 512² CT. Four ways to bring the series over, interleaved A/B/B/A:

- ours, C-MOVE: :func:`workers.pull.pull` (what the ``mipgw.pull`` task runs) asks Orthanc to move
  the series to the gateway's listener, ``mip-gateway scp`` in its own process, which stores each
  instance durably (fsync) and recognises it as a pull's by its Move Originator;
- peer, C-MOVE: dcmtk ``movescu`` asks Orthanc to move it to dcmtk ``storescp +B`` (no fsync);
- ours, C-GET: :func:`workers.pull.pull` with the instances on the query association (pynetdicom
  receiving, our spool writing with fsync);
- peer, C-GET: dcmtk ``getscu -od`` (no fsync).

Wall time is from the request to the final response (every instance stored). Reports MB/s and the
ratio ours / peer for each. The sender is Orthanc in all four, so the ratios compare the receiving
side; Orthanc's own pace bounds all of them.

    python bench/pull.py [--slices 300] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import empty_folder, series_parser, stop
from bench.ctgen import ct_series
from tests.helpers import system_tool
from tests.peers import Orthanc, StoreSCP
from workers.pull import pull
from workers.storage import DataDir

ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk 3.6.7 leaves Nagle on otherwise
OUR_AE = "MIPGW"


class _Orthanc(Orthanc):
    def _env(self) -> dict[str, str]:
        return {**super()._env(), "TCP_NODELAY": "1"}


def _scp(work: Path, log: object) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        **os.environ,
        "MIPGW_DATA_DIR": str(work / "gateway"),
        "MIPGW_AE_TITLE": OUR_AE,
        "MIPGW_DATABASE_URL": f"sqlite+pysqlite:///{work / 'jobs.sqlite3'}",
        "MIPGW_LISTENER__SPOOL_RESERVE_BYTES": "0",
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mip-gateway")), "scp", "--port", "0", "--bind", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,  # type: ignore[arg-type]
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if "listening on" not in line:
        sys.exit(f"mip-gateway scp did not start: {line!r}; see {work / 'scp.log'}")
    return process, int(line.rsplit(":", 1)[1])


def _dcmtk(*command: str) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}): {done.stderr[-800:]}")


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = series_parser(__doc__, repeats=3)
    args = parser.parse_args()
    movescu, getscu = system_tool("movescu"), system_tool("getscu")
    if movescu is None or getscu is None or system_tool("Orthanc") is None:
        sys.exit("needs dcmtk and Orthanc (apt-get install dcmtk orthanc)")

    data = ct_series(args.slices, args.size)
    files = sorted(data.glob("*.dcm"))
    total_bytes = sum(f.stat().st_size for f in files)
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    log = (work / "scp.log").open("wb")
    ours, our_port = _scp(work, log)
    try:
        with (
            StoreSCP(work / "storescp", ae_title="STORESCP") as storescp,
            _Orthanc(work / "orthanc", {"mipgw": (OUR_AE, our_port), "storescp": ("STORESCP", 1)}) as pacs,
        ):
            pacs.set_modality("storescp", "STORESCP", storescp.port)
            print(f"uploading {len(files)} files to Orthanc...", file=sys.stderr)
            for path in files:
                pacs.upload(path)
            import pydicom

            first = pydicom.dcmread(files[0], stop_before_pixels=True)
            study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
            node = pacs.dicom_node(timeout_s=60, retrieve_timeout_s=600)
            spool = DataDir(work / "gateway")
            keys = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
                    "-k", f"SeriesInstanceUID={series}"]  # fmt: skip
            where = ["127.0.0.1", str(pacs.dicom_port)]
            get_out = work / "getscu"

            def ours_move() -> None:
                pulled = pull("pacs", node.model_copy(update={"retrieve": "c-move"}), study, series, spool,
                              calling_ae=OUR_AE, move_destination=OUR_AE)  # fmt: skip
                assert pulled.series == {series: len(files)}, pulled

            def ours_get() -> None:
                pulled = pull("pacs", node, study, series, DataDir(work / "cget"), calling_ae=OUR_AE)
                assert pulled.series == {series: len(files)}, pulled

            runs: dict[str, tuple[Callable[[], object], Path]] = {
                "ours C-MOVE (mip-gateway scp)": (ours_move, work / "gateway" / "incoming"),
                "movescu -> storescp +B": (
                    lambda: _dcmtk(
                        movescu, "-aet", OUR_AE, "-aec", pacs.aet, "-aem", "STORESCP", "-S", *keys, *where
                    ),
                    storescp.output_dir,
                ),
                "ours C-GET (pynetdicom)": (ours_get, work / "cget"),
                "getscu -od": (
                    lambda: _dcmtk(
                        getscu, "-aet", OUR_AE, "-aec", pacs.aet, "-S", "-od", str(get_out), *keys, *where
                    ),
                    get_out,
                ),
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            for run, output in runs.values():  # warm-up
                empty_folder(output)
                run()
            for trial in range(args.repeats):
                order = list(runs) if trial % 2 == 0 else list(reversed(runs))
                for name in order:
                    run, output = runs[name]
                    empty_folder(output)
                    os.sync()
                    time.sleep(0.2)
                    times[name].append(_timed(run))
    finally:
        stop(ours)
        log.close()

    mb = total_bytes / 1e6
    medians = {name: statistics.median(values) for name, values in times.items()}
    rate = {name: mb / seconds for name, seconds in medians.items()}
    names = list(runs)
    ratio = {"c-move": rate[names[0]] / rate[names[1]], "c-get": rate[names[2]] / rate[names[3]]}
    print(f"series: {len(files)} files, {mb:.1f} MB, from Orthanc; {args.repeats} interleaved trials")
    print(f"{'receiver':32} {'median s':>9} {'MB/s':>8} {'ours/peer':>10}")
    for n, name in enumerate(names):
        share = f"{ratio['c-move' if n < 2 else 'c-get']:.2f}" if n % 2 == 0 else ""
        print(f"{name:32} {medians[name]:>9.3f} {rate[name]:>8.1f} {share:>10}")
    print("ours fsyncs every instance (file and folder) before answering; storescp +B and getscu do not")
    print(
        json.dumps(
            {
                "bench": "pull",
                "files": len(files),
                "bytes": total_bytes,
                "medians_s": medians,
                "mb_per_s": {name: round(value, 1) for name, value in rate.items()},
                "ratio_c_move": round(ratio["c-move"], 3),
                "ratio_c_get": round(ratio["c-get"], 3),
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
