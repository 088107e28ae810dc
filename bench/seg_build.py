"""SEG build benchmark: our ``build_seg`` (warm worker process) against dcmqi ``itkimage2segimage``.

Workload (performance.md): a CT series of 300 slices of 512×512 int16 on disk, three label masks
covering 15 / 10 / 5 % of the slices. A/B runs are interleaved; each side's peak RSS is taken
from ``os.wait4`` of its own process. Ours is timed in a warm worker (imports done, headers and
masks in memory, two warm-up builds), as in a long-lived Celery worker; the worker's cold
whole-process time is reported too. Prints a table and one JSON line.

    .venv/bin/python bench/seg_build.py [--repeats 7] [--slices 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEGMENTS = (("liver", 0.15, "10200004", "Liver"), ("spleen", 0.10, "78961009", "Spleen"),
            ("tumor", 0.05, "108369006", "Neoplasm"))  # fmt: skip
ANATOMY = {"CodeValue": "91723000", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Anatomical Structure"}
ABNORMAL = {
    "CodeValue": "49755003",
    "CodingSchemeDesignator": "SCT",
    "CodeMeaning": "Morphologically Abnormal Structure",
}


def make_masks(slices: int, rows: int, columns: int) -> np.ndarray:
    """Ellipses on 15/10/5 % of the slices, partly overlapping (like liver, spleen, a tumour)."""
    masks = np.zeros((slices, rows, columns, len(SEGMENTS)), dtype=bool)
    yy, xx = np.mgrid[:rows, :columns]
    for s, (_, fraction, _, _) in enumerate(SEGMENTS):
        count = max(1, round(slices * fraction))
        start = slices // 3 + 7 * s
        ellipse = ((yy - rows / 2 - 25 * s) / (rows / 7)) ** 2 + (
            (xx - columns / 2 + 20 * s) / (columns / 9)
        ) ** 2
        masks[start : start + count, :, :, s] = ellipse <= 1
    return masks


def write_nrrd(path: Path, volume: np.ndarray, spacing: tuple[float, float], thickness: float,
               origin: tuple[float, float, float]) -> None:  # fmt: skip
    """A raw LPS NRRD (what dcmqi's ITK reader expects without an RAS flip): x = columns fastest."""
    row_spacing, column_spacing = spacing
    header = (
        "NRRD0004\ntype: unsigned char\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {volume.shape[2]} {volume.shape[1]} {volume.shape[0]}\n"
        f"space directions: ({column_spacing},0,0) (0,{row_spacing},0) (0,0,{thickness})\n"
        "kinds: domain domain domain\nendian: little\nencoding: raw\n"
        f"space origin: ({origin[0]},{origin[1]},{origin[2]})\n\n"
    )
    with path.open("wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(volume, dtype=np.uint8).tobytes())


def prepare(folder: Path, slices: int) -> dict[str, object]:
    from tests.unit.dicom_io.seg_sources import ct_stack, write

    sources = ct_stack(slices, 512, 512, seed=7, spacing=(0.8, 0.7), thickness=2.5)
    write(sources, folder / "dicom")
    masks = make_masks(slices, 512, 512)
    np.save(folder / "masks.npy", masks)
    origin = tuple(float(v) for v in sources[0].ImagePositionPatient)
    images = []
    for s, (name, *_rest) in enumerate(SEGMENTS):
        path = folder / f"{name}.nrrd"
        write_nrrd(path, masks[..., s], (0.8, 0.7), 2.5, origin)  # type: ignore[arg-type]
        images.append(str(path))
    attributes = [
        [{
            "labelID": 1, "SegmentLabel": name, "SegmentDescription": name,
            "SegmentAlgorithmType": "AUTOMATIC", "SegmentAlgorithmName": "MedImageParse",
            "SegmentedPropertyCategoryCodeSequence": ABNORMAL if name == "tumor" else ANATOMY,
            "SegmentedPropertyTypeCodeSequence": {"CodeValue": code, "CodingSchemeDesignator": "SCT",
                                                  "CodeMeaning": meaning},
        }]
        for name, _, code, meaning in SEGMENTS
    ]  # fmt: skip
    metadata = {
        "ContentCreatorName": "mip-gateway^bench", "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1", "SeriesDescription": "MedImageParse AI segmentation",
        "SeriesNumber": "9900", "InstanceNumber": "1", "ContentLabel": "MIPSEG",
        "ContentDescription": "bench", "ClinicalTrialCoordinatingCenterName": "bench",
        "BodyPartExamined": "ABDOMEN", "segmentAttributes": attributes,
    }  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(metadata, indent=1))
    # dcmqi's best case: one label image for all segments (later segments win where masks overlap,
    # so this output is lossy for our overlapping masks; kept as the speed reference).
    labels = np.zeros(masks.shape[:3], dtype=np.uint8)
    for s in range(len(SEGMENTS)):
        labels[masks[..., s]] = s + 1
    write_nrrd(folder / "labels.nrrd", labels, (0.8, 0.7), 2.5, origin)  # type: ignore[arg-type]
    single = [dict(items[0], labelID=s + 1) for s, items in enumerate(attributes)]
    (folder / "meta_labelmap.json").write_text(
        json.dumps({**metadata, "segmentAttributes": [single]}, indent=1)
    )
    return {"images": images, "frames": int(masks.any(axis=(1, 2)).sum())}


def run_measured(cmd: list[str], stdin_text: str | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (kB) of exactly this child process, from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
    )  # fmt: skip
    assert proc.stdin is not None
    if stdin_text:
        proc.stdin.write(stdin_text)
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss


def worker(folder: Path, warmups: int) -> None:
    """Warm process: imports, headers and masks loaded once; one timed build + dcmwrite per request."""
    import resource

    import pydicom

    from dicom_io.seg import AlgorithmInfo, SegmentRequest, SegOptions, build_seg

    paths = sorted((folder / "dicom").glob("*.dcm"))
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    masks = np.load(folder / "masks.npy")
    refs = [(i, 0) for i in range(len(sources))]
    segments = [SegmentRequest(name) for name, *_ in SEGMENTS]
    algorithm = AlgorithmInfo("MedImageParse", "bench", "Microsoft")
    options = SegOptions(
        rule_name="bench", software_version="0.1.0", device_serial_number="bench",
        content_datetime=dt.datetime(2024, 1, 2, 3, 4, 5),
    )  # fmt: skip
    out = folder / "ours.dcm"

    def once() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        result = build_seg(sources, refs, masks, segments, algorithm, options)
        t1 = time.perf_counter()
        assert result.dataset is not None
        pydicom.dcmwrite(out, result.dataset, enforce_file_format=True)
        return t1 - t0, time.perf_counter() - t1, int(result.dataset.NumberOfFrames)

    for _ in range(warmups):
        once()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"ready": True, "rss_before_kb": base_rss}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        build, write, frames = once()
        print(json.dumps({"build": build, "write": write, "frames": frames}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.warmups)
        return
    with tempfile.TemporaryDirectory(prefix="seg-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run(folder, args)


def run(folder: Path, args: argparse.Namespace) -> None:
    info = prepare(folder, args.slices)
    tool = str(Path(sys.executable).parent / "itkimage2segimage")
    dicom = ["--inputDICOMDirectory", str(folder / "dicom")]
    peers = {
        "dcmqi, one NRRD per segment": [
            tool, "--inputImageList", ",".join(info["images"]), *dicom,  # type: ignore[arg-type]
            "--outputDICOM", str(folder / "dcmqi.dcm"), "--inputMetadata", str(folder / "meta.json"),
        ],
        "dcmqi, one label NRRD (lossy here)": [
            tool, "--inputImageList", str(folder / "labels.nrrd"), *dicom,
            "--outputDICOM", str(folder / "dcmqi_labelmap.dcm"),
            "--inputMetadata", str(folder / "meta_labelmap.json"),
        ],
    }  # fmt: skip
    cold_cmd = [sys.executable, __file__, "--worker", str(folder), "--warmups", "0"]
    for cmd in peers.values():
        run_measured(cmd)  # warm the page cache
    worker_cmd = [sys.executable, __file__, "--worker", str(folder), "--warmups", str(args.warmups)]
    warm = subprocess.Popen(worker_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert warm.stdin is not None
    assert warm.stdout is not None
    json.loads(warm.stdout.readline())

    times: dict[str, list[float]] = {
        name: [] for name in [*peers, "ours warm", "ours warm build", "ours cold"]
    }
    rss: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved: each round runs every side once
        for name, cmd in peers.items():
            elapsed, peak = run_measured(cmd)
            times[name].append(elapsed)
            rss[name] = max(rss.get(name, 0), peak)
        warm.stdin.write("run\n")
        warm.stdin.flush()
        sample = json.loads(warm.stdout.readline())
        times["ours warm build"].append(sample["build"])
        times["ours warm"].append(sample["build"] + sample["write"])
        elapsed, peak = run_measured(cold_cmd, "run\n")
        times["ours cold"].append(elapsed)
        rss["ours cold"] = max(rss.get("ours cold", 0), peak)
    warm.stdin.close()
    _, _, usage = os.wait4(warm.pid, 0)
    rss["ours warm"] = usage.ru_maxrss

    def ratio(ours: str, peer: str) -> float:
        return statistics.median(o / p for o, p in zip(times[ours], times[peer], strict=True))

    median = {name: statistics.median(values) for name, values in times.items()}
    per_segment, labelmap = peers
    report = {
        "bench": "seg_build", "slices": args.slices, "segments": len(SEGMENTS), "repeats": args.repeats,
        "frames_with_content": info["frames"], "seg_frames": sample["frames"],
        "median_s": median, "peak_rss_mb": {k: v / 1024 for k, v in rss.items()},
        "ratio_warm_vs_dcmqi_per_segment": ratio("ours warm", per_segment),
        "ratio_warm_vs_dcmqi_labelmap": ratio("ours warm", labelmap),
        "ratio_cold_vs_dcmqi_per_segment": ratio("ours cold", per_segment),
        "ratio_cold_vs_dcmqi_labelmap": ratio("ours cold", labelmap),
        "size_mb": {p.stem: p.stat().st_size / 1e6 for p in sorted(folder.glob("*.dcm"))},
        "masks_mb": args.slices * 512 * 512 * len(SEGMENTS) / 2**20,
    }  # fmt: skip
    print(
        f"SEG build: {args.slices} slices 512x512, {len(SEGMENTS)} segments, "
        f"{args.repeats} interleaved rounds"
    )
    print(f"  {'side':<44} {'median':>9} {'peak RSS':>10}")
    for name in times:
        peak_text = f"{rss[name] / 1024:.0f} MB" if name in rss else ""
        print(f"  {name:<44} {median[name]:>8.3f}s {peak_text:>10}")
    for key in [k for k in report if k.startswith("ratio")]:
        print(f"  {key:<44} {report[key]:>9.2f}")
    print(f"  (ours warm RSS includes the {report['masks_mb']:.0f} MB bool mask array; target ratio <= 1.0)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
