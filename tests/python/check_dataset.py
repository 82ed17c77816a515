"""Reads a ticktape dataset with pyarrow, python polars and DuckDB, each with one glob,
and checks every reader sees the expected number of market-data rows (kind != 'gap')
with the documented schema. Usage: check_dataset.py DATASET EXPECTED_ROWS"""
import glob
import sys

import duckdb
import polars as pl
import pyarrow.dataset as pads
import pyarrow.parquet as pq

root, expected = sys.argv[1], int(sys.argv[2])
pattern = f"{root}/*/*/*/*.parquet"
files = sorted(glob.glob(pattern))
assert files, f"no parquet files match {pattern}"

# Every file is complete and readable on its own, with the schema version in its metadata.
for f in files:
    meta = pq.read_metadata(f).metadata
    assert meta[b"ticktape.schema_version"] == b"1", f
    pq.read_table(f)

table = pads.dataset(files, format="parquet").to_table()
n_arrow = sum(1 for k in table.column("kind").to_pylist() if k != "gap")

df = pl.scan_parquet(pattern).filter(pl.col("kind") != "gap").select(pl.len()).collect()
n_polars = df.item()

con = duckdb.connect()
n_duck = con.execute(f"select count(*) from read_parquet('{pattern}') where kind <> 'gap'").fetchone()[0]

# Exact decimals: price / 10^price_scale reconstructs the venue's number.
px = con.execute(
    f"select price, price_scale from read_parquet('{pattern}') where kind = 'book' limit 1"
).fetchone()
assert px is None or px[1] is not None

print(f"pyarrow {n_arrow} polars {n_polars} duckdb {n_duck} expected {expected}")
assert n_arrow == n_polars == n_duck == expected, "readers disagree with the expected row count"
