#!/usr/bin/env python3
"""Peer-engine baseline for the in-process backtest benchmark (issue 12): hftbacktest 2.4.4.

Run from the repo root (after ``scripts/peer_bench_setup.sh``)::

    .venv-peer/bin/python benches/peer_hftbacktest.py --rounds 3 [--repeat K] [--cache-dir DIR]

What it does
------------
1. Converts the Binance USD-M capture (``--input``, default
   ``../shared/data/real/hftbacktest/examples/usdm/btcusdt_20240808.gz``) with hftbacktest's own
   converter, ``hftbacktest.data.utils.binancefutures.convert`` (combined stream, no options, so
   bookTicker and markPrice are skipped), and caches the result as an ``.npz`` under
   ``--cache-dir`` (default ``target/bench-cache/``). A cached file is reused; delete it to
   convert again. The converter's own messages go to stderr.
2. Loads the array once into memory. ``--repeat K`` concatenates it K times, every copy shifted
   in both clocks by the span of the data plus 1 s (copy k+1 starts after copy k ends), to see
   how rate and memory scale on a larger input.
3. Compiles the numba strategy by running it once on the first 20,000 rows (``compile_secs``:
   wall time of that warm-up, nearly all numba compilation of the strategy and of hftbacktest's
   jitted wrappers).
4. Runs ``--rounds`` rounds. Each round builds a fresh ``HashMapMarketDepthBacktest`` over the
   in-memory array and runs the jitted strategy to the end of the data, then prints ONE JSON
   line to stdout. Nothing else goes to stdout.

Backtest set-up (one asset, ``BacktestAsset``): data from the in-memory array, ``linear_asset(1.0)``,
``constant_order_latency(1_000_000, 1_000_000)`` (1 ms entry, 1 ms response; the deprecated
``constant_latency`` is the same model), ``risk_adverse_queue_model()``,
``no_partial_fill_exchange()`` (the exchange model hftbacktest's own examples use),
``trading_value_fee_model(0.0002, 0.00018)`` (maker 2 bp, taker 1.8 bp, fee = rate x traded
value; positive = paid), ``tick_size(0.1)``, ``lot_size(0.001)``. No initial snapshot: the
capture has its REST snapshot inside it, which the converter turns into a depth-clear plus
snapshot rows.

Quoting rules (exactly what ``quote_loop`` does; ticktape's in-process market maker is to do the
same)
----------------------------------------------------------------------------------------------
* Time advances in steps of ``hbt.elapse(100_000_000)``: 100 ms of the backtest's local clock
  (the converter's corrected ``local_ts``). Everything below happens once per step, after the
  elapse; orders are sent with ``wait=False``, so a request reaches the exchange 1 ms later
  and its answer comes back 1 ms after that.
* No quoting before the REST snapshot has reached the local side: steps whose time is before
  the ``local_ts`` of the snapshot rows do nothing (before it the converted book is only the
  levels touched by diffs, as in ticktape where no book exists before the snapshot). With
  ``--repeat`` only the first copy is gated this way.
* ``clear_inactive_orders`` (drops filled, cancelled and rejected orders from the dict).
* Read best bid tick, best ask tick from the local depth. If either side is empty or the book
  is crossed/locked (bid tick >= ask tick), do nothing this step.
* ``moved`` = (best bid, best ask) differs from the pair recorded at the last step in which
  an order was submitted (true before the first submission). ``risk`` = |position| >= 0.01 BTC.
* If ``moved`` or ``risk``: every order in the dict that is cancellable (live: status NEW or
  PARTIALLY_FILLED, and no request in flight) gets ``cancel``.
* An order counts as "open" on its side if it was not cancelled in this step and it is live
  (NEW / PARTIALLY_FILLED with no request in flight) or its new-order request is in flight.
  Orders with a cancel in flight do not count.
* If no buy is open: submit buy 0.001 at the best bid, GTX (post-only), LIMIT.
  If no sell is open: submit sell 0.001 at the best ask, GTX, LIMIT. (The risk rule only
  cancels; it does not stop reposting on either side, so inventory is not capped.)
  Order ids are 1, 2, 3, ... in submission order. If anything was submitted, the current
  (best bid, best ask) becomes the recorded pair for ``moved``.
* A GTX order that would cross on arrival (the book moved during the 1 ms) is rejected by the
  exchange model and simply disappears at the next ``clear_inactive_orders``.

Output (one JSON line per round)
--------------------------------
* ``events``: rows of the converted data fed to the engine (x K with ``--repeat``). The
  converter writes one row per price level of each depthUpdate, one per trade (it keeps trades
  whose ``X`` is ``MARKET``: all of them here), one depth-clear row per side plus one row per
  snapshot level for the REST snapshot; then ``correct_event_order`` splits a row in two
  (one exchange-side, one local-side row) wherever the exchange-time order and the local-time
  order disagree, so some source events are counted twice.
* ``events_book_trade``: source book and trade events, each counted once: rows carrying the
  local-side flag whose type is depth, depth-snapshot or trade (the two depth-clear rows are
  hftbacktest's markers, not data). This is the number to set beside ticktape's import count.
* ``secs``: wall time of the round: building the backtester over the in-memory array, running
  the strategy to the end of the data, and closing it. Excludes conversion, loading the npz,
  and compilation. ``run_secs``: the strategy call alone.
* ``events_per_sec`` = ``events`` / ``secs``; ``book_trade_per_sec`` = ``events_book_trade`` / ``secs``.
* ``fills``: ``state_values.num_trades``, the number of own fills (no partial fills in this
  exchange model, so each is 0.001 BTC). ``volume_btc``: ``state_values.trading_volume``.
* ``position``: BTC at the end (``state_values.position``).
* ``fees``: ``state_values.fee``, quote currency (USDT) paid in fees (negative would be rebates).
* ``pnl_quote``: equity change in USDT including fees, marked at the final mid:
  ``balance + position * mid - fee`` (hftbacktest's own equity definition for a linear asset;
  balance starts at 0). ``pnl_wo_fee`` = the same without ``- fee``.
* ``orders_submitted``, ``cancels``, ``steps``, ``quoting_steps``: counted by the strategy.
* ``peak_rss_mib``: ``ru_maxrss`` of this process so far (includes conversion if it ran now).
"""

