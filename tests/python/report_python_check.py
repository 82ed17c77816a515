#!/usr/bin/env python3
"""Cross-check `ticktape report --json` against an independent python-polars computation.

Usage: tests/python/report_python_check.py RUN_DIR JSON_FILE [--rel 1e-6]

Recomputes, from RUN_DIR's Parquet files and without sharing code with the Rust side:
  - realized PnL (average cost, position kept exactly with Decimal from `size_exact`),
  - fees, trade count (per strategy/venue/symbol and in total),
  - final equity  = starting_balance + realized + unrealized - fees,
  - max drawdown of the total equity curve closed by the final equity,
  - order statistics from orders.parquet (one row per state change): distinct orders by
    (strategy, venue, symbol, order_id), their final statuses, and the fill ratio
    Σ filled / Σ size over orders that were not rejected (total and per key),
  - markouts: per fill, the mid (as-of backward on its own strategy/venue/symbol's marks) at the fill and
    at +h, signed by side, in bps, averaged by strategy/venue/symbol/side/liquidity, for the
    horizons no finer than the marks; fills whose t+h is past the last mark have none.
The equity curve is built differently from the Rust code on purpose: per-key PnL at each mark
comes from `join_asof`, then the keys are pivoted wide, forward-filled and summed per timestamp.
Exits 0 when everything matches (relative tolerance --rel, absolute 1e-6), 1 on a mismatch
(each one printed), 2 on bad usage or unreadable input.
Needs: python3 -m venv venv && venv/bin/pip install polars pyarrow
"""

import argparse
import json
import os
import sys
from decimal import Decimal

import polars as pl

KEYS = ["strategy", "venue", "symbol"]


