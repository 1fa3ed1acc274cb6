#!/usr/bin/env bash
# A long fuzzing pass (tests/fuzz.rs) against a release build: CASES random and mutated
# requests (default 20,000), optionally with a fixed SEED to replay a run.
#
#   bench/fuzz.sh [CASES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_CASES=${1:-20000}
[ -n "${2:-}" ] && export FUZZ_SEED=$2
cargo test --release --test fuzz -- --nocapture
