#!/usr/bin/env python3
"""CPU per refused request: flashgate's sold-out path against bare hyper, by worker count.

    cargo build --release --bins --examples
    python3 loadtest/refusal_cpu.py                       # 1 and 2 workers, header and JWT
    python3 loadtest/refusal_cpu.py --before /tmp/old/flashgate --rounds 3
    python3 loadtest/refusal_cpu.py --instr               # instruction counts (callgrind)

The sides: `ceiling` (examples/bench_ceiling, a bare hyper server answering a fixed 409),
`flashgate` (target/release/flashgate) and, with --before, an older flashgate binary. For
each worker count (TOKIO_WORKER_THREADS) and identity (header: every request a new
`X-User-Id` from a new `X-Forwarded-For`; jwt: a valid HS256 token of one of --tokens users
from a new address), each round starts each side fresh, primes the sold-out flag (one buy
reaches Redis), warms up, and measures one wrk run (wrk -t1 -c64, loadtest/wrk/sold_out*.lua).

The server is pinned with taskset: 1 worker on CPU 0; 2 workers on CPUs 0-1. wrk is pinned
to CPU 1. Reported per run: req/s, the server's CPU per request (utime + stime of all its
threads from /proc/<pid>/stat, over the measured run, divided by the requests wrk counted),
the client's CPU per request (wrk's rusage), and the cores each used. On a shared machine CPU
per request is the figure to compare: it does not depend on how much CPU the server got.

--instr runs each server under `valgrind --tool=callgrind` instead (with the same worker
count; valgrind runs one thread at a time) and reports user-space instructions per request:
after a warm-up of --tokens + 5000 requests (every JWT verified once, limiter maps grown),
an idle period of --duration is counted (the background: timers, the sold-out flag's
recheck, the refresher), then a wrk run of -c8 for --duration; the idle count, scaled to the
run's length, is subtracted (a request under callgrind is ~50x slower, so the background
would otherwise weigh ~50x what it does at full speed). Repeatable to about 1%, unlike
anything timed on this machine. Kernel work (the syscalls, the same for every side) is not
counted, and SHA-256 runs in software under valgrind (with SHA-NI on the real CPU).

Starts its own redis-server (no persistence) on 127.0.0.1:6492 and the servers on 18492
(ceiling), 18192 (gateway; admin 19192); files in var/refusal/ (wiped). Standard library
only; needs wrk, redis-server, taskset (and valgrind for --instr).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, "var", "refusal")
REDIS_PORT, CEILING_PORT, PUBLIC_PORT, ADMIN_PORT = 6492, 18492, 18192, 19192
TCK = os.sysconf("SC_CLK_TCK")
JWT_SECRET = "refusal-jwt-secret"
ENV = {
    "FLASHGATE_PAYMENT_SECRET": "refusal-pay",
    "FLASHGATE_ADMIN_TOKEN": "refusal-admin",
    "FLASHGATE_SINK_SECRET": "refusal-sink",
    "FLASHGATE_JWT_SECRET": JWT_SECRET,
    "RUST_LOG": "info",
    "NO_COLOR": "1",
}


def log(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_port(port, secs=20):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {secs}s (logs in var/refusal)")


def post(port, path, headers):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{head}Connection: close\r\n\r\n".encode())
    answer = s.recv(4096).decode(errors="replace")
    s.close()
    return answer.split(" ", 2)[1] if " " in answer else answer


def mint_tokens(path, n):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    exp = int(time.time()) + 6 * 3600
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    with open(path, "w") as f:
        for i in range(n):
            msg = head + b"." + b64(json.dumps({"sub": f"j{i}", "exp": exp}).encode())
            sig = b64(hmac.new(JWT_SECRET.encode(), msg, hashlib.sha256).digest())
            f.write((msg + b"." + sig).decode() + "\n")


def gateway_config(identity):
    """loadtest/config/gateway-header.toml on this script's ports, identity as asked."""
    with open(os.path.join(ROOT, "loadtest", "config", "gateway-header.toml")) as f:
        cfg = f.read()
    cfg = re.sub(r'(?m)^listen = .*', f'listen = "127.0.0.1:{PUBLIC_PORT}"', cfg)
    cfg = re.sub(r'(?m)^admin_listen = .*', f'admin_listen = "127.0.0.1:{ADMIN_PORT}"', cfg)
    cfg = re.sub(r'(?m)^url = "redis://.*', f'url = "redis://127.0.0.1:{REDIS_PORT}/0"', cfg)
    if identity == "jwt":
        cfg = cfg.replace('mode = "header"', 'mode = "jwt"\njwt_secret_env = "FLASHGATE_JWT_SECRET"')
    path = os.path.join(VAR, f"gateway-{identity}.toml")
    with open(path, "w") as f:
        f.write(cfg)
    return path