def ledger(fills: pl.DataFrame):
    """Average-cost replay; returns (per-fill state frame, per-key totals)."""
    state = {}
    rows = {"fill_ts": [], "strategy": [], "venue": [], "symbol": [],
            "position": [], "avg_cost": [], "cum_realized": [], "cum_fees": []}
    for ts, st, ve, sy, side, price, size_exact, fee in fills.select(
            "ts_ns", "strategy", "venue", "symbol", "side", "price", "size_exact", "fee").iter_rows():
        key = (st, ve, sy)
        s = state.setdefault(key, {"pos": Decimal(0), "avg": 0.0, "realized": 0.0, "fees": 0.0,
                                   "trades": 0, "last_price": 0.0})
        q = Decimal(size_exact)
        if side == "sell":
            q = -q
        pos = s["pos"]
        new = pos + q
        if pos == 0:
            s["avg"] = price
        elif (pos > 0) == (q > 0):
            held, add = float(abs(pos)), float(abs(q))
            s["avg"] = (held * s["avg"] + add * price) / (held + add)
        else:
            closed = min(float(abs(pos)), float(abs(q)))
            s["realized"] += closed * (price - s["avg"]) * (1 if pos > 0 else -1)
            if new == 0:
                s["avg"] = 0.0
            elif (new > 0) != (pos > 0):
                s["avg"] = price
        s["pos"] = new
        s["fees"] += fee or 0.0
        s["trades"] += 1
        s["last_price"] = price
        for name, v in (("fill_ts", ts), ("strategy", st), ("venue", ve), ("symbol", sy),
                        ("position", float(new)), ("avg_cost", s["avg"]),
                        ("cum_realized", s["realized"]), ("cum_fees", s["fees"])):
            rows[name].append(v)
    frame = pl.DataFrame(rows, schema={"fill_ts": pl.Int64, "strategy": pl.Utf8, "venue": pl.Utf8,
                                       "symbol": pl.Utf8, "position": pl.Float64,
                                       "avg_cost": pl.Float64, "cum_realized": pl.Float64,
                                       "cum_fees": pl.Float64})
    # Several fills at one instant: the as-of join must see the state after the last one.
    frame = frame.unique(subset=["fill_ts", *KEYS], keep="last", maintain_order=True)
    return frame, state


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("json_file")
    ap.add_argument("--rel", type=float, default=1e-6)
    args = ap.parse_args()
    try:
        with open(args.json_file) as f:
            report = json.load(f)
        summary = {}
        if os.path.isfile(os.path.join(args.run_dir, "summary.json")):
            with open(os.path.join(args.run_dir, "summary.json")) as f:
                summary = json.load(f)
        fills = (pl.read_parquet(os.path.join(args.run_dir, "fills.parquet"))
                 .with_columns(pl.col("ts").dt.epoch("ns").alias("ts_ns"))
                 .sort("ts_ns", "fill_id", maintain_order=True))
        marks = (pl.read_parquet(os.path.join(args.run_dir, "marks.parquet"))
                 .with_columns(pl.col("ts").dt.epoch("ns").alias("ts_ns"))
                 .filter(pl.col("mid").is_not_null())
                 .sort("ts_ns", maintain_order=True))
    except (OSError, ValueError, pl.exceptions.PolarsError) as e:
        print(f"cannot read inputs: {e}", file=sys.stderr)
        return 2

    # The report may have been run with an explicit balance; trust its echo of it.
    start = float(report.get("starting_balance", summary.get("starting_balance", 0.0)) or 0.0)
    frame, state = ledger(fills)

    joined = (marks.join_asof(frame, left_on="ts_ns", right_on="fill_ts", by=KEYS,
                              strategy="backward", check_sortedness=False)
              .with_columns(pl.col("position", "avg_cost", "cum_realized", "cum_fees").fill_null(0.0))
              .with_columns((pl.col("cum_realized") + pl.col("position") * (pl.col("mid") - pl.col("avg_cost"))
                             - pl.col("cum_fees")).alias("pnl"))
              .with_columns(pl.concat_str(KEYS, separator="/").alias("key")))
    wide = (joined.select("ts_ns", "key", "pnl")
            .pivot(on="key", index="ts_ns", values="pnl", aggregate_function="last")
            .sort("ts_ns"))
    key_cols = [c for c in wide.columns if c != "ts_ns"]
    equity = (wide.with_columns(pl.col(key_cols).forward_fill().fill_null(0.0))
              .select((pl.sum_horizontal(key_cols) + start).alias("equity")))["equity"]
    last_mid = {tuple(r[:3]): r[3] for r in joined.group_by(KEYS).agg(pl.col("mid").last()).iter_rows()}
    unrealized = 0.0
    for key, s in state.items():
        if s["pos"] != 0:
            unrealized += float(s["pos"]) * (last_mid.get(key, s["last_price"]) - s["avg"])
    realized = sum(s["realized"] for s in state.values())
    fees = sum(s["fees"] for s in state.values())
    trades = sum(s["trades"] for s in state.values())

    # The final equity (fills after the last mark included) is the curve's last point.
    final_equity = start + realized + unrealized - fees
    equity = pl.concat([equity, pl.Series("equity", [final_equity])])
    peak = equity.cum_max().clip(lower_bound=start)
    max_dd = float((peak - equity).max())
    expected = {
        "total.realized_pnl": realized,
        "total.fees": fees,
        "total.trades": trades,
        "total.final_equity": final_equity,
        "total.max_drawdown": max_dd,
    }
    got = {k: report["total"].get(k.split(".", 1)[1]) for k in expected}
    for key, s in state.items():
        name = "/".join(key)
        match = [k for k in report.get("by_key", []) if (k["strategy"], k["venue"], k["symbol"]) == key]
        m = match[0] if match else {}
        for field, value in (("realized_pnl", s["realized"]), ("fees", s["fees"]), ("trades", s["trades"])):
            expected[f"{name}.{field}"] = value
            got[f"{name}.{field}"] = m.get(field)

    orders_path = os.path.join(args.run_dir, "orders.parquet")
    if os.path.isfile(orders_path):
        # Last row per order by (ts, file order), taken with unique(keep="last") rather than
        # a group_by, so a mistake in one method does not hide in both.
        final = (pl.read_parquet(orders_path)
                 .with_row_index("row")
                 .sort("ts", "row")
                 .unique(subset=[*KEYS, "order_id"], keep="last", maintain_order=True))
        live = final.filter(pl.col("status") != "rejected")
        expected["orders.orders"] = final.height
        got["orders.orders"] = (report.get("orders") or {}).get("orders")
        ordered, filled = live["size"].sum(), live["filled"].sum()
        if ordered > 0:
            expected["orders.fill_ratio"] = filled / ordered
            got["orders.fill_ratio"] = (report.get("orders") or {}).get("fill_ratio")
        for status, n in final.group_by("status").len().iter_rows():
            expected[f"orders.by_status.{status}"] = n
            got[f"orders.by_status.{status}"] = ((report.get("orders") or {}).get("by_status") or {}).get(status)
        for key, part in final.group_by(KEYS):
            name = "/".join(key)
            match = [k for k in (report.get("orders") or {}).get("by_key", [])
                     if (k["strategy"], k["venue"], k["symbol"]) == tuple(key)]
            m = match[0] if match else {}
            expected[f"orders.{name}.orders"] = part.height
            got[f"orders.{name}.orders"] = m.get("orders")
            lp = part.filter(pl.col("status") != "rejected")
            if lp["size"].sum() > 0:
                expected[f"orders.{name}.fill_ratio"] = lp["filled"].sum() / lp["size"].sum()
                got[f"orders.{name}.fill_ratio"] = m.get("fill_ratio")

    # Markouts, with a plain join_asof per horizon (the Rust side joins the same way but
    # averages in Rust; here everything stays in polars).
    mo = report.get("markouts") or {}
    if mo.get("groups"):
        mids = marks.select("ts_ns", *KEYS, "mid").sort("ts_ns")
        last = mids.group_by(KEYS).agg(pl.col("ts_ns").max().alias("last_ts"))
        spacing = mids.group_by(KEYS).agg(pl.col("ts_ns").diff().median().alias("iv"))
        f = (fills.select("ts_ns", *KEYS, "side", "liquidity", "price")
             .join(last, on=KEYS, how="left")
             .join(spacing, on=KEYS, how="left"))
        sign = pl.when(pl.col("side") == "buy").then(1.0).otherwise(-1.0)
        f = f.join_asof(mids.rename({"ts_ns": "m_ts", "mid": "mid0"}), left_on="ts_ns",
                        right_on="m_ts", by=KEYS, strategy="backward",
                        check_sortedness=False).drop("m_ts")
        f = f.with_columns((sign * (pl.col("mid0") - pl.col("price")) / pl.col("mid0") * 1e4).alias("edge"))
        for i, h in enumerate(mo["horizons_ns"]):
            f = (f.with_columns((pl.col("ts_ns") + h).alias("t_h")).sort("t_h")
                 .join_asof(mids.rename({"ts_ns": "m_ts", "mid": "mh"}), left_on="t_h",
                            right_on="m_ts", by=KEYS, strategy="backward",
                            check_sortedness=False)
                 .with_columns(pl.when((pl.col("t_h") <= pl.col("last_ts")) & (pl.col("iv") <= h))
                               .then(sign * (pl.col("mh") - pl.col("mid0")) / pl.col("mid0") * 1e4)
                               .alias(f"mk{i}"))
                 .drop("m_ts", "mh", "t_h"))
        agg = f.group_by(*KEYS, "side", "liquidity").agg(
            pl.len().alias("fills"), pl.col("edge").mean(),
            *[pl.col(f"mk{i}").mean() for i in range(len(mo["horizons_ns"]))],
            *[pl.col(f"mk{i}").count().alias(f"n{i}") for i in range(len(mo["horizons_ns"]))])
        for row in agg.iter_rows(named=True):
            ident = (row["strategy"], row["venue"], row["symbol"], row["side"], row["liquidity"])
            name = "markouts." + "/".join(ident)
            match = [g for g in mo["groups"]
                     if (g["strategy"], g["venue"], g["symbol"], g["side"], g["liquidity"]) == ident]
            g = match[0] if match else {}
            expected[f"{name}.fills"] = row["fills"]
            got[f"{name}.fills"] = g.get("fills")
            if row["edge"] is not None:
                expected[f"{name}.edge_bps"] = row["edge"]
                got[f"{name}.edge_bps"] = g.get("edge_bps")
            for i, label in enumerate(mo["horizons"]):
                expected[f"{name}.n_{label}"] = row[f"n{i}"]
                got[f"{name}.n_{label}"] = (g.get("markout_fills") or [None] * 9)[i]
                if row[f"mk{i}"] is not None:
                    expected[f"{name}.{label}"] = row[f"mk{i}"]
                    got[f"{name}.{label}"] = (g.get("markout_bps") or [None] * 9)[i]

    bad = 0
    for k, want in expected.items():
        have = got.get(k)
        ok = have is not None and abs(have - want) <= 1e-6 + args.rel * max(abs(want), abs(have))
        if not ok:
            bad += 1
            print(f"MISMATCH {k}: report {have!r}, python {want!r}")
    print(f"{len(expected) - bad}/{len(expected)} values match "
          f"(realized {realized:.6f}, fees {fees:.6f}, trades {trades}, "
          f"final equity {expected['total.final_equity']:.6f}, max drawdown {max_dd:.6f})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
