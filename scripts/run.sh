#!/usr/bin/env bash
# The gateway as it runs for real, on one machine, against the mock endpoint (classical thresholding,
# NOT a model): sets itself up, then `mip-gateway serve --demo` starts the DICOM listener, the HTTP
# API and a worker, sends a synthetic CT study to its own listener by C-STORE, prints where the DICOM
# SEG is, and keeps serving (send your own studies, see README "Send a study") until Ctrl-C.
# Usage: scripts/run.sh [DATA_DIR] [serve options, e.g. --demo-exit --dicom-port 0 --http-port 0]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

DATA="${1:-demo-out}"
shift || true
rm -rf "$DATA"
mkdir -p "$DATA"
echo "== mip-gateway serve --demo: listener + API + worker (logs in $DATA/serve.log; Ctrl-C stops)"
status=0
# Ctrl-C reaches serve too; it stops its listener, API and worker and exits 0, and so do we
mip-gateway serve --demo --data-dir "$DATA" "$@" 2>"$DATA/serve.log" || status=$?
if [[ $status -ne 0 ]]; then
    echo "== mip-gateway serve failed (status $status); the end of $DATA/serve.log:" >&2
    tail -n 25 "$DATA/serve.log" >&2
    exit "$status"
fi
echo "== stopped; the data directory (spool, SEGs under seg/, job store) stays in $DATA"
