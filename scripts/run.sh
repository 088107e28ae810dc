#!/usr/bin/env bash
# Shows the gateway's main job on a sample study: sets itself up, writes a synthetic CT study, and
# runs it through the whole pipeline (rules → MedImageParse 3D → DICOM SEG) against the mock endpoint
# (classical thresholding, NOT a model). Output lands in ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

OUT="${1:-demo-out}"
rm -rf "$OUT"
mip-gateway sample "$OUT/sample-ct"
echo "== what the gateway sees"
mip-gateway info "$OUT/sample-ct"
echo "== which rules fire (config/rules.yaml)"
mip-gateway rules test "$OUT/sample-ct"
echo "== the pipeline, in one process, against the mock endpoint"
mip-gateway --log-json run "$OUT/sample-ct" --demo --out "$OUT/seg" 2>"$OUT/run.log"
echo "== done: DICOM SEG object(s) and report.json in $OUT/seg (logs in $OUT/run.log)"
ls -l "$OUT/seg"
