"""Reads a tidemark dataset directory with pyarrow, DuckDB and polars, as an ML user would.

Usage: python3 check_dataset.py DATASET_DIR

Checks, independently of tidemark's own code: every file reads as-is with the expected column
types; row counts, label counts, null counts and min/max per feature agree with the manifest;
and the dataset hash recomputed from the rows (docs/datasets.md) equals the manifest's.
Prints one line per reader and exits non-zero on the first disagreement.
"""

import glob
import hashlib
import json
import os
import struct
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main(d):
    with open(os.path.join(d, "manifest.json")) as f:
        m = json.load(f)
    files = sorted(glob.glob(os.path.join(d, "*.parquet")))
    if [os.path.basename(p) for p in files] != [f["path"] for f in m["files"]]:
        fail(f"files {files} differ from the manifest's")
    layout = m["layout"]
    features = layout["features"] + ["cluster_size", "cluster_cards"]

    # pyarrow: types as documented.
    table = pa.concat_tables([pq.read_table(p) for p in files])
    ts = pa.timestamp("ms", tz="UTC")
    expect = {
        "event_id": pa.string(),
        "decision_id": pa.string(),
        "logical_time": pa.uint64(),
        "ts_utc": ts,
        "score": pa.float64(),
        "decision": pa.string(),
        "posture": pa.string(),
        "label": pa.string(),
        "label_effective_ts": ts,
        "label_observed_ts": ts,
        "label_assertion_id": pa.string(),
    }
    expect.update({k: pa.string() for k in layout["key_fields"]})
    expect.update({f: pa.int64() for f in features})
    if layout["split"]:
        expect["split"] = pa.string()
    for name, ty in expect.items():
        if table.schema.field(name).type != ty:
            fail(f"pyarrow: column {name} is {table.schema.field(name).type}, expected {ty}")
    if not pa.types.is_list(table.schema.field("degrade_mask").type):
        fail("pyarrow: degrade_mask is not a list")
    if table.num_rows != m["rows"]:
        fail(f"pyarrow: {table.num_rows} rows, manifest says {m['rows']}")
    print(f"pyarrow: {table.num_rows} rows, {table.num_columns} columns, types as documented")

    # DuckDB: the glob of files as one table; label counts.
    con = duckdb.connect()
    pattern = os.path.join(d, "*.parquet")
    n, fraud, legit, unknown = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE label = 'fraud'),"
        " count(*) FILTER (WHERE label = 'legit'), count(*) FILTER (WHERE label IS NULL)"
        f" FROM read_parquet('{pattern}')"
    ).fetchone()
    labels = m["stats"]["labels"]
    if (n, fraud, legit, unknown) != (m["rows"], labels["fraud"], labels["legit"], labels["unknown"]):
        fail(f"duckdb: rows/labels {(n, fraud, legit, unknown)} differ from the manifest's {labels}")
    kinds = dict(con.execute(f"DESCRIBE SELECT * FROM read_parquet('{pattern}')").fetchall()[i][:2]
                 for i in range(table.num_columns))
    if kinds["ts_utc"] != "TIMESTAMP WITH TIME ZONE" or kinds[features[0]] != "BIGINT":
        fail(f"duckdb: unexpected types {kinds}")
    print(f"duckdb: {n} rows (fraud {fraud}, legit {legit}, unknown {unknown})")

    # polars: nulls, min and max per feature.
    df = pl.read_parquet(files)
    if df.height != m["rows"]:
        fail(f"polars: {df.height} rows")
    if df.schema["ts_utc"] != pl.Datetime("ms", "UTC"):
        fail(f"polars: ts_utc is {df.schema['ts_utc']}")
    for s in m["stats"]["features"]:
        col = df[s["name"]]
        got = (col.null_count(), col.min(), col.max())
        if got != (s["nulls"], s["min"], s["max"]):
            fail(f"polars: {s['name']} nulls/min/max {got}, manifest {s}")
    print(f"polars: {df.height} rows; nulls, min and max of {len(features)} features agree")

    # The dataset hash, recomputed from the rows as docs/datasets.md defines it.
    names = [f["name"] for f in m["columns"]]
    h = hashlib.sha256()
    h.update(json.dumps(names, separators=(",", ":"), ensure_ascii=False).encode())
    h.update(b"\n")
    cols = {}
    for name in names:
        c = table.column(name)
        if pa.types.is_timestamp(c.type):
            c = c.cast(pa.int64())
        cols[name] = c.to_pylist()
    order = sorted(range(table.num_rows), key=lambda i: (cols["logical_time"][i], cols["event_id"][i].encode()))
    for i in order:
        row = []
        for name in names:
            v = cols[name][i]
            if name == "score":
                v = struct.pack(">d", v).hex()
            row.append(v)
        h.update(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode())
        h.update(b"\n")
    if h.hexdigest() != m["dataset_hash"]:
        fail(f"dataset hash {h.hexdigest()} differs from the manifest's {m['dataset_hash']}")
    print(f"dataset hash recomputed in Python: {h.hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1])
