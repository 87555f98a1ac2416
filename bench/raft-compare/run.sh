#!/usr/bin/env bash
# Builds both harnesses and runs each group count twice, pinned to CPU 1.
#   bench/raft-compare/run.sh [raft-rs counts] [openraft counts]
# e.g. run.sh "1 1000 10000" "1 1000 3000 10000"
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release"
rs_counts="${1:-1 1000 10000}"
or_counts="${2:-1 1000 3000 10000}"
cpu="${RAFT_COMPARE_CPU:-1}"
for round in 1 2; do
  echo "# round $round, $(uptime)"
  # shellcheck disable=SC2086
  taskset -c "$cpu" "$bin/raftrs" $rs_counts
  # shellcheck disable=SC2086
  taskset -c "$cpu" "$bin/openraft" $or_counts
done
