#!/usr/bin/env bash
# Shows the product's main job on a sample study: sets up, writes a sample CT series, and converts
# it to what MedImageParse takes (2D PNGs and a 3D NIfTI). Output lands in ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

OUT="${1:-demo-out}"
rm -rf "$OUT"
mip-gateway sample "$OUT/sample-ct"
echo "== what the gateway sees"
mip-gateway info "$OUT/sample-ct"
echo "== 2D: 1024x1024 RGB PNGs (abdomen window) for MedImageParse"
mip-gateway convert "$OUT/sample-ct" --to png --window abdomen --out "$OUT/png"
echo "== 3D: NIfTI volume (HU, slices-first) for MedImageParse 3D"
mip-gateway convert "$OUT/sample-ct" --to nifti --layout slices-first --out "$OUT/nifti"
echo "done: see $OUT/"
