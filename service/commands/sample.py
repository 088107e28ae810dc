"""``mip-gateway sample``: write a synthetic study to try the gateway on (no real patient data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dicom_io.testing.phantoms import volume_phantom

__all__ = ["run_sample"]


def run_sample(args: argparse.Namespace) -> int:
    phantom = volume_phantom(
        modality=args.modality,
        orientation="axial",
        rows=args.size,
        columns=args.size,
        slices=args.slices,
        pixel_spacing=(320.0 / args.size, 320.0 / args.size),
        slice_spacing=2.5,
        reverse_order=True,
        seed=args.seed,
        study_description=f"{args.modality} ABDOMEN (synthetic phantom)",
        series_description="AXIAL 2.5mm (synthetic phantom)",
    )
    files = phantom.write(Path(args.out))
    print(f"wrote {len(files)} {args.modality} slices ({args.size}x{args.size}) to {args.out}")
    return 0
