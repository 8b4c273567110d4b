#!/usr/bin/env bash
# The README's test command: every unit, oracle, determinism, end-to-end and Kafka test.
# Installs what the tests need first (no-ops once done): the tansu broker and the tidemark-s3d
# S3-protocol server (cached builds under ~/.cache/tidemark), kafka-python for the third-party
# client and SCRAM tests, cryptography for the TLS proxy's test certificates, and pyarrow,
# DuckDB and polars, which read the training datasets as an ML user would.
#
# Runs the tests with cargo-nextest when it is installed (test binaries side by side, each test
# in its own process; .config/nextest.toml keeps the service scenarios and the decision oracles
# one at a time), else with `cargo test`. Extra arguments go to the runner.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-tansu.sh
./scripts/install-s3d.sh
python3 -m pip install --quiet --disable-pip-version-check kafka-python==3.0.12 cryptography==48.0.0 \
    pyarrow==26.0.1 duckdb==2.0.0 polars==2.1.0
# `failpoints` compiles the crash points the restart tests use (never in release builds).
features=(--workspace --locked --features tidemark/failpoints)
if cargo nextest --version >/dev/null 2>&1 && [ "${TIDEMARK_TEST_RUNNER:-nextest}" = nextest ]; then
    cargo nextest run "${features[@]}" "$@"
    # nextest does not run doc tests.
    cargo test --doc "${features[@]}"
else
    cargo test "${features[@]}" "$@"
fi
