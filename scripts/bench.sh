#!/usr/bin/env bash
# End-to-end benchmarks, each printed beside a baseline measured in the same invocation
# (machines are noisy: compare ratios, not absolute numbers). Release build.
#
#   scripts/bench.sh [events]        default 2,000,000 events for record/replay
#
# Figures:
#   record   simulate → tcp → record, zero loss, binary and JSON payloads, each vs a bare
#            libzmq PUB→SUB pair moving messages of the same size (the faster of one
#            process and two processes)
#   memory   recorder peak RSS at a sustained rate, 10 s vs 40 s vs 120 s
#   size     Parquet bytes/event vs gzip'd JSON lines of the same payloads
#   replay   --speed max to one subscriber vs the bare pair, binary and JSON
#   lockstep simple and lookahead (1 ms) forms vs a bare libzmq step round trip over ipc:
#            the shipped demo, one Rust strategy on it, and the Binance USD-M capture
#   import   Binance raw capture vs `zcat | wc -l`
#   micro    criterion: encode/decode/dedup per event, and the recorder without its socket
#            (record_ingest) (cargo bench --bench wire)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
cargo build --release --bin ticktape --example zmq_baseline 2>&1 | tail -1
T=${CARGO_TARGET_DIR:-target}/release/ticktape
B=${CARGO_TARGET_DIR:-target}/release/examples/zmq_baseline
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
PY=${TICKTAPE_PYTHON:-.venv/bin/python}
rate() { python3 -c "print(f'{($1)/($2):,.0f}')"; }

json_field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# The bare pair moves payloads of each encoding's size: binary events are ~80 bytes,
# JSON ones ~200 (measured by the size figure below). Two shapes: one process with one
# libzmq context, and publisher and subscriber in two processes with a context (and an
# I/O thread) each, like simulate → record. Ratios are taken against the faster one.
declare -A BASE_RATE
for bytes in 80 200; do
  echo "== baseline: bare libzmq PUB→SUB, $N msgs of $bytes bytes, tcp loopback"
  ONE=$($B "$N" $bytes)
  TWO=$($B procs "$N" $bytes)
  echo "one process:   $ONE"
  echo "two processes: $TWO"
  BASE_RATE[$bytes]=$(python3 -c "print(max($(json_field "$ONE" msgs_per_sec), $(json_field "$TWO" msgs_per_sec)))")
done
declare -A SIZE=([binary]=80 [json]=200)

for ENC in binary json; do
  echo "== record ($ENC): simulate --rate 0 → tcp → record, $N events"
  EP=tcp://127.0.0.1:5651
  rm -rf "$W/ds"
  /usr/bin/time -f "%e %M" -o "$W/rec.time" $T record "$W/ds" --connect $EP --until-eos --quiet --no-fsync 2> "$W/rec.log" &
  RP=$!
  sleep 0.5
  START=$(date +%s.%N)
  $T simulate --bind $EP --rate 0 --events "$N" --wait-for 1 --quiet --synthetic-clock 2024-01-01T00:00:00Z --synthetic-rate 100000 --encoding $ENC 2> "$W/sim.log"
  wait $RP
  END=$(date +%s.%N)
  head -1 "$W/rec.log"
  read -r REC_SECS REC_KB < "$W/rec.time"
  ROWS=$($T inspect --json "$W/ds" | python3 -c "import json,sys; s=json.load(sys.stdin); print(sum(p['rows'] for p in s['partitions']))")
  WALL=$(python3 -c "print($END-$START)")
  echo "record ($ENC): rows $ROWS of $N (zero loss: $([ "$ROWS" = "$N" ] && echo yes || echo NO)), $(rate "$N" "$WALL") events/s end to end, recorder peak RSS $((REC_KB/1024)) MiB"
  python3 -c "print(f'record ($ENC) / bare pair of {${SIZE[$ENC]}}-byte msgs = {$N/$WALL/${BASE_RATE[${SIZE[$ENC]}]}:.2f}')"
done

