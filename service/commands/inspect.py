"""``mip-gateway info``: one line per series."""

from __future__ import annotations

import argparse

from pydicom.uid import UID

from dicom_io.reading import scan
from dicom_io.series import Series, SeriesKind, assemble

__all__ = ["describe", "run_info"]


def describe(series: Series) -> str:
    """modality, SOP class, classification, slice count, dimensions, spacing, plane, problems."""
    parts = [series.series_instance_uid, series.modality, UID(series.sop_class_uid).name, str(series.kind)]
    if series.kind is SeriesKind.PHASES:
        parts.append(f"{len(series.phases)} phases x {len(series.phases[0].frames)} slices")
    elif series.kind is not SeriesKind.NON_IMAGE:
        parts.append(f"{len(series.frames)} {'slices' if series.kind is SeriesKind.VOLUME else 'images'}")
        sizes = sorted({(f.instance.rows, f.instance.columns) for f in series.frames})
        parts.append(",".join(f"{r}x{c}" for r, c in sizes))
    geometry = series.geometry
    if geometry is not None:
        row, col = geometry.pixel_spacing
        parts.append(f"{col:.3g}x{row:.3g}x{geometry.slice_spacing:.3g} mm")
    if series.plane is not None:
        parts.append(str(series.plane))
    problems = "; ".join(str(p) for p in series.problems) or "none"
    parts.append(f"problems: {problems}")
    return "  ".join(parts)


def run_info(args: argparse.Namespace) -> int:
    result = scan(args.paths)
    for series in assemble(result.instances):
        print(describe(series))
    return 0 if result.instances else 1
