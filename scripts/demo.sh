#!/usr/bin/env bash
# The demo: build ticktape, then
#   1. record: a synthetic venue publishes for a few seconds (with a duplicate and a
#      sequence gap injected) while the recorder writes a crash-safe Parquet dataset;
#   2. inspect that recording;
#   3. backtest: replay six minutes of real Binance BTCUSDT (shipped in data/, imported
#      from a raw capture by `ticktape import`) in exact lockstep to two strategy
#      processes, with the simulated exchange answering their orders;
#   4. report: PnL table, and report.svg / report.json / report.csv in runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
T=${CARGO_TARGET_DIR:-target}/release/ticktape
REC=runs/demo-recording
rm -rf "$REC"
mkdir -p runs

echo "== 1. record: simulate → bus → record ($REC)"
"$T" record "$REC" --connect tcp://127.0.0.1:5599 --until-eos --quiet &
REC_PID=$!
"$T" simulate --bind tcp://127.0.0.1:5599 --rate 20000 --duration 4s --wait-for 1 \
    --duplicate-every 1000 --drop-after 30000 --drop-count 3
wait "$REC_PID"

echo "== 2. inspect"
"$T" inspect "$REC"

echo "== 3+4. backtest scenarios/demo.toml and report"
"$T" run scenarios/demo.toml
echo "chart: runs/demo/report.svg"

echo "== 5. the same backtest in-process (scenarios/demo-inproc.toml): no sockets, same fills"
"$T" run scenarios/demo-inproc.toml --quiet > /dev/null
BUS=$(sed -n 's/^  "digest": "\(.*\)",$/\1/p' runs/demo/summary.json)
INPROC=$(sed -n 's/^  "digest": "\(.*\)",$/\1/p' runs/demo-inproc/summary.json)
echo "fills digest: bus lockstep $BUS, in-process $INPROC"
if [ "$BUS" != "$INPROC" ]; then
    echo "error: the in-process engine and the bus lockstep disagree" >&2
    exit 1
fi
