#!/usr/bin/env bash
# Runs every test: creates .venv with the Python packages the tests use (pyzmq,
# pyarrow, polars, duckdb) if needed, then the Rust unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import zmq, pyarrow, polars, duckdb" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export TICKTAPE_PYTHON="$PWD/.venv/bin/python"
# The fuzz targets (tests/integration/fuzz) run their short budget; scripts/fuzz.sh runs long ones.
export TICKTAPE_FUZZ_CASES="${TICKTAPE_FUZZ_CASES:-2000}"
cargo test -- --test-threads 2
