#!/usr/bin/env python3
"""Write a synthetic run directory for benchmarking `ticktape report`.

Usage: scripts/gen_report_bench.py OUT_DIR [--marks 10000000] [--fills 1000000] [--keys 4] [--seed 7]

Writes OUT_DIR/{fills,marks,orders}.parquet and summary.json with exactly the schemas the
simulated exchange writes (see docs/REPORT.md): Timestamp(ns, UTC) `ts`, zstd compression.
Each (strategy, symbol) key gets one mark per simulated second (a random-walk mid) and
fills at random seconds near the mid, so positions go long, short and through zero.
Needs: pip install polars numpy
"""

import argparse
import json
import os
import time

import numpy as np
import polars as pl

T0_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01 00:00:00 UTC
SEC = 1_000_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--marks", type=int, default=10_000_000)
    ap.add_argument("--fills", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    started = time.time()

    strategies = ["mm", "trend"]
    symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
    keys = list(dict.fromkeys(
        (strategies[i % 2], symbols[(i // 2) % len(symbols)]) for i in range(args.keys)))
    n_keys = len(keys)
    secs_per_key = args.marks // n_keys
    fills_per_key = args.fills // n_keys
    base_price = {"BTC-USDT": 40_000.0, "ETH-USDT": 2_300.0, "SOL-USDT": 100.0, "XRP-USDT": 0.6}

    marks_parts, fills_parts = [], []
    fill_id = 0
    for strategy, symbol in keys:
        p0 = base_price[symbol]
        steps = rng.normal(0.0, 2e-4, secs_per_key)
        mid = p0 * np.exp(np.cumsum(steps))
        mid = np.round(mid, 2 if p0 > 10 else 4)
        fill_sec = np.sort(rng.choice(secs_per_key, size=fills_per_key, replace=True))
        side_buy = rng.random(fills_per_key) < 0.5
        lots = rng.integers(1, 100, fills_per_key)  # size = lots / 1000, exact in size_exact
        pos_lots = np.cumsum(np.where(side_buy, lots, -lots))
        maker = rng.random(fills_per_key) < 0.6
        half_spread = mid[fill_sec] * 5e-5
        price = np.where(side_buy, mid[fill_sec] - np.where(maker, half_spread, -half_spread),
                         mid[fill_sec] + np.where(maker, half_spread, -half_spread))
        price = np.round(price, 2 if p0 > 10 else 4)
        size = lots / 1000.0
        notional = price * size
        fee = np.where(maker, -0.0001 * notional, 0.0004 * notional)
        # Fill timestamps: inside the second, so a mark at that second sees the fill only
        # if it happened at or before the mark.
        fts = T0_NS + fill_sec.astype(np.int64) * SEC + rng.integers(0, SEC, fills_per_key)
        fts.sort()
        ids = np.arange(fill_id + 1, fill_id + 1 + fills_per_key, dtype=np.uint64)
        fill_id += fills_per_key
        fills_parts.append(pl.DataFrame({
            "ts": fts, "strategy": strategy, "venue": "sim", "symbol": symbol,
            "order_id": ids, "client_order_id": None, "fill_id": ids,
            "side": np.where(side_buy, "buy", "sell"), "price": price, "size": size,
            "price_exact": None, "lots": lots, "fee": fee,
            "liquidity": np.where(maker, "maker", "taker"),
        }))
        mts = T0_NS + np.arange(secs_per_key, dtype=np.int64) * SEC
        # Position at each mark = cumulative fills with ts <= mark ts.
        idx = np.searchsorted(fts, mts, side="right")
        pos = np.concatenate([[0], pos_lots])[idx] / 1000.0
        marks_parts.append(pl.DataFrame({
            "ts": mts, "strategy": strategy, "venue": "sim", "symbol": symbol,
            "mid": mid, "position": pos,
        }))

    utc = pl.Datetime("ns", "UTC")
    fills = (
        pl.concat(fills_parts)
        .with_columns(
            pl.col("ts").cast(utc),
            pl.col("client_order_id").fill_null(pl.format("c{}", pl.col("order_id"))).cast(pl.Utf8),
            pl.col("price").cast(pl.Utf8).alias("price_exact"),
            pl.format("{}.{}", pl.col("lots") // 1000,
                      (pl.col("lots") % 1000).cast(pl.Utf8).str.zfill(3)).alias("size_exact"),
        )
        .sort("ts", "fill_id")
        .select("ts", "strategy", "venue", "symbol", "order_id", "client_order_id", "fill_id",
                "side", "price", "size", "price_exact", "size_exact", "fee", "liquidity")
    )
    marks = pl.concat(marks_parts).with_columns(pl.col("ts").cast(utc)).sort("ts", maintain_order=True)
    orders = fills.select(
        "ts", "strategy", "venue", "symbol", "order_id", "client_order_id", "side",
        pl.lit("limit").alias("order_type"), pl.lit("gtc").alias("tif"),
        pl.col("price").cast(pl.Float64), "size", pl.col("size").alias("filled"),
        pl.lit("filled").alias("status"), pl.lit(None, dtype=pl.Utf8).alias("reason"),
    )
    fills.write_parquet(os.path.join(args.out_dir, "fills.parquet"), compression="zstd")
    marks.write_parquet(os.path.join(args.out_dir, "marks.parquet"), compression="zstd")
    orders.write_parquet(os.path.join(args.out_dir, "orders.parquet"), compression="zstd")
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump({"starting_balance": 1_000_000.0, "scenario": "bench-synthetic",
                   "marks": marks.height, "fills": fills.height}, f, indent=2)
    print(f"wrote {marks.height} marks, {fills.height} fills, {n_keys} keys to {args.out_dir} "
          f"in {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
