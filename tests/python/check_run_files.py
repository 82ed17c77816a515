#!/usr/bin/env python3
"""Reads a run directory's orders/fills/marks.parquet with pyarrow (page checksums
verified), python polars and DuckDB, and checks the three readers agree on every file:
the documented column types, row counts, null counts and sums of the numeric columns.

Usage: check_run_files.py RUN_DIR [MIN_ROWS_EACH]

The run files are written by ticktape's own Parquet writer (src/store/table.rs); this is
the check that other readers see them as the report does. Exits 0 when all agree."""
import math
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

run = sys.argv[1]
min_rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1

TS = pa.timestamp("ns", tz="UTC")
S, F, U = pa.string(), pa.float64(), pa.uint64()
SCHEMAS = {
    "orders": [("ts", TS), ("strategy", S), ("venue", S), ("symbol", S), ("order_id", U),
               ("client_order_id", S), ("side", S), ("order_type", S), ("tif", S),
               ("price", F), ("size", F), ("filled", F), ("status", S), ("reason", S)],
    "fills": [("ts", TS), ("strategy", S), ("venue", S), ("symbol", S), ("order_id", U),
              ("client_order_id", S), ("fill_id", U), ("side", S), ("price", F), ("size", F),
              ("price_exact", S), ("size_exact", S), ("fee", F), ("liquidity", S)],
    "marks": [("ts", TS), ("strategy", S), ("venue", S), ("symbol", S), ("mid", F),
              ("position", F)],
}

failures = []


def close(a, b):
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9))


for name, columns in SCHEMAS.items():
    path = f"{run}/{name}.parquet"
    meta = pq.read_metadata(path)
    if meta.metadata.get(b"ticktape.schema") != b"exchange-v1":
        failures.append(f"{name}: schema version {meta.metadata.get(b'ticktape.schema')}")
    table = pq.read_table(path, page_checksum_verification=True)
    got = [(f.name, f.type) for f in table.schema]
    if got != columns:
        failures.append(f"{name}: pyarrow schema {got}")
    rows = table.num_rows
    if rows < min_rows:
        failures.append(f"{name}: {rows} rows, expected at least {min_rows}")
    frame = pl.read_parquet(path)
    con = duckdb.connect()
    duck_rows = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
    if not (rows == frame.height == duck_rows):
        failures.append(f"{name}: rows pyarrow {rows}, polars {frame.height}, duckdb {duck_rows}")
    if str(frame.schema["ts"]) != "Datetime(time_unit='ns', time_zone='UTC')":
        failures.append(f"{name}: polars ts {frame.schema['ts']}")
    for col, ty in columns:
        nulls = (table.column(col).null_count, frame[col].null_count(),
                 con.execute(f"select count(*) - count({col}) from read_parquet('{path}')").fetchone()[0])
        if len(set(nulls)) != 1:
            failures.append(f"{name}.{col}: null counts {nulls}")
        if ty in (F, U):
            sums = (pc.sum(table.column(col)).as_py(), frame[col].sum(),
                    con.execute(f"select sum({col}) from read_parquet('{path}')").fetchone()[0])
            sums = tuple(None if s is None else float(s) for s in sums)
            if not (close(sums[0], sums[1]) and close(sums[0], sums[2])):
                failures.append(f"{name}.{col}: sums {sums}")
        if ty == S and rows:
            firsts = (table.column(col)[0].as_py(), frame[col][0],
                      con.execute(f"select {col} from read_parquet('{path}') limit 1").fetchone()[0])
            if len(set(firsts)) != 1:
                failures.append(f"{name}.{col}: first values {firsts}")
    # Times as every reader sees them.
    if rows:
        lo = (table.column("ts")[0].value, frame["ts"].dt.epoch("ns")[0])
        if lo[0] != lo[1]:
            failures.append(f"{name}: first ts {lo}")
    print(f"{name}: {rows} rows, {meta.num_row_groups} row groups, read alike by pyarrow, polars, duckdb")

if failures:
    print("\n".join(failures))
    sys.exit(1)
