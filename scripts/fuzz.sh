#!/usr/bin/env bash
# Fuzzes every parser that reads attacker bytes (tests/fuzz.rs, proptest on stable Rust):
# X-Forwarded-For / client IP, X-Request-Id and Host, Flashgate-Signature, the buy and
# callback bodies, the config loader. Not part of ./scripts/test.sh or CI.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 300        # 5 minutes per target
#   scripts/fuzz.sh 60 buy     # only targets whose name contains "buy"
#
# Each target runs random cases until its time is up and prints how many it ran; a
# failure prints the shrunk input and exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
filter="${2:-}"
export FUZZ_SECONDS="$seconds"
# One target at a time, so each gets its full time on one core.
exec cargo test --release --features fuzz --test fuzz -- --test-threads 1 --nocapture $filter
