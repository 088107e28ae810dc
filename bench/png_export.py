"""Slices → 1024² RGB PNGs for MedImageParse: ours against OpenCV defaults and the reference, in one run.

Builds a synthetic 512² CT-like series in memory (int16 HU: air, body ellipse, fat, muscle, liver,
kidneys, aorta, spine, bowel gas, table, correlated noise), windows it once (abdomen [-150, 250], then
min-max to 0..255 as the reference does), and times per slice, interleaved so machine noise hits all
alike (the order alternates slice by slice):

* reference — ``skimage.transform.resize(order=3, mode='constant', preserve_range=True,
  anti_aliasing=True)``, ``astype(uint8)``, Pillow PNG (default settings); on a subset, it is slow;
* OpenCV defaults — ``cv2.resize(INTER_CUBIC)``, clip, ``cv2.cvtColor``, ``cv2.imencode('.png')`` with
  no parameters (an explicit PNG level switches OpenCV's strategy and doubles its time);
* ours — ``dicom_io.png2d.to_model_image`` + ``encode_png``.

Also times the two encoders alone on the same pixels (our model image), reports medians over repeats,
bytes and their ratios (targets: time ≤ 1.0×, bytes ≤ 0.6× OpenCV), upload time at the endpoint's
5 MB/s, and the mean absolute difference (MAD) from the reference. A second table measures fidelity on
other geometries (upsampling, downsampling, odd sizes, colour). Ends with one JSON line.

    python bench/png_export.py [--slices 300] [--repeats 3] [--reference-slices 10] [--no-fidelity]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from skimage import transform as sk_transform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicom_io.png2d import (
    LetterboxTransform,
    PadPolicy,
    encode_png,
    letterbox_transform,
    to_model_image,
)

UPLOAD_BYTES_PER_S = 5e6  # Azure ML managed endpoint default bandwidth cap
ABDOMEN = (-150.0, 250.0)

Grey = npt.NDArray[np.float32]
Rgb = npt.NDArray[np.uint8]
T = TypeVar("T")


# --- data --------------------------------------------------------------------------------------------


def ct_slice(z: int, slices: int, size: int, rng: np.random.Generator) -> npt.NDArray[np.int16]:
    """One abdominal-looking slice in HU; organs move and change size along the series."""
    t = z / max(slices - 1, 1)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    hu = np.full((size, size), -1000.0, np.float32)

    def ellipse(cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> npt.NDArray[np.bool_]:
        ca, sa = np.cos(angle), np.sin(angle)
        u = ((x - cx) * ca + (y - cy) * sa) / rx
        v = (-(x - cx) * sa + (y - cy) * ca) / ry
        return np.asarray(u * u + v * v <= 1.0)

    hu[ellipse(c + 10, c, size * 0.34, size * 0.44)] = -100.0  # subcutaneous fat
    hu[ellipse(c + 10, c, size * 0.30, size * 0.40)] = 40.0  # muscle wall
    hu[ellipse(c + 12, c, size * 0.27, size * 0.37)] = -90.0  # visceral fat
    liver = 0.18 * (1.2 - t)
    if liver > 0.02:
        hu[ellipse(c - 10, c - 0.15 * size, size * liver, size * liver * 1.2, 0.3)] = 60.0
    hu[ellipse(c - 20, c + 0.22 * size, size * 0.07, size * 0.05, -0.5)] = 50.0  # spleen
    if 0.2 < t < 0.8:
        for side in (-1, 1):
            hu[ellipse(c + 0.1 * size, c + side * 0.14 * size, size * 0.06, size * 0.045, side * 0.4)] = 30.0
            hu[ellipse(c + 0.1 * size, c + side * 0.14 * size, size * 0.025, size * 0.02)] = 150.0
    hu[ellipse(c + 0.03 * size, c - 0.03 * size, size * 0.025, size * 0.025)] = 200.0  # aorta, contrast
    hu[ellipse(c + 0.17 * size, c, size * 0.05, size * 0.05)] = 700.0  # vertebral body
    hu[ellipse(c + 0.17 * size, c, size * 0.035, size * 0.035)] = 250.0
    for _ in range(6):  # bowel loops with gas
        by, bx = c + rng.uniform(-0.05, 0.12) * size, c + rng.uniform(-0.2, 0.2) * size
        hu[ellipse(by, bx, size * 0.03, size * 0.04)] = 20.0
        hu[ellipse(by - 3, bx, size * 0.012, size * 0.02)] = -900.0
    table = int(c + 0.34 * size + 20)
    hu[table : table + 8, 40 : size - 40] = 300.0
    hu = cv2.GaussianBlur(hu, (0, 0), 0.8)  # partial volume at edges
    noise = cv2.GaussianBlur(rng.normal(0, 18.0, hu.shape).astype(np.float32), (0, 0), 0.7) * 1.8
    hu = np.where(hu > -950, hu + noise, hu + noise * 0.3)  # reconstruction noise, weaker in air
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def window(hu: npt.NDArray[np.generic], lower: float = ABDOMEN[0], upper: float = ABDOMEN[1]) -> Grey:
    """The reference's CT step: clip to the window, then min-max of the clipped slice to 0..255."""
    clipped = np.clip(hu.astype(np.float64), lower, upper)
    low, high = clipped.min(), clipped.max()
    scaled = (clipped - low) / (high - low) * 255.0 if high > low else np.zeros_like(clipped)
    return scaled.astype(np.float32)


