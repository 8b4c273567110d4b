#!/usr/bin/env bash
# The README's test command: every unit, oracle, determinism and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
