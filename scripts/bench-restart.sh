#!/usr/bin/env bash
# Restart cost against window length (not in CI). Starts tansu, produces a world of N records
# (default 200k at 100/s: 33 minutes of event time) into fp.bus.ingress.v1, then per window
# setting (every feature window, edge TTL and dedup window at 10m, or the shipped 24h):
#   - a full bounded run from scratch (reference cost);
#   - the continuous service (-w 2), killed with SIGKILL once 6 commits exist;
#   - `run --until latest` on that root: resume from the commit, rebuild state, finish.
# Prints wall and CPU seconds of each.   scripts/bench-restart.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-tansu.sh >/dev/null
cargo build --release -p tidemark --locked >/dev/null 2>&1
T=$PWD/target/release/tidemark
P=$PWD/tests/profiles/service.toml
W=$(mktemp -d)
trap '$T broker stop --state $W/b >/dev/null 2>&1 || true; rm -rf $W' EXIT
PORT=$((20000 + RANDOM % 10000))
B=127.0.0.1:$PORT
$T broker start --port $PORT --state $W/b >/dev/null
$T world --to kafka --brokers $B --events "${1:-200000}" --seed 9
sed -e 's/window = "24h"/window = "10m"/; s/window = "1h"/window = "10m"/; s/edge_ttl = "24h"/edge_ttl = "10m"/; s/dedup_window = "24h"/dedup_window = "10m"/; 0,/^name = .*/s//name = "short-windows"/' $P > $W/short.toml
for prof in $W/short.toml $P; do
  name=$(basename $prof .toml)
  /usr/bin/time -f "$name: full bounded run: %e s wall, %U+%S CPU-s" \
    $T run --profile $prof --brokers $B --data $W/full-$name -w 2 --until latest --no-publish >/dev/null
  $T run --profile $prof --brokers $B --data $W/rs-$name -w 2 --no-publish >/dev/null 2>&1 & pid=$!
  until [ "$(ls $W/rs-$name/ckpt/commits 2>/dev/null | wc -l)" -ge 6 ]; do sleep 0.1; done
  kill -9 $pid; wait $pid 2>/dev/null || true
  /usr/bin/time -f "$name: SIGKILL, then resume + finish: %e s wall, %U+%S CPU-s" \
    $T run --profile $prof --brokers $B --data $W/rs-$name -w 2 --until latest --no-publish 2>&1 | grep -E "resuming"
done