import argparse
import contextlib
import json
import os
import resource
import sys
import time

import numpy as np
from numba import njit

import hftbacktest
from hftbacktest import (
    BUY,
    GTX,
    LIMIT,
    NEW,
    NONE,
    SELL,
    BacktestAsset,
    HashMapMarketDepthBacktest,
)
from hftbacktest.order import PARTIALLY_FILLED
from hftbacktest.types import (
    DEPTH_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    LOCAL_EVENT,
    TRADE_EVENT,
)

PEER_VERSION = "2.4.4"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INPUT = os.path.join(
    REPO, "..", "shared", "data", "real", "hftbacktest", "examples", "usdm", "btcusdt_20240808.gz"
)

STEP_NS = 100_000_000
ORDER_QTY = 0.001
MAX_INVENTORY = 0.01
TICK_SIZE = 0.1
LOT_SIZE = 0.001
ENTRY_LATENCY_NS = 1_000_000
RESPONSE_LATENCY_NS = 1_000_000
MAKER_FEE = 0.0002
TAKER_FEE = 0.00018
WARMUP_ROWS = 20_000
EVENT_TYPE_MASK = 0xFF


@njit
def quote_loop(hbt, start_ts, step_ns, order_qty, max_inventory):
    """The quoting rules of the module docstring. Returns counters."""
    asset_no = 0
    posted_bid_tick = np.int64(0)
    posted_ask_tick = np.int64(0)
    have_posted = False
    next_order_id = np.uint64(1)
    steps = 0
    quoting_steps = 0
    submitted = 0
    cancels = 0
    while hbt.elapse(step_ns) == 0:
        steps += 1
        if hbt.current_timestamp < start_ts:
            continue
        hbt.clear_inactive_orders(asset_no)
        depth = hbt.depth(asset_no)
        bid_tick = depth.best_bid_tick
        ask_tick = depth.best_ask_tick
        # Empty sides are reported with sentinel ticks at the ends of the int64 range.
        if bid_tick <= -(1 << 62) or ask_tick >= (1 << 62) or bid_tick >= ask_tick:
            continue
        quoting_steps += 1
        position = hbt.position(asset_no)
        moved = (not have_posted) or bid_tick != posted_bid_tick or ask_tick != posted_ask_tick
        risk = abs(position) >= max_inventory
        buy_open = False
        sell_open = False
        values = hbt.orders(asset_no).values()
        while values.has_next():
            order = values.get()
            live = (order.status == NEW or order.status == PARTIALLY_FILLED) and order.req == NONE
            if (moved or risk) and live:
                hbt.cancel(asset_no, order.order_id, False)
                cancels += 1
                continue
            if live or order.req == NEW:
                if order.side == BUY:
                    buy_open = True
                elif order.side == SELL:
                    sell_open = True
        posted = False
        if not buy_open:
            hbt.submit_buy_order(
                asset_no, next_order_id, bid_tick * depth.tick_size, order_qty, GTX, LIMIT, False
            )
            next_order_id += np.uint64(1)
            submitted += 1
            posted = True
        if not sell_open:
            hbt.submit_sell_order(
                asset_no, next_order_id, ask_tick * depth.tick_size, order_qty, GTX, LIMIT, False
            )
            next_order_id += np.uint64(1)
            submitted += 1
            posted = True
        if posted:
            have_posted = True
            posted_bid_tick = bid_tick
            posted_ask_tick = ask_tick
    return steps, quoting_steps, submitted, cancels