class Server:
    """One side, started pinned (or under callgrind), stopped on exit."""

    def __init__(self, side, binary, workers, identity, instr):
        self.side, self.identity, self.instr = side, identity, instr
        cpus = "0" if workers == 1 else f"0-{workers - 1}"
        if side == "ceiling":
            cmd, self.port = [binary, f"127.0.0.1:{CEILING_PORT}"], CEILING_PORT
        else:
            cmd, self.port = [binary, "serve", "--config", gateway_config(identity)], PUBLIC_PORT
        self.out = os.path.join(VAR, f"callgrind.{side}.{identity}.{workers}")
        if instr:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", *cmd]
        env = dict(os.environ, **ENV, TOKIO_WORKER_THREADS=str(workers))
        logf = open(os.path.join(VAR, f"{side}-{identity}-{workers}.log"), "a")
        self.proc = subprocess.Popen(["taskset", "-c", cpus, *cmd], env=env, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, 120 if instr else 20)
        if side != "ceiling":
            wait_port(ADMIN_PORT)
            # The first buy reaches Redis (sold out, remaining 0) and arms the local flag.
            primer = ({"X-User-Id": "primer"} if identity == "header" else
                      {"Authorization": "Bearer " + open(os.path.join(VAR, "tokens.txt")).readline().strip()})
            status = post(self.port, "/seckill/campaigns/bench/items/sold-out/orders", primer)
            if status != "409":
                raise SystemExit(f"{side}: the primer buy answered {status}, not 409")
            time.sleep(0.5)

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wrk(url, identity, conns, duration, extra_env=None):
    """One wrk run pinned to CPU 1: (requests, seconds, client CPU seconds, statuses)."""
    script = "sold_out.lua" if identity == "header" else "sold_out_jwt.lua"
    env = dict(os.environ, TOKENS=os.path.join(VAR, "tokens.txt"), **(extra_env or {}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}",
                          "-s", os.path.join(ROOT, "loadtest", "wrk", script), url],
                         env=env, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next(l for l in out.splitlines() if l.startswith("flashgate-wrk "))
    r = json.loads(line.split(" ", 1)[1])
    return r["requests"], r["seconds"], client, r["statuses"]


def check_statuses(side, statuses):
    bad = {k: v for k, v in statuses.items() if k != "409"}
    if bad:
        raise SystemExit(f"{side}: answers other than 409: {bad}")


def measure(server, identity, conns, duration, warmup):
    wrk(server.url(), identity, conns, warmup)
    t0 = cpu_ticks(server.proc.pid)
    n, secs, client, statuses = wrk(server.url(), identity, conns, duration)
    used = (cpu_ticks(server.proc.pid) - t0) / TCK
    check_statuses(server.side, statuses)
    return {
        "rps": n / secs,
        "server_us": used * 1e6 / n,
        "client_us": client * 1e6 / n,
        "server_cores": used / secs,
        "client_cores": client / secs,
    }


def callgrind_dump(server):
    """Dumps callgrind's counters since the last zeroing; the instructions counted."""
    prefix = os.path.basename(server.out) + "."
    before = set(f for f in os.listdir(VAR) if f.startswith(prefix))
    subprocess.run(["callgrind_control", "-d", str(server.proc.pid)], check=True,
                   capture_output=True)
    total = 0
    for f in sorted(set(f for f in os.listdir(VAR) if f.startswith(prefix)) - before):
        with open(os.path.join(VAR, f)) as fh:
            for line in fh:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
                    break
    return total


