#!/usr/bin/env bash
# Installs the local Kafka-protocol broker (tansu, from crates.io) into a cache outside the
# repository, once: $HOME/.cache/tidemark/tansu-<version>/bin/tansu. A cold build takes about
# 12 minutes on a 2-core machine; later calls return at once. tidemark finds the binary there
# (or through TIDEMARK_TANSU, or on PATH).
set -euo pipefail
VERSION=0.6.0
ROOT="${TIDEMARK_TANSU_ROOT:-$HOME/.cache/tidemark/tansu-$VERSION}"
if [ -x "$ROOT/bin/tansu" ]; then
  echo "tansu $VERSION: $ROOT/bin/tansu"
  exit 0
fi
echo "tansu $VERSION: building into $ROOT (memory and SQLite storage engines)"
cargo install tansu --version "=$VERSION" --locked --no-default-features \
  --features dynostore,libsql --root "$ROOT"
echo "tansu $VERSION: $ROOT/bin/tansu"
