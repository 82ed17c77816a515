#!/usr/bin/env bash
# Creates .venv-peer (repo root, gitignored) with the peer engine of the in-process backtest
# benchmark: hftbacktest 2.4.4 and the numpy/numba it runs on. Idempotent and quiet: does
# nothing when the venv already has exactly these versions. Then:
#   .venv-peer/bin/python benches/peer_hftbacktest.py --rounds 3
#
# hftbacktest is installed without its optional plotting/stats dependencies (polars,
# matplotlib, holoviews): the benchmark imports only the backtester, the data converter and
# numba. numpy/numba/llvmlite are pinned to the versions the figures in docs/BENCHMARKS.md
# were measured with, inside hftbacktest 2.4.4's own ranges (numpy>=2.0,<2.3; numba~=0.61).
#
# Environment: PEER_PYTHON=/path/to/python3.11 to choose the interpreter (default: python3.11,
# else python3 if it is 3.11 or newer; the 2.4.4 wheel needs CPython >= 3.11).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-peer
PKGS=(hftbacktest==2.4.4 numpy==2.2.6 numba==0.68.1 llvmlite==0.50.0)

die() { echo "peer_bench_setup: $*" >&2; exit 1; }

venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m
want = {"hftbacktest": "2.4.4", "numpy": "2.2.6", "numba": "0.68.1", "llvmlite": "0.50.0"}
assert all(m.version(k) == v for k, v in want.items())
import hftbacktest, numba, numpy  # noqa: F401  (imports really work)
from hftbacktest.data.utils import binancefutures  # noqa: F401
EOF
}

venv_ok && exit 0

if [ -n "${PEER_PYTHON:-}" ]; then
    PY=$PEER_PYTHON
elif command -v python3.11 >/dev/null 2>&1; then
    PY=python3.11
else
    PY=python3
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "need CPython >= 3.11 for the hftbacktest 2.4.4 wheel; '$PY' is not one. Set PEER_PYTHON=/path/to/python3.11."

if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" \
        || die "'$PY -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv, or set PEER_PYTHON)."
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
pip_install() {
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 30 --retries 2 "$@" >"$log" 2>&1
}
if ! pip_install "${PKGS[@]:1}" || ! pip_install --no-deps "${PKGS[0]}"; then
    cat "$log" >&2
    die "could not install ${PKGS[*]} into $VENV from the Python package registry (pip's output is above).
If the registry is unreachable, check the network/proxy settings pip uses (pip config list), then rerun this script.
To check by hand: $VENV/bin/python -m pip download --no-deps -d /tmp hftbacktest==2.4.4"
fi
venv_ok || die "$VENV was installed but does not import hftbacktest 2.4.4 with numpy/numba; remove $VENV and rerun."
