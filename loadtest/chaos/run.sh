#!/usr/bin/env bash
# The chaos suite in one command: every scenario of tests/integration/chaos.rs, audited,
# with the report in target/chaos/report.md (per-request logs in target/chaos/runs/).
#
#   loadtest/chaos/run.sh            # CHAOS_PROFILE=full, CHAOS_RUNS=3 (each scenario 3x in a row)
#   loadtest/chaos/run.sh --smoke    # the CI profile, one run each
#   loadtest/chaos/run.sh redis      # extra arguments go to the test binary: a name filter
#                                    # (within chaos::) or a libtest flag
#
# CHAOS_RUNS and RUST_TEST_THREADS in the environment override the defaults. The full
# profile runs one scenario at a time (RUST_TEST_THREADS=1) so the latencies are the
# gateway's, not the neighbours'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

profile=full
runs=${CHAOS_RUNS:-3}
threads=${RUST_TEST_THREADS:-1}
if [ "${1:-}" = "--smoke" ]; then
  profile=smoke
  runs=${CHAOS_RUNS:-1}
  threads=${RUST_TEST_THREADS:-4}
  shift
fi

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/local/bin/redis-server ]; then
  echo "error: redis-server not found: ./scripts/test.sh installs it (or apt-get install -y redis-server)" >&2
  exit 1
fi
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "error: rabbitmq-server not found (scenario rabbitmq-kill): ./scripts/test.sh installs it (or apt-get install -y rabbitmq-server)" >&2
  exit 1
fi

# The chaos tests are the `chaos::` module of the one integration-test binary: a filter
# `redis` becomes `chaos::redis`, and no filter `chaos::`.
args=()
filters=0
for a in "$@"; do
  case "$a" in
    -*) args+=("$a") ;;
    *) args+=("chaos::$a"); filters=$((filters + 1)) ;;
  esac
done
[ "$filters" -gt 0 ] || args+=("chaos::")

echo "==> chaos: profile $profile, $runs run(s) per scenario, $threads at a time" >&2
start=$(date +%s)
status=0
CHAOS_PROFILE=$profile CHAOS_RUNS=$runs RUST_TEST_THREADS=$threads \
  cargo test --release --test integration -- --nocapture "${args[@]}" || status=$?
echo "==> chaos: $(( $(date +%s) - start )) s; report: target/chaos/report.md" >&2
exit "$status"
