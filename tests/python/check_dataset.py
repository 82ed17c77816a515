"""Reads a ticktape dataset with pyarrow, python polars and DuckDB, each with one glob,
and checks every reader sees the expected number of market-data rows (kind != 'gap')
with the documented schema.

Usage: check_dataset.py DATASET EXPECTED_ROWS [EXPECTED_GAP_ROWS] [--unique-pub-seq]

With EXPECTED_GAP_ROWS every reader must also see that many gap rows. With
--unique-pub-seq no (kind, venue, symbol, pub_seq) may appear twice among market-data
rows (true for a dataset recorded from one publisher: exactly-once)."""
import glob
import sys

import duckdb
import polars as pl
import pyarrow.dataset as pads
import pyarrow.parquet as pq

args = [a for a in sys.argv[1:] if not a.startswith("--")]
flags = {a for a in sys.argv[1:] if a.startswith("--")}
root, expected = args[0], int(args[1])
expected_gaps = int(args[2]) if len(args) > 2 else None
pattern = f"{root}/*/*/*/*.parquet"
files = sorted(glob.glob(pattern))
assert files, f"no parquet files match {pattern}"

# Every file is complete and readable on its own, with the schema version in its metadata.
for f in files:
    meta = pq.read_metadata(f).metadata
    assert meta[b"ticktape.schema_version"] == b"1", f
    pq.read_table(f)

table = pads.dataset(files, format="parquet").to_table()
kinds = table.column("kind").to_pylist()
n_arrow = sum(1 for k in kinds if k != "gap")
g_arrow = sum(1 for k in kinds if k == "gap")

lf = pl.scan_parquet(pattern)
n_polars = lf.filter(pl.col("kind") != "gap").select(pl.len()).collect().item()
g_polars = lf.filter(pl.col("kind") == "gap").select(pl.len()).collect().item()

con = duckdb.connect()
src = f"read_parquet('{pattern}')"
n_duck = con.execute(f"select count(*) from {src} where kind <> 'gap'").fetchone()[0]
g_duck = con.execute(f"select count(*) from {src} where kind = 'gap'").fetchone()[0]

# Exact decimals: price / 10^price_scale reconstructs the venue's number.
px = con.execute(f"select price, price_scale from {src} where kind = 'book' limit 1").fetchone()
assert px is None or px[1] is not None

print(f"pyarrow {n_arrow} polars {n_polars} duckdb {n_duck} expected {expected}")
assert n_arrow == n_polars == n_duck == expected, "readers disagree with the expected row count"
print(f"gap rows: pyarrow {g_arrow} polars {g_polars} duckdb {g_duck} expected {expected_gaps}")
assert g_arrow == g_polars == g_duck, "readers disagree on gap rows"
if expected_gaps is not None:
    assert g_duck == expected_gaps, "gap rows differ from the expected count"

if "--unique-pub-seq" in flags:
    twice = con.execute(
        f"""select count(*) from (select kind, venue, symbol, pub_seq from {src}
            where kind <> 'gap' group by all having count(*) > 1)"""
    ).fetchone()[0]
    print(f"(kind, venue, symbol, pub_seq) stored more than once: {twice}")
    assert twice == 0, "an event is stored twice"