def measure_instr(server, identity, warm_requests, duration):
    # Warm-up by count: every token verified once, the limiter maps grown.
    warm = 0
    while warm < warm_requests:
        n, _, _, _ = wrk(server.url(), identity, 8, "5s")
        warm += n
    # What the background (timers, the flag's recheck, the refresher) costs with no load,
    # over the same time: subtracted, since under callgrind a request is ~50x slower and
    # the background's share would be ~50x what it is at full speed.
    callgrind_dump(server)
    secs = float(duration.rstrip("s"))
    time.sleep(secs)
    idle = callgrind_dump(server)
    n, took, _, statuses = wrk(server.url(), identity, 8, duration)
    busy = callgrind_dump(server)
    check_statuses(server.side, statuses)
    return {"rps": n / took, "instr": (busy - idle * took / secs) / n, "requests": n,
            "idle_instr_per_s": idle / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1 2")
    ap.add_argument("--identities", default="header jwt")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", default="8s")
    ap.add_argument("--warmup", default="2s")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "flashgate"))
    ap.add_argument("--ceiling", default=os.path.join(ROOT, "target", "release", "examples", "bench_ceiling"))
    ap.add_argument("--before", help="an older flashgate binary, measured as a third side")
    ap.add_argument("--sides", default="ceiling flashgate before")
    ap.add_argument("--instr", action="store_true", help="instructions per request (callgrind)")
    args = ap.parse_args()

    shutil.rmtree(VAR, ignore_errors=True)
    os.makedirs(os.path.join(VAR, "campaigns"))
    shutil.copy(os.path.join(ROOT, "loadtest", "config", "campaigns", "bench.toml"),
                os.path.join(VAR, "campaigns"))
    mint_tokens(os.path.join(VAR, "tokens.txt"), args.tokens)
    sides = [("ceiling", args.ceiling), ("flashgate", args.bin)]
    if args.before:
        sides.append(("before", args.before))
    sides = [s for s in sides if s[0] in args.sides.split()]

    redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                              "--save", "", "--appendonly", "no", "--dir", VAR],
                             stdout=subprocess.DEVNULL, start_new_session=True)
    results = []
    try:
        wait_port(REDIS_PORT)
        for workers in [int(w) for w in args.workers.split()]:
            for identity in args.identities.split():
                for rnd in range(1 if args.instr else args.rounds):
                    for side, binary in sides:
                        server = Server(side, binary, workers, identity, args.instr)
                        try:
                            if args.instr:
                                r = measure_instr(server, identity, args.tokens + 5000, args.duration)
                            else:
                                r = measure(server, identity, args.conns, args.duration, args.warmup)
                        finally:
                            server.stop()
                        r.update(side=side, workers=workers, identity=identity, round=rnd + 1)
                        results.append(r)
                        print(json.dumps(r), flush=True)
    finally:
        redis.terminate()
        redis.wait()
    report(results, args.instr)


def report(results, instr):
    print()
    key = "instr" if instr else "server_us"
    print("| workers | identity | side | " + ("instructions / request | req/s under callgrind |" if instr else
          "req/s | server µs / req (median) | client µs / req | server cores | client cores | / ceiling |"))
    print("|---|---|---|" + ("---:|---:|" if instr else "---:|---:|---:|---:|---:|---:|"))
    groups = {}
    for r in results:
        groups.setdefault((r["workers"], r["identity"], r["side"]), []).append(r)
    for (w, ident, side), rs in groups.items():
        med = lambda k: statistics.median(r[k] for r in rs)
        ceiling = groups.get((w, ident, "ceiling"))
        ratio = med(key) / statistics.median(r[key] for r in ceiling) if ceiling else float("nan")
        if instr:
            print(f"| {w} | {ident} | {side} | {med('instr'):,.0f} ({ratio:.2f}×) | {med('rps'):,.0f} |")
        else:
            runs = " / ".join(f"{r['server_us']:.2f}" for r in rs)
            print(f"| {w} | {ident} | {side} | {med('rps'):,.0f} | {med('server_us'):.2f} ({runs}) | "
                  f"{med('client_us'):.2f} | {med('server_cores'):.2f} | {med('client_cores'):.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
