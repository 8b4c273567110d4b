#!/usr/bin/env bash
# Installs the S3-protocol server the tests run against (scripts/s3d: s3s-fs from crates.io
# with conditional writes made atomic) into a cache outside the repository, once per source
# revision: $HOME/.cache/tidemark/s3d-<digest>/bin/tidemark-s3d. A cold build takes about
# 3 minutes on a 2-core machine; later calls return at once. Tests find the binary through
# TIDEMARK_S3D, else this cache.
set -euo pipefail
cd "$(dirname "$0")/s3d"
DIGEST=$(cat Cargo.toml Cargo.lock src/*.rs | sha256sum | cut -c1-16)
ROOT="${TIDEMARK_S3D_ROOT:-$HOME/.cache/tidemark/s3d-$DIGEST}"
if [ -x "$ROOT/bin/tidemark-s3d" ]; then
  echo "tidemark-s3d: $ROOT/bin/tidemark-s3d"
  exit 0
fi
echo "tidemark-s3d: building into $ROOT"
# Its own target directory: nothing else built from this tree can end up in the cache.
cargo install --locked --path . --root "$ROOT" --target-dir "$ROOT/build"
rm -rf "$ROOT/build"
mkdir -p "$HOME/.cache/tidemark"
ln -sfn "$ROOT" "$HOME/.cache/tidemark/s3d-current"
echo "tidemark-s3d: $ROOT/bin/tidemark-s3d"
