#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up the virtualenv, the DICOM peer tools (dcmtk,
# dicom3tools, dcm2niix, Orthanc) and the services the tests use for real (Redis, PostgreSQL),
# then lint, types and tests. Extra arguments go to pytest (e.g. -k nifti).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh --peers --services

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy dicom_io service workers config
echo "== pytest"
jobs="$(python -c 'import os; print(min(4, os.cpu_count() or 1))')"
exec pytest -n "$jobs" "$@"