def radiograph(rows: int, columns: int, seed: int = 1) -> Grey:
    """CR-like: bright content up to the border, lungs, ribs, fine noise; 0.5/99.5 % then min-max."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    img = 60 + 40 * y / rows
    for side in (-1, 1):
        lung = ((x - columns / 2 - side * columns * 0.2) / (columns * 0.17)) ** 2 + (
            (y - rows * 0.45) / (rows * 0.3)
        ) ** 2 < 1
        img[lung] = 40
    img[np.abs(x - columns / 2) < columns * 0.07] = 180
    for k in range(10):
        img[np.abs(y - rows * (0.2 + 0.06 * k) - 0.1 * np.abs(x - columns / 2)) < 12] += 50
    img = cv2.GaussianBlur(img, (0, 0), 3) + rng.normal(0, 6, img.shape).astype(np.float32)
    lo, hi = np.percentile(img[img > 0], [0.5, 99.5])
    clipped = np.clip(img, lo, hi)
    return ((clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255).astype(np.float32)


def textured_rgb(rows: int, columns: int, seed: int = 2) -> Rgb:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (rows, columns, 3)).astype(np.float32), (0, 0), 1.2)
    return np.rint((base - base.min()) / (base.max() - base.min()) * 235 + 10).astype(np.uint8)


# --- the three pipelines -------------------------------------------------------------------------------


def reference_float(image: npt.NDArray[np.generic], policy: PadPolicy = PadPolicy.V1_REFERENCE) -> np.ndarray:
    """BiomedParse's centred padding + skimage resize, per channel for colour, before the uint8 cast."""
    rows, columns = image.shape[:2]
    d = abs(rows - columns)
    before = d // 2
    after = d - before if policy is PadPolicy.SQUARE else before
    pad = [(0, 0)] * image.ndim
    pad[0 if columns > rows else 1] = (before, after)
    padded = np.pad(image.astype(np.float64), pad)
    if padded.ndim == 3:
        return np.stack([reference_float(padded[:, :, c], policy) for c in range(3)], axis=-1)
    return np.asarray(
        sk_transform.resize(
            padded, (1024, 1024), order=3, mode="constant", preserve_range=True, anti_aliasing=True
        )
    )


def reference_pipeline(grey: Grey) -> tuple[bytes, Rgb]:
    rgb = np.stack([reference_float(grey)] * 3, axis=-1).astype(np.uint8)  # truncates, as the reference does
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue(), rgb


