#!/bin/bash
# Fault drill: SIGKILL `lariat server` CYCLES times (default 1000) while REST clients keep
# INFLIGHT runs (default 200) going, then check every run's history: runs lost, signals
# lost, duplicated runs, duplicated completions, gaps, unfinished runs (target: all 0).
# Prints ONE JSON object on stdout (lariat-bench kill-drill); progress goes to stderr.
# Env: CYCLES, INFLIGHT, DURABILITY (full), CARGO_TARGET_DIR (target).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
echo "building lariat and lariat-bench (release)..." >&2
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p lariat -p lariat-bench) >&2
exec "$TARGET/release/lariat-bench" kill-drill --lariat "$TARGET/release/lariat" \
  --cycles "${CYCLES:-1000}" --inflight "${INFLIGHT:-200}" --durability "${DURABILITY:-full}"
