#!/usr/bin/env bash
# The reserve path side by side: flashgate vs the nginx + Lua peer (loadtest/peer/), and
# optionally an older flashgate build, A B A B in one run on one Redis, with the same wrk.
#
#   ./loadtest/peer_bench.sh                      # builds, then peer vs flashgate, 2 rounds
#   PEER_BEFORE=/tmp/old/flashgate ./loadtest/peer_bench.sh   # adds an older build
#
# Every request is a new user from a new client IP buying an item whose stock never runs
# out (loadtest/wrk/reserve.lua): one reservation per request on each side. flashgate
# runs loadtest/config/gateway-header.toml (identity from the trusted X-User-Id header,
# like the peer) with campaign `bench`. For each run it reports req/s, p50/p99 (wrk) and
# CPU per request from /proc (utime + stime of the server's processes, and of Redis),
# then the medians and the flashgate/peer ratios. Installs nginx, libnginx-mod-http-lua
# and lua-nginx-redis (apt) and wrk when missing. Everything lives under var/peer-bench
# on its own ports and is stopped on exit.
#
# Environment: PEER_ROUNDS (2), PEER_DURATION (8s), PEER_CONNS (64), PEER_SKIP_BUILD=1,
# PEER_BEFORE (path of an older flashgate binary, measured as a third side), PEER_BIN
# (the directory of flashgate and examples/demo_store: target/release), PEER_RESULTS (a
# copy of the per-run results for loadtest/bench.sh: side round rps p50 p99 µs µs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROUNDS=${PEER_ROUNDS:-2}
DURATION=${PEER_DURATION:-8s}
CONNS=${PEER_CONNS:-64}
REDIS_PORT=6491 STORE_PORT=13201 GW_PORT=18281 GW_ADMIN=19281 PEER_PORT=18282 OLD_PORT=18283 OLD_ADMIN=19283
VAR=$ROOT/var/peer-bench
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua)
[ -e /usr/share/lua/5.1/nginx/redis.lua ] || missing+=(lua-nginx-redis)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "${PEER_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bins --examples"
  cargo build --release --bins --examples --quiet
fi
BIN=${PEER_BIN:-$ROOT/target/release}

