"""``mip-gateway convert``: series → model inputs on disk, one series' failure never stopping the others."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_io.errors import DicomIOError
from dicom_io.intensity import Normalisation
from dicom_io.reading import scan
from dicom_io.series import Series, SeriesKind, assemble
from dicom_io.windows import ModelKind
from workers.storage import atomic_write_bytes, publish_directory, staging_directory

if TYPE_CHECKING:  # imported when used: the PNG path should not pay for the NIfTI one, and back
    from dicom_io.nifti3d import SliceCompressor

__all__ = ["run_convert"]


def run_convert(args: argparse.Namespace) -> int:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return _convert(args, pool)


def _convert(args: argparse.Namespace, pool: ThreadPoolExecutor) -> int:
    out = Path(args.out)
    slices: SliceCompressor | None = None
    if args.to == "nifti" and args.layout == "xyz" and (args.intensity or "raw") == "raw" and not args.window:
        from dicom_io.nifti3d import SliceCompressor

        # compress each slice while the rest of the folder is still being parsed
        slices = SliceCompressor(pool)
    result = scan(args.paths, on_instance=slices.submit if slices else None)
    failures = 0
    converted = 0
    for series in assemble(result.instances):
        if series.kind is SeriesKind.NON_IMAGE:
            reason = series.problems[0].message
            print(f"skipped series {series.series_instance_uid}: {reason}", file=sys.stderr)
            continue
        try:
            written = _to_png(series, out, args) if args.to == "png" else _to_nifti(series, out, args, slices)
        except (DicomIOError, ValueError) as exc:
            failures += 1
            named = isinstance(exc, DicomIOError) and exc.series_instance_uid is not None
            reason = str(exc) if named else f"series {series.series_instance_uid}: {exc}"
            print(f"failed {reason}", file=sys.stderr)
            continue
        converted += 1
        print(f"{series.series_instance_uid}: {written}")
    if not converted and not failures:
        print("nothing to convert: no image series found", file=sys.stderr)
        return 1
    return 1 if failures else 0


def _to_png(series: Series, out: Path, args: argparse.Namespace) -> str:
    from dicom_io.export2d import iter_model_images, png_name

    norm = Normalisation.parse(args.window, ModelKind.TWO_D, series.modality)
    final = out / series.series_instance_uid
    staging = staging_directory(final)
    try:
        transforms = {}
        for image in iter_model_images(series, norm):
            name = png_name(image.frame)
            atomic_write_bytes(staging / name, image.png, fsync=False)
            transforms[name] = {
                "sop_instance_uid": image.frame.sop_instance_uid,
                "frame": image.frame.index + 1,
                **image.transform.to_dict(),
            }
        manifest = {
            "series_instance_uid": series.series_instance_uid,
            "normalisation": norm.describe(),
            "images": transforms,
        }
        atomic_write_bytes(staging / "transform.json", json.dumps(manifest, indent=1).encode())
        publish_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return f"{len(transforms)} PNG(s) in {final}"


def _to_nifti(series: Series, out: Path, args: argparse.Namespace, slices: SliceCompressor | None) -> str:
    if series.kind is SeriesKind.PHASES:  # a 4D series: one volume file per phase
        return "; ".join(
            _volume_to_nifti(phase, out / f"{series.series_instance_uid}_phase{k}.nii.gz", args, slices)
            + f" [{phase.phase_label}]"
            for k, phase in enumerate(series.phases, start=1)
        )
    return _volume_to_nifti(series, out / f"{series.series_instance_uid}.nii.gz", args, slices)


def _volume_to_nifti(
    series: Series, target: Path, args: argparse.Namespace, slices: SliceCompressor | None
) -> str:
    from dicom_io.nifti3d import NiftiLayout, VolumeIntensity, export_nifti

    intensity = VolumeIntensity(args.intensity or ("uint8" if args.window else "raw"))
    norm = Normalisation.parse(args.window, ModelKind.THREE_D, series.modality) if args.window else None
    data, volume = export_nifti(
        series,
        intensity=intensity,
        normalisation=norm,
        layout=NiftiLayout(args.layout),
        slices=slices,
    )
    atomic_write_bytes(target, data)
    return f"{target} {volume.shape} {volume.layout} {intensity} ({volume.normalisation})"