echo "== record memory: sustained 100,000 events/s (binary) for 10, 40 and 120 s, zero loss"
for SECS in 10 40 120; do
  EP=tcp://127.0.0.1:5653
  rm -rf "$W/mem-ds"
  /usr/bin/time -f "%M" -o "$W/rec-mem.time" $T record "$W/mem-ds" --connect $EP --until-eos --quiet --no-fsync 2> /dev/null &
  RP=$!
  sleep 0.5
  $T simulate --bind $EP --rate 100000 --events $((SECS * 100000)) --wait-for 1 --quiet --encoding binary 2> /dev/null
  wait $RP
  ROWS=$($T inspect --json "$W/mem-ds" | python3 -c "import json,sys; s=json.load(sys.stdin); print(sum(p['rows'] for p in s['partitions']))")
  echo "record ${SECS}s at 100k/s: rows $ROWS of $((SECS * 100000)), recorder peak RSS $(( $(cat "$W/rec-mem.time") / 1024 )) MiB"
done

echo "== size on disk"
PARQ=$(du -sb "$W/ds" | cut -f1)
$T replay "$W/ds" --bind ipc://$W/size.sock --wait-for 1 --quiet 2>/dev/null &
if [ -x "$PY" ]; then
  "$PY" tests/python/subscribe.py "ipc://$W/size.sock" "$W/events.jsonl"
else
  $B sub "ipc://$W/size.sock" > /dev/null
fi
wait
if [ -f "$W/events.jsonl" ]; then
  GZ=$(gzip -6 -c "$W/events.jsonl" | wc -c)
  python3 -c "print(f'parquet {$PARQ/$N:.1f} B/event, gzip JSON lines {$GZ/$N:.1f} B/event, ratio {$PARQ/$GZ:.2f}')"
else
  echo "parquet $((PARQ / N)) B/event (no Python for the gzip comparison)"
fi

for ENC in binary json; do
  echo "== replay ($ENC) --speed max → one subscriber (tcp), $N events"
  EP2=tcp://127.0.0.1:5652
  $B sub $EP2 > "$W/sub.json" &
  $T replay "$W/ds" --bind $EP2 --wait-for 1 --quiet --encoding $ENC 2> "$W/replay.log"
  wait
  head -1 "$W/replay.log"
  SUB=$(cat "$W/sub.json"); echo "subscriber: $SUB"
  python3 -c "print(f'replay ($ENC) / bare pair of {${SIZE[$ENC]}}-byte msgs = {$(json_field "$SUB" msgs_per_sec)/${BASE_RATE[${SIZE[$ENC]}]}:.2f}')"
done

echo "== lockstep floor: bare libzmq step over ipc (PUB event + marker, DEALER ack → ROUTER)"
LS=$($B lockstep 20000)
echo "$LS"
LS_RATE=$(json_field "$LS" steps_per_sec)
lockstep_run() { # scenario, label
  local line
  line=$($T run "$1" --out "$W/ls-run" --quiet 2>&1 | grep -E "^replay:|digest" | tr '\n' ' ')
  echo "$2: $line"
  python3 -c "import re,sys; r=float(re.search(r'= (\d+) events/s', sys.argv[1]).group(1)); print(f'  {r:,.0f} events/s = {r/$LS_RATE:.2f} x the bare step rate')" "$line"
}
one_strategy() { # dataset, venue, encoding, lookahead → scenario on stdout
  python3 - "$@" <<'PY'
import re, sys
dataset, venue, encoding, lookahead = sys.argv[1:]
s = open("scenarios/demo.toml").read()
s = s[: s.index('[[strategy]]\nname = "taker"')] + s[s.index("[exchange]"):]
s = s.replace("data/binance-spot", dataset).replace('"binance"', f'"{venue}"')
s = s.replace('lookahead = "1ms"', f'lookahead = "{lookahead}"\nencoding = "{encoding}"')
if dataset != "data/binance-spot":
    s = re.sub(r"\nstart = .*\nend = .*\n", "\n", s)
print(s)
PY
}
echo "== lockstep: demo scenario as shipped (135,830 real events, 2 Rust strategies, JSON, ipc)"
sed 's/lookahead = "1ms"/lookahead = "0s"/' scenarios/demo.toml > "$W/simple.toml"
lockstep_run "$W/simple.toml" "simple"
lockstep_run scenarios/demo.toml "lookahead 1ms"
echo "== lockstep: demo data, one Rust strategy (mm), binary payloads"
one_strategy data/binance-spot binance binary 0s > "$W/one-simple.toml"
one_strategy data/binance-spot binance binary 1ms > "$W/one.toml"
lockstep_run "$W/one-simple.toml" "simple"
lockstep_run "$W/one.toml" "lookahead 1ms"
USDM=../shared/data/real/hftbacktest/examples/usdm/btcusdt_20240808.gz
if [ -f "$USDM" ]; then
  echo "== lockstep: Binance USD-M BTCUSDT capture (the issue's reference), one Rust strategy, lookahead 1ms"
  $T import "$USDM" --out "$W/usdm" --quiet > /dev/null 2>&1
  one_strategy "$W/usdm" binance-usdm binary 1ms > "$W/usdm.toml"
  lockstep_run "$W/usdm.toml" "binary"
  one_strategy "$W/usdm" binance-usdm json 1ms > "$W/usdm-json.toml"
  lockstep_run "$W/usdm-json.toml" "json"
