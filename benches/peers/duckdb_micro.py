"""The per-card micro-workload in DuckDB, for `cargo bench --bench peers`.

Reads txns.csv (event_id, t, card_id, amount_minor, merchant_id; t = tidemark logical time
in ms), computes for every txn over the txns of the same card with t - 1h <= x.t < t:
count, sum(amount), count(distinct merchant), max(amount), t - max(x.t) -- the SPEC section 7
semantics, strictly before t -- and writes them to the output CSV sorted by event_id. Prints
one JSON line with the query's CPU and wall seconds (loading the CSV is not timed).

usage: duckdb_micro.py TXNS_CSV OUT_CSV THREADS
"""
import json
import sys
import time

import duckdb

src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(
    "CREATE TABLE txns AS SELECT * FROM read_csv(?, header = true, columns = "
    "{'event_id': 'VARCHAR', 't': 'BIGINT', 'card_id': 'VARCHAR', "
    "'amount_minor': 'BIGINT', 'merchant_id': 'VARCHAR'})",
    [src],
)
rows = con.execute("SELECT count(*) FROM txns").fetchone()[0]
query = """
SELECT event_id,
       count(*) OVER w AS cnt,
       coalesce(sum(amount_minor) OVER w, 0) AS total,
       count(DISTINCT merchant_id) OVER w AS merchants,
       max(amount_minor) OVER w AS max_amount,
       t - max(t) OVER w AS gap
FROM txns
WINDOW w AS (PARTITION BY card_id ORDER BY t
             RANGE BETWEEN 3600000 PRECEDING AND 1 PRECEDING)
"""
cpu0, wall0 = time.process_time(), time.perf_counter()
result = con.execute(f"CREATE TABLE result AS {query}")
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
con.execute(f"COPY (SELECT * FROM result ORDER BY event_id) TO '{out}' (HEADER, DELIMITER ',')")
print(json.dumps({"rows": rows, "cpu_s": cpu, "wall_s": wall, "version": duckdb.__version__}))
