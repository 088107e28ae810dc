"""Series → .nii.gz: mip-gateway against dcm2niix (``-w 1 -z y -1``), side by side in one run.

Measures whole-process wall time of both commands on the same files, interleaved A/B so machine noise
hits both alike, plus our warm in-process time (a long-lived worker does not pay Python's start-up).
dcm2niix is run as found (internal gzip) and, when ``pigz`` is installed, with pigz too. Reports
medians and the ratio ours / dcm2niix (target ≤ 1.0).

    python bench/nifti_export.py [--slices 300] [--size 512] [--repeats 5] [--data DIR]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ctgen import ct_series


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, help="an existing series folder instead of the generated CT")
    args = parser.parse_args()

    data = args.data or ct_series(args.slices, args.size)
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        sys.exit("dcm2niix is not installed (apt-get install dcm2niix)")
    ours_cli = str(Path(sys.executable).with_name("mip-gateway"))
    work = Path(tempfile.mkdtemp(prefix="bench-nifti-"))
    bare_path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "pigz").exists()
    )
    env_internal = {**os.environ, "PATH": bare_path}
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "dcm2niix (internal gzip)": (
            [dcm2niix, "-w", "1", "-z", "y", "-1", "-b", "n", "-f", "%s", "-o", str(work / "ref"), str(data)],
            env_internal,
        ),
        "mip-gateway convert (whole process)": (
            [ours_cli, "convert", str(data), "--to", "nifti", "--out", str(work / "ours")],
            dict(os.environ),
        ),
    }
    if shutil.which("pigz"):
        variants["dcm2niix (pigz)"] = (variants["dcm2niix (internal gzip)"][0], dict(os.environ))
    (work / "ref").mkdir()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for cmd, env in variants.values():  # warm-up: page cache, first-run costs
        _timed(cmd, env)
    for _ in range(args.repeats):
        for name, (cmd, env) in variants.items():
            times[name].append(_timed(cmd, env))

    # warm, in-process: what a long-lived worker pays
    from dicom_io.nifti3d import export_nifti
    from dicom_io.reading import scan
    from dicom_io.series import assemble

    warm: list[float] = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        (series,) = assemble(scan([data]).instances)
        payload, _ = export_nifti(series)
        warm.append(time.perf_counter() - start)
    warm = warm[1:]

    ref_size = sum(p.stat().st_size for p in (work / "ref").glob("*.nii.gz"))
    ours_size = len(payload)
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians["mip-gateway export_nifti (warm, in-process)"] = statistics.median(warm)
    peer = medians["dcm2niix (internal gzip)"]
    print(f"series: {data} ({args.slices} slices {args.size}²)")
    print(f"{'variant':48s} {'median s':>9s} {'/ dcm2niix':>11s}")
    for name, value in medians.items():
        print(f"{name:48s} {value:9.3f} {value / peer:11.2f}")
    if "dcm2niix (pigz)" in medians:
        pigz = medians["dcm2niix (pigz)"]
        print(
            "ours (whole process) / dcm2niix+pigz: "
            f"{medians['mip-gateway convert (whole process)'] / pigz:.2f}"
        )
    print(f"output bytes: ours {ours_size:,} / dcm2niix {ref_size:,} = {ours_size / ref_size:.3f}")
    print(
        json.dumps(
            {
                "bench": "nifti_export",
                "medians_s": medians,
                "bytes": {"ours": ours_size, "dcm2niix": ref_size},
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
