#!/usr/bin/env bash
# Runs every fuzz target (tests/integration/fuzz, see docs/FUZZING.md) for SECONDS each
# and prints cases run and cases/second per target.
#
#   scripts/fuzz.sh               # 60 s per target
#   scripts/fuzz.sh 600           # the long run: 10 minutes per target
#   scripts/fuzz.sh 120 fuzz::import   # a test-name filter: only the importer targets
#
# TICKTAPE_FUZZ_SEED=N replays a run (every report line prints its seed);
# FUZZ_THREADS=2 runs two targets at a time. The short budget (2,000 cases per target)
# runs with every `cargo test`, so scripts/test.sh and .ci/run need nothing from here.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
filter="${2:-fuzz::}"
threads="${FUZZ_THREADS:-1}"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
echo "fuzz.sh: ${seconds} s per target (tests matching $filter), ${threads} at a time"
status=0
TICKTAPE_FUZZ_SECONDS="$seconds" TICKTAPE_FUZZ_REPORT="$report" \
    cargo test --test integration "$filter" -- --test-threads "$threads" || status=$?
echo
printf '%-20s %12s %10s %12s\n' target cases seconds cases/s
# Report lines: "fuzz <target>: <cases> cases in <s> s (<rate> cases/s), ..."
awk '{ gsub(":", "", $2); gsub("[(]", "", $8); printf "%-20s %12s %10s %12s\n", $2, $3, $6, $8 }' "$report" | sort
exit "$status"
