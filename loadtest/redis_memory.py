#!/usr/bin/env python3
"""Redis memory per pre-order, per user and per paid order, measured through the gateway.

    cargo build --release --bins && python3 loadtest/redis_memory.py [--users 20000]

Starts its own redis-server (no persistence), demo_store and flashgate on 127.0.0.1
(ports 6491, 13191, 18191, 19191; files in var/memory/, wiped), with header identity
from loopback (as loadtest/config/gateway-header.toml) and one campaign of two items
with plenty of stock, per_user_limit 2 and a one-hour payment window (nothing expires).

  A. N distinct users each reserve item `a`        -> per user + per pre-order
  B. the same users each reserve item `b`          -> per pre-order (the user exists)
  C. every order of item `a` is paid and delivered -> a paid order (outbox drained)

After each phase it reads `INFO memory` (used_memory) and prints the differences per
order; it also prints `MEMORY USAGE` of one order key and one user key and the key count.
Used for the sizing guide in docs/operations.md.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.path.join(ROOT, "var", "memory")
BIN = os.path.join(ROOT, "target", "release")
REDIS, STORE, PUBLIC, ADMIN = 6491, 13191, 18191, 19191
SECRETS = {
    "FLASHGATE_PAYMENT_SECRET": "memory-pay",
    "FLASHGATE_ADMIN_TOKEN": "memory-admin",
    "FLASHGATE_SINK_SECRET": "memory-sink",
}

GATEWAY = f"""
campaigns_dir = "campaigns"
[server]
listen = "127.0.0.1:{PUBLIC}"
admin_listen = "127.0.0.1:{ADMIN}"
trusted_proxies = ["127.0.0.0/8"]
[redis]
url = "redis://127.0.0.1:{REDIS}/0"
command_timeout = "1s"
[upstream]
url = "http://127.0.0.1:{STORE}"
[identity]
mode = "header"
header = "X-User-Id"
[limits]
per_ip = {{ rate = 1000000, per = "1s", burst = 1000000 }}
per_user = {{ rate = 1000, per = "1s", burst = 1000 }}
[admin]
token_env = "FLASHGATE_ADMIN_TOKEN"
[orders]
sink = "http"
http_url = "http://127.0.0.1:{STORE}/flashgate/orders"
"""

CAMPAIGN = """
id = "mem"
name = "Redis memory measurement"
starts_at = 2026-01-01T00:00:00+00:00
ends_at = 2036-01-01T00:00:00+00:00
payment_window = "1h"
per_user_limit = 2

[[items]]
sku = "a"
stock = 100000000
price_cents = 1000

[[items]]
sku = "b"
stock = 100000000
price_cents = 1000
"""


def redis(*args):
    out = subprocess.run(["redis-cli", "-p", str(REDIS), *args], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def used_memory():
    redis("MEMORY", "PURGE")
    info = dict(l.split(":", 1) for l in redis("INFO", "memory").splitlines() if ":" in l)
    return int(info["used_memory"])


def wait(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, subprocess.CalledProcessError):
            pass
        time.sleep(0.1)
    sys.exit(f"{what}: not within {timeout}s (logs in var/memory)")


def request(conn, method, path, headers=None, body=None):
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    return res.status, res.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20000)
    n = ap.parse_args().users

    shutil.rmtree(VAR, ignore_errors=True)
    os.makedirs(os.path.join(VAR, "campaigns"))
    with open(os.path.join(VAR, "gateway.toml"), "w") as f:
        f.write(GATEWAY)
    with open(os.path.join(VAR, "campaigns", "mem.toml"), "w") as f:
        f.write(CAMPAIGN)
    env = {**os.environ, **SECRETS, "RUST_LOG": "warn"}
    procs = []

    def spawn(name, *cmd):
        log = open(os.path.join(VAR, name + ".log"), "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=VAR))

    try:
        spawn("redis", "redis-server", "--port", str(REDIS), "--save", "",
              "--appendonly", "no", "--bind", "127.0.0.1")
        wait("redis", lambda: redis("PING") == "PONG")
        spawn("store", os.path.join(BIN, "demo_store"), "--listen", f"127.0.0.1:{STORE}",
              "--orders", os.path.join(VAR, "orders.jsonl"))
        spawn("gateway", os.path.join(BIN, "flashgate"), "serve", "--config",
              os.path.join(VAR, "gateway.toml"))
        def ready():
            probe = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=2)
            return request(probe, "GET", "/readyz")[0] == 200
        wait("gateway", ready)
        admin = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=10)
        conn = http.client.HTTPConnection("127.0.0.1", PUBLIC, timeout=10)

        def buy(i, sku):
            status, body = request(conn, "POST", f"/seckill/campaigns/mem/items/{sku}/orders", {
                "X-User-Id": f"user-{i:08d}",
                "X-Forwarded-For": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                "Content-Length": "0",
            })
            if status != 201:
                sys.exit(f"buy {sku} for user {i}: {status} {body[:200]!r}")
            return json.loads(body)["order_id"]

        m0 = used_memory()
        keys0 = int(redis("DBSIZE"))
        orders_a = [buy(i, "a") for i in range(n)]
        m1 = used_memory()
        for i in range(n):
            buy(i, "b")
        m2 = used_memory()
        sample_order = f"fg:{{mem}}:order:{orders_a[0]}"
        order_bytes = int(redis("MEMORY", "USAGE", sample_order))
        user_bytes = int(redis("MEMORY", "USAGE", "fg:{mem}:user:user-00000000"))
        keys2 = int(redis("DBSIZE"))

        secret = SECRETS["FLASHGATE_PAYMENT_SECRET"].encode()
        for i, oid in enumerate(orders_a):
            body = json.dumps({"order_id": oid, "payment_id": f"pay-{i}",
                               "amount_cents": 1000, "status": "succeeded"}).encode()
            t = str(int(time.time()))
            v1 = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
            status, res = request(conn, "POST", "/payments/callback",
                                  {"Flashgate-Signature": f"t={t},v1={v1}"}, body)
            if status != 200:
                sys.exit(f"callback {oid}: {status} {res[:200]!r}")
        auth = {"Authorization": "Bearer " + SECRETS["FLASHGATE_ADMIN_TOKEN"]}
        wait("the outbox to drain", lambda: json.loads(
            request(admin, "GET", "/admin/outbox", auth)[1])["pending"] == 0, timeout=120)
        m3 = used_memory()
        paid_order_bytes = int(redis("MEMORY", "USAGE", sample_order))

        per_order = (m2 - m1) / n
        print(f"users: {n}; keys before {keys0}, after A and B {keys2}")
        print("| reading | bytes |")
        print("|---|---:|")
        print(f"| used_memory before (stock loaded) | {m0} |")
        print(f"| A: +1 pre-order per user (new users), per user | {(m1 - m0) / n:.0f} |")
        print(f"| B: +1 pre-order per user (existing users), per pre-order | {per_order:.0f} |")
        print(f"| so a user's own cost (A - B) | {(m1 - m0) / n - per_order:.0f} |")
        print(f"| C: pay every `a` order (outbox drained), change per paid order | {(m3 - m2) / n:.0f} |")
        print(f"| MEMORY USAGE of one pending order key | {order_bytes} |")
        print(f"| MEMORY USAGE of the same order once paid | {paid_order_bytes} |")
        print(f"| MEMORY USAGE of a user key holding two orders | {user_bytes} |")
        print(f"| redis-server: {redis('INFO', 'server').splitlines()[1]} |  |")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
