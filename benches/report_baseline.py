#!/usr/bin/env python3
"""Baseline for `ticktape report`: the same metrics with plain python polars.

Usage: benches/report_baseline.py RUN_DIR [--json]

Reads RUN_DIR/{fills,marks}.parquet (+ summary.json), replays fills through an average-cost
ledger in a Python loop (the path-dependent part; the Rust side does this loop in Rust),
as-of joins the per-fill state onto marks, and computes per (strategy, venue, symbol) and in
total: realized/unrealized PnL, fees, net PnL, final equity, max drawdown (abs, %), Sharpe and
Sortino of per-mark-interval returns (annualised over a 365-day year), turnover, trades,
win rate, round trips, average holding time, inventory stats, maker/taker split. Prints the
timings of each stage and the metrics (JSON with --json). Definitions: docs/REPORT.md.
Needs: pip install polars pyarrow
"""

import argparse
import json
import math
import os
import sys
import time
from decimal import Decimal

import polars as pl

KEYS = ["strategy", "venue", "symbol"]
NS_PER_YEAR = 365 * 86_400 * 1e9


def replay(fills: pl.DataFrame):
    state, out = {}, {k: [] for k in ("fill_ts", "strategy", "venue", "symbol", "position",
                                      "avg_cost", "cum_realized", "cum_fees")}
    cols = fills.select("ts_ns", "strategy", "venue", "symbol", "side", "price", "size_exact",
                        "fee", "liquidity")
    for ts, st, ve, sy, side, price, size_exact, fee, liq in cols.iter_rows():
        key = (st, ve, sy)
        s = state.get(key)
        if s is None:
            s = state[key] = dict(pos=Decimal(0), avg=0.0, realized=0.0, fees=0.0, turnover=0.0,
                                  trades=0, closing=0, wins=0, round_trips=0, holding_ns=0,
                                  open_since=None, maker=0, taker=0, maker_notional=0.0,
                                  taker_notional=0.0, last_price=0.0)
        q = Decimal(size_exact)
        qf = float(q)
        if side == "sell":
            q = -q
        pos = s["pos"]
        new = pos + q
        if pos == 0:
            s["avg"], s["open_since"] = price, ts
        elif (pos > 0) == (q > 0):
            held = float(abs(pos))
            s["avg"] = (held * s["avg"] + qf * price) / (held + qf)
        else:
            closed = min(float(abs(pos)), qf)
            pnl = closed * (price - s["avg"]) * (1 if pos > 0 else -1)
            s["realized"] += pnl
            s["closing"] += 1
            s["wins"] += pnl > 0
            if new == 0 or (new > 0) != (pos > 0):
                s["round_trips"] += 1
                s["holding_ns"] += ts - s["open_since"]
                s["avg"], s["open_since"] = (0.0, None) if new == 0 else (price, ts)
        s["pos"] = new
        s["fees"] += fee
        s["turnover"] += price * qf
        s["trades"] += 1
        s["last_price"] = price
        if liq == "maker":
            s["maker"] += 1
            s["maker_notional"] += price * qf
        elif liq == "taker":
            s["taker"] += 1
            s["taker_notional"] += price * qf
        for k, v in (("fill_ts", ts), ("strategy", st), ("venue", ve), ("symbol", sy),
                     ("position", float(new)), ("avg_cost", s["avg"]),
                     ("cum_realized", s["realized"]), ("cum_fees", s["fees"])):
            out[k].append(v)
    frame = pl.DataFrame(out, schema={"fill_ts": pl.Int64, "strategy": pl.Utf8, "venue": pl.Utf8,
                                      "symbol": pl.Utf8, "position": pl.Float64,
                                      "avg_cost": pl.Float64, "cum_realized": pl.Float64,
                                      "cum_fees": pl.Float64})
    frame = frame.unique(subset=["fill_ts", *KEYS], keep="last", maintain_order=True)
    return frame, state