def opencv_resize(grey: Grey) -> Rgb:
    resized = cv2.resize(grey, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return np.asarray(cv2.cvtColor(np.clip(resized, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))


def opencv_pipeline(grey: Grey) -> tuple[bytes, Rgb]:
    bgr = opencv_resize(grey)
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    return png.tobytes(), bgr


def ours_pipeline(grey: Grey) -> tuple[bytes, Rgb]:
    rgb = to_model_image(grey, letterbox_transform(*grey.shape))
    return encode_png(rgb), rgb


def opencv_encode(rgb: Rgb) -> bytes:
    ok, png = cv2.imencode(".png", rgb)
    assert ok
    return png.tobytes()


# --- measurement ---------------------------------------------------------------------------------------


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - start) * 1e3, result


def mad(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def series_benchmark(slices: list[Grey], repeats: int, reference_count: int) -> dict[str, Any]:
    names = ("opencv", "ours", "opencv_encode", "ours_encode")
    per_slice: dict[str, list[list[float]]] = {name: [[] for _ in slices] for name in names}
    sizes: dict[str, list[int]] = {name: [0] * len(slices) for name in names}
    for grey in slices[:3]:  # warm-up: imports, caches, allocator
        opencv_pipeline(grey)
        ours_pipeline(grey)

    pipelines = {"opencv": opencv_pipeline, "ours": ours_pipeline}
    encoders = {"opencv_encode": opencv_encode, "ours_encode": encode_png}
    for repeat in range(repeats):
        for i, grey in enumerate(slices):
            flip = (i + repeat) % 2 == 1  # alternate who goes first
            ours_rgb: Rgb | None = None
            for name in sorted(pipelines, reverse=flip):
                ms, (png, rgb) = timed(pipelines[name], grey)
                per_slice[name][i].append(ms)
                sizes[name][i] = len(png)
                if name == "ours":
                    ours_rgb = rgb
            for name in sorted(encoders, reverse=flip):  # both encoders on the very same pixels
                ms, png = timed(encoders[name], ours_rgb)
                per_slice[name][i].append(ms)
                sizes[name][i] = len(png)

    step = max(1, len(slices) // max(reference_count, 1))
    reference_ms, mad_ours, mad_ours_rounded, mad_opencv, reference_bytes = [], [], [], [], []
    for grey in slices[::step][:reference_count]:
        ms, (png, ref_rgb) = timed(reference_pipeline, grey)
        reference_ms.append(ms)
        reference_bytes.append(len(png))
        ref_float = reference_float(grey)
        ours_rgb = ours_pipeline(grey)[1]
        mad_ours.append(mad(ours_rgb[:, :, 0], ref_rgb[:, :, 0]))
        mad_ours_rounded.append(mad(ours_rgb[:, :, 0], np.clip(np.rint(ref_float), 0, 255)))
        mad_opencv.append(mad(opencv_pipeline(grey)[1][:, :, 0], ref_rgb[:, :, 0]))

    def summary(name: str) -> dict[str, float]:
        medians = [statistics.median(times) for times in per_slice[name]]
        return {
            "ms_median": statistics.median(medians),
            "ms_mean": statistics.fmean(medians),
            "bytes_total": float(sum(sizes[name])),
        }

    result: dict[str, Any] = {name: summary(name) for name in names}
    result["reference"] = {
        "slices": len(reference_ms),
        "ms_median": statistics.median(reference_ms),
        "bytes_mean": statistics.fmean(reference_bytes),
    }
    result["mad_vs_reference"] = {
        "ours": statistics.fmean(mad_ours),
        "ours_vs_reference_rounded": statistics.fmean(mad_ours_rounded),
        "opencv": statistics.fmean(mad_opencv),
    }
    return result


def fidelity_benchmark() -> list[dict[str, Any]]:
    """MAD from the reference (as written: truncating) for ours and for plain OpenCV INTER_CUBIC."""
    ct = window(ct_slice(150, 300, 512, np.random.default_rng(0)))
    cases: list[tuple[str, npt.NDArray[np.generic], PadPolicy]] = [
        ("CT 512² (2× up)", ct, PadPolicy.SQUARE),
        ("MR-like 256² (4× up)", cv2.resize(ct, (256, 256), interpolation=cv2.INTER_AREA), PadPolicy.SQUARE),
        ("CT 383×511 odd, v1 pad", ct[60:443, :511], PadPolicy.V1_REFERENCE),
        ("CT 383×511 odd, square pad", ct[60:443, :511], PadPolicy.SQUARE),
        ("CR 2000×1800 (down)", radiograph(2000, 1800), PadPolicy.SQUARE),
        ("textured RGB 512²", textured_rgb(512, 512), PadPolicy.SQUARE),
    ]
    rows = []
    for label, image, policy in cases:
        transform = letterbox_transform(image.shape[0], image.shape[1], policy=policy)
        ref = reference_float(image, policy)
        ref_truncated = ref.astype(np.uint8)
        ours_ms = min(timed(to_model_image, image, transform)[0] for _ in range(5))
        ours = to_model_image(image, transform)
        ours = ours if image.ndim == 3 else ours[:, :, 0]
        # The best plain-OpenCV equivalent: pad, Gaussian anti-aliasing when downsampling, INTER_CUBIC.
        padded = np.pad(image.astype(np.float32), _pads(transform, image.ndim))
        sigma = [max(0.0, (n / 1024 - 1) / 2) for n in padded.shape[:2]]
        if max(sigma) > 0:
            padded = cv2.GaussianBlur(
                padded,
                (0, 0),
                sigmaX=sigma[1] or 1e-3,
                sigmaY=sigma[0] or 1e-3,
                borderType=cv2.BORDER_CONSTANT,
            )
        opencv_ms = min(
            timed(cv2.resize, padded, (1024, 1024), None, 0, 0, cv2.INTER_CUBIC)[0] for _ in range(5)
        )
        opencv = np.clip(np.rint(cv2.resize(padded, (1024, 1024), interpolation=cv2.INTER_CUBIC)), 0, 255)
        rows.append(
            {
                "case": label,
                "mad_ours": mad(ours, ref_truncated),
                "mad_ours_vs_rounded": mad(ours, np.clip(np.rint(ref), 0, 255)),
                "max_ours_vs_rounded": float(np.abs(ours - np.clip(np.rint(ref), 0, 255)).max()),
                "mad_opencv_cubic": mad(opencv, ref_truncated),
                "max_opencv_cubic_vs_rounded": float(np.abs(opencv - np.clip(np.rint(ref), 0, 255)).max()),
                "ms_ours_resize": ours_ms,
                "ms_opencv_resize": opencv_ms,
            }
        )
    return rows


def _pads(transform: LetterboxTransform, ndim: int) -> list[tuple[int, int]]:
    pads = [(transform.pad_top, transform.pad_bottom), (transform.pad_left, transform.pad_right)]
    return pads + [(0, 0)] * (ndim - 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-slices", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fidelity", action="store_true", help="skip the other-geometries table")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    print(f"building {args.slices} slices of {args.size}² ...", file=sys.stderr)
    slices = [window(ct_slice(z, args.slices, args.size, rng)) for z in range(args.slices)]
    print("timing ...", file=sys.stderr)
    series = series_benchmark(slices, args.repeats, min(args.reference_slices, args.slices))

    ocv, ours = series["opencv"], series["ours"]
    ocv_enc, ours_enc = series["opencv_encode"], series["ours_encode"]
    ref, fidelity = series["reference"], series["mad_vs_reference"]
    n = len(slices)
    print(
        f"\n{n} slices of {args.size}² CT (abdomen window), {args.repeats} repeats, interleaved; "
        "medians per slice"
    )
    print(f"{'pipeline':44s} {'ms/slice':>9s} {'MB total':>9s} {'upload @5MB/s':>14s}")
    print(
        f"{'reference: skimage + Pillow (' + str(ref['slices']) + ' slices)':44s} {ref['ms_median']:9.1f} "
        f"{ref['bytes_mean'] * n / 1e6:9.1f} {ref['bytes_mean'] * n / UPLOAD_BYTES_PER_S:13.1f}s"
    )
    for label, row in (
        ("OpenCV defaults: resize + imencode", ocv),
        ("ours: to_model_image + encode_png", ours),
        ("  encoder only: cv2.imencode (defaults)", ocv_enc),
        ("  encoder only: encode_png", ours_enc),
    ):
        print(
            f"{label:44s} {row['ms_median']:9.2f} {row['bytes_total'] / 1e6:9.1f} "
            f"{row['bytes_total'] / UPLOAD_BYTES_PER_S:13.1f}s"
        )
    ratios = {
        "time_ours_over_opencv": ours["ms_median"] / ocv["ms_median"],
        "bytes_ours_over_opencv": ours["bytes_total"] / ocv["bytes_total"],
        "encode_time_ours_over_opencv": ours_enc["ms_median"] / ocv_enc["ms_median"],
        "encode_bytes_ours_over_opencv": ours_enc["bytes_total"] / ocv_enc["bytes_total"],
    }
    print(
        f"\nours / OpenCV: time {ratios['time_ours_over_opencv']:.2f} (target ≤ 1.0), "
        f"bytes {ratios['bytes_ours_over_opencv']:.3f} (target ≤ 0.6); "
        f"encoder alone: time {ratios['encode_time_ours_over_opencv']:.2f}, "
        f"bytes {ratios['encode_bytes_ours_over_opencv']:.3f}"
    )
    print(
        f"MAD from the reference (as written, truncating): ours {fidelity['ours']:.3f} (target ≤ 1), "
        f"OpenCV {fidelity['opencv']:.3f}; ours vs reference clipped+rounded: "
        f"{fidelity['ours_vs_reference_rounded']:.5f}"
    )

    fidelity_rows: list[dict[str, Any]] = []
    if not args.no_fidelity:
        fidelity_rows = fidelity_benchmark()
        print(
            f"\n{'fidelity case':30s} {'MAD ours':>9s} {'vs rounded':>11s} {'max':>4s} "
            f"{'MAD cv2 cubic':>14s} {'max':>4s} {'ms ours':>8s} {'ms cv2':>7s}"
        )
        for row in fidelity_rows:
            print(
                f"{row['case']:30s} {row['mad_ours']:9.3f} {row['mad_ours_vs_rounded']:11.5f} "
                f"{row['max_ours_vs_rounded']:4.0f} {row['mad_opencv_cubic']:14.3f} "
                f"{row['max_opencv_cubic_vs_rounded']:4.0f} {row['ms_ours_resize']:8.2f} "
                f"{row['ms_opencv_resize']:7.2f}"
            )

    print(
        json.dumps(
            {
                "bench": "png_export",
                "slices": n,
                "size": args.size,
                "repeats": args.repeats,
                **series,
                "ratios": ratios,
                "fidelity": fidelity_rows,
                "env": {
                    "python": platform.python_version(),
                    "opencv": cv2.__version__,
                    "numpy": np.__version__,
                    "cpus": os.cpu_count(),
                    "cv2_threads": cv2.getNumThreads(),
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
