"""Rewrites a Parquet file with pyarrow, with a CRC32 in every page header
(`write_page_checksum=True`), as another tool's files may come.

Usage: rewrite_with_page_crcs.py SOURCE DEST"""
import sys

import pyarrow.parquet as pq

source, dest = sys.argv[1], sys.argv[2]
table = pq.read_table(source)
pq.write_table(table, dest, compression="zstd", write_page_checksum=True)
# The page index and statistics are pyarrow's; what matters here is the CRCs.
assert pq.ParquetFile(dest).metadata.num_rows == table.num_rows