def curve_stats(value: pl.Expr, base: float, with_pct: bool):
    equity = pl.lit(base) + value
    peak = equity.cum_max().clip(lower_bound=base)
    dd = peak - equity
    prev = equity.shift(1)
    ret = (equity - prev) / prev if base > 0 else equity - prev
    out = [dd.max().alias("max_dd"), ret.mean().alias("ret_mean"), ret.std().alias("ret_std"),
           ret.count().alias("ret_n"),
           pl.when(ret < 0).then(ret ** 2).otherwise(0.0).filter(ret.is_not_null()).mean().alias("ret_down2")]
    if with_pct:
        out.append((pl.when(peak > 0).then(dd / peak).max() * 100).alias("max_dd_pct"))
    return out


def ratios(row, ppy):
    if not ppy or (row["ret_n"] or 0) < 2 or row["ret_mean"] is None:
        return None, None
    ann = math.sqrt(ppy)
    sharpe = row["ret_mean"] / row["ret_std"] * ann if row["ret_std"] else None
    sortino = row["ret_mean"] / math.sqrt(row["ret_down2"]) * ann if row["ret_down2"] else None
    return sharpe, sortino


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t = {"start": time.perf_counter()}
    summary = {}
    sp = os.path.join(args.run_dir, "summary.json")
    if os.path.isfile(sp):
        with open(sp) as f:
            summary = json.load(f)
    start = float(summary.get("starting_balance", 0.0) or 0.0)

    fills = (pl.scan_parquet(os.path.join(args.run_dir, "fills.parquet"))
             .with_columns(pl.col("ts").dt.epoch("ns").alias("ts_ns"))
             .sort("ts_ns", "fill_id", maintain_order=True).collect())
    t["read_fills"] = time.perf_counter()
    frame, state = replay(fills)
    t["ledger"] = time.perf_counter()

    marks = (pl.scan_parquet(os.path.join(args.run_dir, "marks.parquet"))
             .select(pl.col("ts").dt.epoch("ns").alias("ts"), *KEYS, "mid",
                     pl.col("position").alias("mark_position"))
             .filter(pl.col("mid").is_not_null())
             .sort("ts", maintain_order=True))
    joined = (marks.join_asof(frame.lazy(), left_on="ts", right_on="fill_ts", by=KEYS,
                              strategy="backward", check_sortedness=False)
              .with_columns(pl.col("position", "avg_cost", "cum_realized", "cum_fees").fill_null(0.0))
              .with_columns((pl.col("cum_realized") + pl.col("position") * (pl.col("mid") - pl.col("avg_cost"))
                             - pl.col("cum_fees")).alias("pnl"),
                            (pl.col("position").abs() * pl.col("mid")).alias("gross"))
              .cache())
    per_key = joined.group_by(KEYS).agg(
        pl.len().alias("marks"), pl.col("mid").last().alias("last_mid"),
        pl.col("position").abs().mean().alias("mean_abs_position"),
        pl.col("position").abs().max().alias("max_abs_position"),
        ((pl.col("position").abs() * (pl.col("ts").shift(-1) - pl.col("ts"))).sum()
         / (pl.col("ts").last() - pl.col("ts").first())).alias("twa_abs_position"),
        pl.col("gross").mean().alias("mean_gross"), pl.col("gross").max().alias("max_gross"),
        *curve_stats(pl.col("pnl"), start, False))
    step = [((pl.col(c) - pl.col(c).shift(1)).over(KEYS)).fill_null(pl.col(c)).alias(c) for c in ("pnl", "gross")]
    total = (joined.select("ts", *step)
             .select("ts", (start + pl.col("pnl").cum_sum()).alias("equity"), pl.col("gross").cum_sum())
             .filter((pl.col("ts") != pl.col("ts").shift(-1)) | pl.col("ts").shift(-1).is_null()))
    total_stats = total.select(
        pl.len().alias("points"), (pl.col("ts") - pl.col("ts").shift(1)).median().alias("interval"),
        pl.col("gross").mean().alias("mean_gross"), pl.col("gross").max().alias("max_gross"),
        *curve_stats(pl.col("equity") - start, start, True))
    per_key_df, total_df = pl.collect_all([per_key, total_stats])
    t["marks"] = time.perf_counter()

    tot = total_df.row(0, named=True)
    ppy = NS_PER_YEAR / tot["interval"] if tot["interval"] else None
    rows = {tuple(r[k] for k in KEYS): r for r in per_key_df.iter_rows(named=True)}
    out_keys, agg = [], dict(realized_pnl=0.0, unrealized_pnl=0.0, fees=0.0, turnover=0.0, trades=0,
                             closing_trades=0, winning_trades=0, round_trips=0, holding_ns=0,
                             maker_notional=0.0, taker_notional=0.0)
    for key in sorted(set(rows) | set(state)):
        s = state.get(key)
        r = rows.get(key)
        pos = float(s["pos"]) if s else 0.0
        mid = r["last_mid"] if r else (s["last_price"] if s else 0.0)
        unreal = pos * (mid - s["avg"]) if s and pos != 0 else 0.0
        m = dict(strategy=key[0], venue=key[1], symbol=key[2],
                 realized_pnl=s["realized"] if s else 0.0, unrealized_pnl=unreal,
                 fees=s["fees"] if s else 0.0, turnover=s["turnover"] if s else 0.0,
                 trades=s["trades"] if s else 0, closing_trades=s["closing"] if s else 0,
                 winning_trades=s["wins"] if s else 0, round_trips=s["round_trips"] if s else 0,
                 holding_ns=s["holding_ns"] if s else 0,
                 maker_notional=s["maker_notional"] if s else 0.0,
                 taker_notional=s["taker_notional"] if s else 0.0, final_position=pos)
        m["net_pnl"] = m["realized_pnl"] + unreal - m["fees"]
        if r:
            m.update(max_drawdown=r["max_dd"], mean_abs_position=r["mean_abs_position"],
                     max_abs_position=r["max_abs_position"], time_weighted_abs_position=r["twa_abs_position"],
                     max_gross_notional=r["max_gross"], marks=r["marks"])
            m["sharpe"], m["sortino"] = ratios(r, ppy)
        for k in agg:
            agg[k] += m[k]
        out_keys.append(m)
    total_m = dict(agg)
    total_m["net_pnl"] = agg["realized_pnl"] + agg["unrealized_pnl"] - agg["fees"]
    total_m["final_equity"] = start + total_m["net_pnl"]
    total_m["max_drawdown"] = tot["max_dd"]
    total_m["max_drawdown_pct"] = tot["max_dd_pct"]
    total_m["sharpe"], total_m["sortino"] = ratios(tot, ppy)
    total_m["win_rate"] = agg["winning_trades"] / agg["closing_trades"] if agg["closing_trades"] else None
    total_m["avg_holding_secs"] = agg["holding_ns"] / 1e9 / agg["round_trips"] if agg["round_trips"] else None
    mt = agg["maker_notional"] + agg["taker_notional"]
    total_m["maker_share"] = agg["maker_notional"] / mt if mt else None
    total_m["mean_gross_notional"], total_m["max_gross_notional"] = tot["mean_gross"], tot["max_gross"]
    t["end"] = time.perf_counter()

    timings = {"read_fills_s": t["read_fills"] - t["start"], "ledger_loop_s": t["ledger"] - t["read_fills"],
               "marks_join_and_metrics_s": t["marks"] - t["ledger"], "total_s": t["end"] - t["start"]}
    result = {"starting_balance": start, "periods_per_year": ppy, "total": total_m,
              "by_key": out_keys, "timings": timings, "fills": fills.height, "points": tot["points"]}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for k, v in timings.items():
            print(f"{k:>28}: {v:8.2f}")
        for k in ("realized_pnl", "fees", "net_pnl", "final_equity", "max_drawdown", "max_drawdown_pct",
                  "sharpe", "sortino", "trades", "win_rate", "avg_holding_secs", "maker_share"):
            print(f"{k:>28}: {total_m[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
