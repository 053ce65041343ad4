#!/usr/bin/env python3
"""Redis CPU per reservation of lua/reserve.lua, by batch size (group commit).

    redis-server --port 6598 --save "" --appendonly no --daemonize yes
    python3 loadtest/redis_batch_cost.py 6598 32 3000          # batches of 32 buys, 3000 calls
    SCRIPT=/tmp/variant.lua python3 loadtest/redis_batch_cost.py 6598 32 3000

Loads lib.lua + reserve.lua (or SCRIPT, a variant of reserve.lua) like the gateway, then
sends `calls` EVALSHA calls of `batch` buys each (every buy a new user and order on the
`bench` campaign's huge-stock item, as src/stock/batch.rs sends them), pipelined 64 buys
deep, and prints Redis' own CPU (INFO cpu, user + sys) per reservation. FLUSHALL between
runs to compare on the same keyspace size. Uses only the Python standard library.
"""
import os
import socket
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    port, batch, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")

    def enc(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read():
        line = f.readline()
        kind = line[:1]
        if kind in b"+-:":
            if kind == b"-":
                raise RuntimeError(line.decode().strip())
            return line
        if kind == b"$":
            n = int(line[1:])
            return f.read(n + 2)[:-2] if n >= 0 else None
        if kind == b"*":
            return [read() for _ in range(max(int(line[1:]), 0))]
        raise RuntimeError(line)

    script = os.environ.get("SCRIPT", os.path.join(ROOT, "lua", "reserve.lua"))
    with open(os.path.join(ROOT, "lua", "lib.lua")) as lib, open(script) as body:
        src = lib.read() + "\n" + body.read()
    s.sendall(enc(["SCRIPT", "LOAD", src]))
    sha = read().decode()

    def redis_cpu():
        s.sendall(enc(["INFO", "cpu"]))
        info = dict(l.split(":", 1) for l in read().decode().split("\r\n") if ":" in l)
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    base = "fg:{bench}:"
    shared = [base + k for k in ("deadlines", "paused", "claims", "selection", "admission",
                                 "entrants", "ranking")]
    tag = os.urandom(4).hex()
    n = 0

    def call():
        nonlocal n
        keys, argv = list(shared), [base, "bench"]
        for _ in range(batch):
            n += 1
            user, order = f"u{tag}{n}", f"o{tag}{n}"
            keys += [base + "item:reserve", base + "user:" + user, base + "holders:reserve",
                     base + "order:" + order]
            argv += ["reserve", user, 1, 1, order, 3600000, 1000, "", 1000000000, "", "", "", ""]
        return enc(["EVALSHA", sha, len(keys)] + keys + argv)

    depth = max(1, 64 // batch)
    before, done = redis_cpu(), 0
    while done < calls:
        s.sendall(b"".join(call() for _ in range(depth)))
        for _ in range(depth):
            read()
        done += depth
    used = redis_cpu() - before
    print(f"batch {batch}: {used * 1e6 / (done * batch):.1f} us of Redis CPU per reservation "
          f"({done} calls, {done * batch} reservations)")


if __name__ == "__main__":
    main()
