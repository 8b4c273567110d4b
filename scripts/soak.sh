#!/usr/bin/env bash
# Soak (not in CI, which runs seed 11 for 1x1, 12 for 1x2, 13 for 2x1): the kill
# matrix of jobs/tests/service.rs (3 SIGKILLs at random progress points, one during recovery,
# for 1x1, 1x2 and 2 processes x 1) over many world seeds, plus
# the broker hard-bounce scenario. One line per seed and topology.
#   scripts/soak.sh [SEEDS]        default: 20 seeds, 101..120
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install-tansu.sh >/dev/null
python3 -m pip install --quiet --disable-pip-version-check kafka-python==3.0.12
cargo test -p tidemark --test service --no-run --locked >/dev/null 2>&1
n=${1:-20}
fail=0
for seed in $(seq 101 $((100 + n))); do
  for t in kill_matrix_one_worker kill_matrix_two_workers kill_matrix_two_processes broker_hard_bounces_lose_and_duplicate_nothing; do
    start=$(date +%s)
    if out=$(TIDEMARK_KILL_SEED=$seed cargo test -q -p tidemark --test service --locked "$t" -- --exact 2>&1); then
      echo "seed $seed $t: OK ($(( $(date +%s) - start ))s)"
    else
      fail=$((fail + 1))
      echo "seed $seed $t: FAILED — $(echo "$out" | grep -m1 -A2 panicked | tr '\n' ' ')"
    fi
  done
done
echo "soak: $fail failure(s)"
[ "$fail" -eq 0 ]