PIDS=()
cleanup() {
  local rc=$?
  [ -s "$VAR/peer/nginx.pid" ] && kill "$(cat "$VAR/peer/nginx.pid")" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
rm -rf "$VAR"; mkdir -p "$VAR/redis" "$VAR/campaigns"

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$VAR/redis" --save "" --appendonly no \
  --logfile "$VAR/redis.log" --daemonize no & PIDS+=($!)
REDIS_PID=$!
"$BIN/examples/demo_store" --listen "127.0.0.1:$STORE_PORT" --orders "$VAR/orders.jsonl" >"$VAR/store.log" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

export FLASHGATE_PAYMENT_SECRET=p FLASHGATE_ADMIN_TOKEN=t FLASHGATE_SINK_SECRET=s
gateway_config() { # <public port> <admin port> <file>
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$1\"#" -e "s#^admin_listen = .*#admin_listen = \"127.0.0.1:$2\"#" \
    -e "s#^url = \"redis://.*#url = \"redis://127.0.0.1:$REDIS_PORT/0\"#" \
    -e "s#^url = \"http://.*#url = \"http://127.0.0.1:$STORE_PORT\"#" \
    -e "s#^http_url = .*#http_url = \"http://127.0.0.1:$STORE_PORT/flashgate/orders\"#" \
    -e "s#^campaigns_dir = .*#campaigns_dir = \"campaigns\"#" \
    loadtest/config/gateway-header.toml >"$3"
}
cp loadtest/config/campaigns/bench.toml "$VAR/campaigns/"
gateway_config "$GW_PORT" "$GW_ADMIN" "$VAR/gateway.toml"
RUST_LOG=warn "$BIN/flashgate" serve --config "$VAR/gateway.toml" >"$VAR/gateway.log" 2>&1 & PIDS+=($!)
GW_PID=$!
OLD_PID=""
if [ -n "${PEER_BEFORE:-}" ]; then
  gateway_config "$OLD_PORT" "$OLD_ADMIN" "$VAR/gateway-before.toml"
  RUST_LOG=warn "$PEER_BEFORE" serve --config "$VAR/gateway-before.toml" >"$VAR/gateway-before.log" 2>&1 & PIDS+=($!)
  OLD_PID=$!
fi
redis-cli -p "$REDIS_PORT" set 'peer:{bench}:stock:reserve' 1000000000 >/dev/null
loadtest/peer/nginx-lua/run.sh "$PEER_PORT" "$REDIS_PORT" "$STORE_PORT" "$VAR/peer" >"$VAR/peer.log" 2>&1 &
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$GW_ADMIN/readyz" >/dev/null 2>&1 && [ -s "$VAR/peer/nginx.pid" ] && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$GW_ADMIN/readyz" >/dev/null || die "flashgate is not ready (var/peer-bench/gateway.log)"
[ -s "$VAR/peer/nginx.pid" ] || die "the peer did not start (var/peer-bench/peer.log)"
sleep 1

# CPU seconds (utime + stime) of a process and its children threads: /proc/<pid>/stat.
cpu() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
nginx_pids() { local m; m=$(cat "$VAR/peer/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
HZ=$(getconf CLK_TCK)

echo "side round rps p50_ms p99_ms server_us_per_req redis_us_per_req" >"$VAR/results.txt"
run() { # <side> <url> <pids...>
  local side=$1 url=$2; shift 2
  wrk -t1 -c"$CONNS" -d2s -s loadtest/wrk/reserve.lua "$url" >/dev/null 2>&1 || true
  local s0 r0; s0=$(cpu "$@"); r0=$(cpu "$REDIS_PID")
  local out; out=$(WRK_STATUS=1 wrk -t1 -c"$CONNS" -d"$DURATION" -s loadtest/wrk/reserve.lua "$url")
  local s1 r1; s1=$(cpu "$@"); r1=$(cpu "$REDIS_PID")
  echo "$out" >"$VAR/$side-$round.out"
  python3 - "$side" "$round" "$((s1 - s0))" "$((r1 - r0))" "$HZ" "$VAR/$side-$round.out" >>"$VAR/results.txt" <<'PY'
import json, sys
side, rnd, s_ticks, r_ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
j = [json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[6]) if l.startswith("flashgate-wrk ")][0]
ok = j["statuses"].get("201", 0)
assert ok > 0.99 * j["requests"], f"{side}: not every request reserved: {j['statuses']}"
per = lambda t: t / hz * 1e6 / j["requests"]
print(side, rnd, round(j["rps"]), j["p50_ms"], j["p99_ms"], round(per(s_ticks), 1), round(per(r_ticks), 1))
PY
  log "$(tail -1 "$VAR/results.txt")"
}
for round in $(seq "$ROUNDS"); do
  # shellcheck disable=SC2046
  run peer "http://127.0.0.1:$PEER_PORT" $(nginx_pids)
  run flashgate "http://127.0.0.1:$GW_PORT" "$GW_PID"
  [ -n "$OLD_PID" ] && run before "http://127.0.0.1:$OLD_PORT" "$OLD_PID"
done

[ -z "${PEER_RESULTS:-}" ] || cp "$VAR/results.txt" "$PEER_RESULTS"
python3 - "$VAR/results.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])][1:]
sides = {}
for side, rnd, rps, p50, p99, s_us, r_us in rows:
    sides.setdefault(side, []).append((float(rps), float(p50), float(p99), float(s_us), float(r_us)))
print("| side | runs (req/s) | median req/s | median p99 ms | server µs/req | Redis µs/req |")
print("|---|---|---:|---:|---:|---:|")
med = {}
for side, runs in sides.items():
    m = [statistics.median(c) for c in zip(*runs)]
    med[side] = m
    print(f"| {side} | {', '.join(str(int(r[0])) for r in runs)} | {m[0]:.0f} | {m[2]:.2f} | {m[3]:.1f} | {m[4]:.1f} |")
for side in sides:
    if side != "peer":
        print(f"\n{side}/peer: req/s {med[side][0] / med['peer'][0]:.2f}x, p99 {med[side][2] / med['peer'][2]:.2f}x")
PY