@njit
def final_state(hbt):
    asset_no = 0
    sv = hbt.state_values(asset_no)
    depth = hbt.depth(asset_no)
    mid = (depth.best_bid + depth.best_ask) / 2.0
    return sv.position, sv.balance, sv.fee, sv.num_trades, sv.trading_volume, sv.trading_value, mid


def build_backtest(data):
    asset = (
        BacktestAsset()
        .data(data)
        .linear_asset(1.0)
        .constant_order_latency(ENTRY_LATENCY_NS, RESPONSE_LATENCY_NS)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(MAKER_FEE, TAKER_FEE)
        .tick_size(TICK_SIZE)
        .lot_size(LOT_SIZE)
    )
    return HashMapMarketDepthBacktest([asset])


@contextlib.contextmanager
def stdout_to_stderr():
    """Sends fd 1 to stderr (numba's print inside the converter writes to the fd, not sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cached_npz(input_path, cache_dir):
    """Path of the converted file; converts (hftbacktest's converter) if it is not cached yet."""
    base = os.path.basename(input_path)
    for suffix in (".gz", ".txt"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    market = os.path.basename(os.path.dirname(os.path.abspath(input_path)))
    out = os.path.join(cache_dir, f"hftbacktest-{PEER_VERSION}_{market}_{base}.npz")
    if os.path.exists(out):
        return out, None
    if not os.path.exists(input_path):
        sys.exit(f"peer_hftbacktest: capture not found: {input_path} (give --input)")
    os.makedirs(cache_dir, exist_ok=True)
    from hftbacktest.data.utils import binancefutures

    tmp = out[: -len(".npz")] + ".inprogress.npz"
    t0 = time.perf_counter()
    with stdout_to_stderr():
        # buffer_size is the converter's preallocated row count (np.empty: untouched pages cost nothing).
        binancefutures.convert(input_path, output_filename=tmp, combined_stream=True, buffer_size=20_000_000)
    os.replace(tmp, out)
    return out, time.perf_counter() - t0


def count_rows(data):
    ev = data["ev"]
    kind = ev & EVENT_TYPE_MASK
    local = (ev & LOCAL_EVENT) == LOCAL_EVENT
    book_trade = local & ((kind == DEPTH_EVENT) | (kind == DEPTH_SNAPSHOT_EVENT) | (kind == TRADE_EVENT))
    return int(len(data)), int(np.count_nonzero(book_trade))


def snapshot_local_ts(data):
    """local_ts at which the local side has the REST snapshot (0 if the data has none)."""
    ev = data["ev"]
    rows = ((ev & EVENT_TYPE_MASK) == DEPTH_SNAPSHOT_EVENT) & ((ev & LOCAL_EVENT) == LOCAL_EVENT)
    if not rows.any():
        return 0
    return int(data["local_ts"][rows].max())


def repeated(data, k):
    if k == 1:
        return data
    lo = min(int(data["exch_ts"].min()), int(data["local_ts"].min()))
    hi = max(int(data["exch_ts"].max()), int(data["local_ts"].max()))
    shift = hi - lo + 1_000_000_000
    out = np.empty(len(data) * k, data.dtype)
    for i in range(k):
        part = out[i * len(data): (i + 1) * len(data)]
        part[:] = data
        part["exch_ts"] += i * shift
        part["local_ts"] += i * shift
    return out


def run_round(data, start_ts):
    t0 = time.perf_counter()
    hbt = build_backtest(data)
    t1 = time.perf_counter()
    steps, quoting_steps, submitted, cancels = quote_loop(hbt, start_ts, STEP_NS, ORDER_QTY, MAX_INVENTORY)
    t2 = time.perf_counter()
    state = final_state(hbt)
    hbt.close()
    t3 = time.perf_counter()
    return t3 - t0, t2 - t1, (steps, quoting_steps, submitted, cancels), state


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="backtest rounds (default 3)")
    ap.add_argument("--repeat", type=int, default=1, help="feed the data K times, shifted in time (default 1)")
    ap.add_argument("--input", default=DEFAULT_INPUT, help="Binance USD-M raw capture (<local_ns> <json> lines, gzip)")
    ap.add_argument("--cache-dir", default=os.path.join(REPO, "target", "bench-cache"),
                    help="where the converted npz is kept (default target/bench-cache/)")
    args = ap.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        sys.exit("peer_hftbacktest: --rounds and --repeat must be >= 1")
    if hftbacktest.__version__ != PEER_VERSION:
        sys.exit(f"peer_hftbacktest: hftbacktest {hftbacktest.__version__} installed, {PEER_VERSION} expected "
                 "(run scripts/peer_bench_setup.sh)")

    npz, convert_secs = cached_npz(args.input, args.cache_dir)
    t0 = time.perf_counter()
    with np.load(npz) as f:
        base = f["data"]
    load_secs = time.perf_counter() - t0
    start_ts = snapshot_local_ts(base)
    data = np.ascontiguousarray(repeated(base, args.repeat))
    events, events_book_trade = count_rows(data)

    # Warm-up on a prefix: compiles quote_loop / final_state and hftbacktest's jitted wrappers.
    warm = np.ascontiguousarray(data[:WARMUP_ROWS])
    t0 = time.perf_counter()
    run_round(warm, start_ts)
    compile_secs = time.perf_counter() - t0

    for r in range(1, args.rounds + 1):
        secs, run_secs, counters, state = run_round(data, start_ts)
        position, balance, fee, num_trades, volume, value, mid = state
        steps, quoting_steps, submitted, cancels = counters
        rec = {
            "engine": "hftbacktest",
            "version": PEER_VERSION,
            "round": r,
            "repeat": args.repeat,
            "events": events,
            "events_book_trade": events_book_trade,
            "secs": round(secs, 6),
            "run_secs": round(run_secs, 6),
            "events_per_sec": round(events / secs, 1),
            "book_trade_per_sec": round(events_book_trade / secs, 1),
            "compile_secs": round(compile_secs, 6),
            "convert_secs": None if convert_secs is None else round(convert_secs, 3),
            "load_secs": round(load_secs, 6),
            "fills": int(num_trades),
            "volume_btc": round(float(volume), 9),
            "traded_value_quote": round(float(value), 6),
            "position": round(float(position), 9),
            "pnl_quote": round(float(balance + position * mid - fee), 6),
            "pnl_wo_fee": round(float(balance + position * mid), 6),
            "fees": round(float(fee), 6),
            "mid_end": float(mid),
            "orders_submitted": int(submitted),
            "cancels": int(cancels),
            "steps": int(steps),
            "quoting_steps": int(quoting_steps),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        }
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