fi

echo "== memory: replay + exchange + strategy, demo dataset vs one about ten times larger"
R=../shared/data/real/hftbacktest/examples
if [ -d "$R" ]; then
  for s in spot/btcusdt spot/ethusdt cm/btcusd_perp cm/ethusd_perp; do
    $T import $R/${s}_20240808.gz $R/${s}_20240809.gz --out "$W/big" --quiet 2>/dev/null
  done
  for s in usdm/btcusdt usdm/ethusdt; do $T import $R/${s}_20240808.gz --out "$W/big" --quiet 2>/dev/null; done
  sed -e "s#data/binance-spot#$W/big#" -e '/^start/d' -e '/^end/d' -e '/^venues/d' -e '/^symbols/d' scenarios/demo.toml > "$W/big.toml"
  for sc in scenarios/demo.toml "$W/big.toml"; do
    /usr/bin/time -f "%M" -o "$W/mem" $T run "$sc" --out "$W/mem-run" --quiet > /dev/null 2> "$W/mem.log"
    EV=$(grep -o "^replay: [0-9]*" "$W/mem.log" | grep -o "[0-9]*")
    echo "$sc: $EV events, replayer+exchange peak RSS $(( $(cat "$W/mem") / 1024 )) MiB"
  done
fi

echo "== import: Binance spot BTCUSDT raw capture"
RAW=../shared/data/real/hftbacktest/examples/spot/btcusdt_20240808.gz
if [ -f "$RAW" ]; then
  S=$(date +%s.%N); LINES=$(zcat "$RAW" | wc -l); E=$(date +%s.%N)
  echo "baseline zcat | wc -l: $LINES lines in $(python3 -c "print(f'{$E-$S:.3f}')")s = $(rate "$LINES" "$E-$S") lines/s"
  S=$(date +%s.%N); $T import "$RAW" --out "$W/imp" --quiet 2>&1 | tail -1; E=$(date +%s.%N)
  echo "ticktape import: $(rate "$LINES" "$E-$S") lines/s (same $LINES lines)"
fi

DBN=../shared/data/real/nautilus_trader/tests/test_data/databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst
if [ -f "$DBN" ] && command -v zstd > /dev/null; then
  echo "== import: Databento DBN MBO (ESH4, 68,792 records)"
  S=$(date +%s.%N); zstd -dc "$DBN" | wc -c > /dev/null; E=$(date +%s.%N)
  echo "baseline zstd -dc: $(python3 -c "print(f'{$E-$S:.3f}')")s"
  S=$(date +%s.%N); $T import "$DBN" --out "$W/dbn" --quiet 2>&1 | tail -1; E=$(date +%s.%N)
  echo "ticktape import: $(rate 68792 "$E-$S") records/s"
fi

if [ "${BENCH_REPORT:-0}" = 1 ] && [ -x "$PY" ]; then
  echo "== report: 10 M marks, 1 M fills (ticktape report vs plain python polars)"
  "$PY" scripts/gen_report_bench.py "$W/rb" > /dev/null
  /usr/bin/time -f "python polars: %e s, peak %M KiB" "$PY" benches/report_baseline.py "$W/rb" > /dev/null
  /usr/bin/time -f "ticktape report: %e s, peak %M KiB" $T report "$W/rb" > /dev/null
fi

echo "== micro: cargo bench --bench wire"
cargo bench --bench wire 2>&1 | grep -E "^per_event|^recorder|time:|thrpt:" || true
