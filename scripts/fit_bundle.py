#!/usr/bin/env python3
"""Fit the default bundle's weights on a generated world (offline, reproducible).

Usage: tidemark demo --events 300000 --dir /tmp/fit   (any run with audit files and truth.csv)
       python3 scripts/fit_bundle.py /tmp/fit/data /tmp/fit/ingress/truth.csv

Reads the feature vectors DF used (dla/audit/*.parquet, column `features`), labels them with the
world's ground truth, and fits an L2-regularised logistic regression on log1p(features) by
batch gradient descent (fixed iterations, no randomness). Prints weights rounded to 2 decimals
to paste into profiles/bundles/default.toml. Needs pyarrow.
"""
import glob, json, math, sys

import pyarrow.parquet as pq

data, truth_csv = sys.argv[1], sys.argv[2]
truth = set(l.split(",")[0] for l in open(truth_csv).read().splitlines()[1:])
X, y, names = [], [], None
for f in sorted(glob.glob(f"{data}/dla/audit/*/*.parquet")):
    t = pq.read_table(f).to_pydict()
    for i in range(len(t["event_id"])):
        if t["posture"][i] != "NORMAL":
            continue
        feats = json.loads(t["features"][i])
        names = [n for n, _ in feats]
        X.append([math.log1p(max(v, 0)) if v is not None else 0.0 for _, v in feats])
        y.append(1.0 if t["event_id"][i] in truth else 0.0)
n, d = len(X), len(names)
pos = sum(y)
# Balance classes: fraud rows weigh as much in total as legit rows.
sw = [0.5 / pos if yi else 0.5 / (n - pos) for yi in y]
w, b, lr, l2 = [0.0] * d, 0.0, 2.0, 1e-4
for it in range(600):
    gw, gb = [0.0] * d, 0.0
    for xi, yi, si in zip(X, y, sw):
        z = b + sum(wj * xj for wj, xj in zip(w, xi))
        p = 1 / (1 + math.exp(-max(min(z, 30), -30)))
        g = (p - yi) * si
        gb += g
        for j in range(d):
            gw[j] += g * xi[j]
    b -= lr * gb
    w = [wj - lr * (gj + l2 * wj) for wj, gj in zip(w, gw)]
print(f"intercept = {b:.2f}")
for nm, wj in zip(names, w):
    print(f"{nm:32s} weight = {wj:.2f}")
