#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the results of loadtest/bench.sh (var/bench/results).

Reads each measurement's machine-readable line (`flashgate-wrk {json}` from the wrk
scripts, `flashgate-k6 {json}` from k6/reserve_rate.js, redis-benchmark's CSV), the
memory readings (f_mem.txt, f_samples.txt) and the commands (commands.txt); computes the
ratios and judges the targets BENCHMARKS.md sets. Sections it has no results for say so.
A hand-written analysis may follow the marker line `<!-- analysis -->` in the existing
file: it is kept as it is.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess

MARKER = "<!-- analysis -->"


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def tagged(path, tag):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(tag + " "):
                    return json.loads(line.split(" ", 1)[1])
    except FileNotFoundError:
        pass
    return None


def redis_csv(path):
    try:
        with open(path) as f:
            rows = [r for r in csv.reader(f) if r]
    except FileNotFoundError:
        return None
    head, last = rows[0], rows[-1]
    if head[0] != "test":
        head = ["test", "rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms",
                "p95_latency_ms", "p99_latency_ms", "max_latency_ms"]
    row = dict(zip(head, last))
    return {k: (float(v) if k != "test" else v) for k, v in row.items()}


def kv(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    try:
                        out[k] = float(v)
                    except ValueError:
                        out[k] = v
    except FileNotFoundError:
        pass
    return out


def machine():
    lscpu = {}
    for line in sh("lscpu").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            lscpu[k.strip()] = v.strip()
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": lscpu.get("Model name", "?"),
        "cpus": lscpu.get("CPU(s)", str(os.cpu_count())),
        "threads_per_core": lscpu.get("Thread(s) per core", "?"),
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "wrk": sh("sh", "-c", "wrk --version 2>&1 | head -1"),
        "redis": sh("redis-server", "--version"),
        "k6": sh("sh", "-c", "k6 version 2>/dev/null | head -1"),
        "rustc": sh("rustc", "--version"),
    }


def peer_runs(path):
    """loadtest/peer_bench.sh's runs: side -> [(rps, p50, p99, server µs, Redis µs)]."""
    sides = {}
    try:
        with open(path) as f:
            for line in list(f)[1:]:
                side, _round, *vals = line.split()
                sides.setdefault(side, []).append(tuple(float(v) for v in vals))
    except FileNotFoundError:
        pass
    return sides


def fmt(x, nd=1):
    return "—" if x is None else f"{x:,.{nd}f}"


def ratio(x, y):
    return None if x is None or y in (None, 0) else x / y


def main():
    ap = argparse.ArgumentParser()
    for a in ("results", "out", "threads", "conns", "duration", "pipeline", "distinct",
              "rate-share"):
        ap.add_argument("--" + a, required=True)
    o = ap.parse_args()
    r = o.results
    a = tagged(f"{r}/a_ceiling.out", "flashgate-wrk")
    aj = tagged(f"{r}/a_ceiling_jwt.out", "flashgate-wrk")
    b = tagged(f"{r}/b_sold_out.out", "flashgate-wrk")
    bj = tagged(f"{r}/b_sold_out_jwt.out", "flashgate-wrk")
    c = tagged(f"{r}/c_reserve.out", "flashgate-wrk")
    d1 = redis_csv(f"{r}/d_redis_p1.out")
    dp = redis_csv(f"{r}/d_redis_p{o.pipeline}.out")
    e = tagged(f"{r}/e_proxy.out", "flashgate-wrk")
    peer = peer_runs(f"{r}/p_peer.txt")
    med = {side: [statistics.median(c) for c in zip(*runs)] for side, runs in peer.items()}
    fg, pr = med.get("flashgate"), med.get("peer")
    ed = tagged(f"{r}/e_direct.out", "flashgate-wrk")
    lat = tagged(f"{r}/lat_reserve.out", "flashgate-k6")
    latw = tagged(f"{r}/lat_wrk.out", "flashgate-wrk")
    mem = kv(f"{r}/f_mem.txt")
    fdrive = tagged(f"{r}/f_distinct.out", "flashgate-wrk")
    samples = []
    try:
        with open(f"{r}/f_samples.txt") as f:
            for line in f:
                p = line.split()
                if len(p) == 3:
                    samples.append((float(p[0]), float(p[1] or 0), float(p[2] or 0)))
    except FileNotFoundError:
        pass
    max_keys = max((s[2] for s in samples), default=None)
    max_rss_sample = max((s[1] for s in samples), default=None)

    rps = lambda m: None if m is None else m["rps"]
    ba = ratio(rps(b), rps(a))
    bja_header = ratio(rps(bj), rps(a))
    bja = ratio(rps(bj), rps(aj))

    def us_per_req(name, proc, m):
        """CPU µs per request of one process during a measured run."""
        v = kv(f"{r}/{name}.cpu").get(f"{proc}_cpu_s")
        return None if v is None or m is None or not m["requests"] else v * 1e6 / m["requests"]

    cpu_bj, cpu_aj = us_per_req("b_sold_out_jwt", "gateway_jwt", bj), us_per_req("a_ceiling_jwt", "ceiling", aj)
    fg_peer = ratio(fg and fg[0], pr and pr[0])
    cd1 = ratio(rps(c), d1 and d1["rps"])
    cdp = ratio(rps(c), dp and dp["rps"])
    ed_r = ratio(rps(e), rps(ed))
    hwm_mb = mem.get("after_hwm_kb") and mem["after_hwm_kb"] / 1024
    rss_mb = mem.get("after_rss_kb") and mem["after_rss_kb"] / 1024
    gc_rss_mb = mem.get("gc_rss_kb") and mem["gc_rss_kb"] / 1024
    idle_mb = mem.get("idle_rss_kb") and mem["idle_rss_kb"] / 1024

    def judge(ok):
        return "—" if ok is None else ("**met**" if ok else "**missed**")

    targets = [
        ("reserve path ≥ 2× the nginx + Lua peer (req/s, medians of p)", fmt(fg_peer, 2) + "×",
         judge(None if fg_peer is None else fg_peer >= 2)),
        ("reserve path p99 no worse than the peer's (medians of p)",
         "—" if not (fg and pr) else f"{fg[2]:.2f} vs {pr[2]:.2f} ms",
         judge(None if not (fg and pr) else fg[2] <= pr[2])),
        ("gateway CPU ≤ 25 µs per reservation (medians of p)", "—" if not fg else f"{fg[3]:.1f} µs",
         judge(None if not fg else fg[3] <= 25)),
        ("Redis CPU ≤ 20 µs per reservation (medians of p)", "—" if not fg else f"{fg[4]:.1f} µs",
         judge(None if not fg else fg[4] <= 20)),
        ("b/a ≥ 0.85 (sold-out path vs bare hyper)", fmt(ba, 3), judge(None if ba is None else ba >= 0.85)),
        ("b(JWT)/a(JWT) ≥ 0.85 (sold-out path, JWT identity, vs bare hyper under the same load)",
         fmt(bja, 3), judge(None if bja is None else bja >= 0.85)),
        ("the same as CPU per request: ceiling µs / gateway µs ≥ 0.85",
         "—" if cpu_bj is None or cpu_aj is None else f"{cpu_aj / cpu_bj:.3f} ({cpu_aj:.1f} / {cpu_bj:.1f} µs)",
         judge(None if cpu_bj is None or cpu_aj is None else cpu_aj / cpu_bj >= 0.85)),
        (f"c/d(pipelined -P {o.pipeline}) ≥ 0.8 (reserve path vs Redis ceiling)", fmt(cdp, 3),
         judge(None if cdp is None else cdp >= 0.8)),
        ("p99 ≤ 5 ms at half of peak (reserve path), k6 open model",
         "—" if lat is None else f"{lat['p99_ms']:.2f} ms at {fmt(ratio(lat['rps'], rps(c)), 2)} × peak", judge(None if lat is None else lat["p99_ms"] <= 5.0)),
        ("p99 ≤ 5 ms at half of peak (reserve path), wrk paced",
         "—" if latw is None else f"{latw['p99_ms']:.2f} ms at {fmt(ratio(latw['rps'], rps(c)), 2)} × peak",
         judge(None if latw is None else latw["p99_ms"] <= 5.0)),
        (f"RSS ≤ 64 MB after {int(float(o.distinct)):,} distinct keys (VmHWM, the peak)",
         "—" if hwm_mb is None else f"{hwm_mb:.1f} MB", judge(None if hwm_mb is None else hwm_mb <= 64)),
    ]

    m = machine()
    commit = sh("git", "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "status", "--porcelain", "--untracked-files=no", "--", "src", "lua", "Cargo.toml", "Cargo.lock")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    L = []
    w = L.append
    w("# Benchmarks")
    w("")
    w("Written by `loadtest/bench.sh` (`make bench`); numbers from one run on the machine "
      "below. Rerun to refresh; text after the analysis marker at the end is kept.")
    w("")
    w("## Machine and run")
    w("")
    w(f"- date: {now}; git commit `{commit}`{' (with uncommitted changes to src/lua)' if dirty else ''}")
    w(f"- CPU: {m['cpu']}, {m['cpus']} CPUs ({m['threads_per_core']} thread(s) per core); RAM {m['ram']}; kernel {m['kernel']}")
    w(f"- {m['rustc']}; {m['wrk']}; {m['redis']}; k6 {m['k6']}")
    w(f"- load: wrk -t{o.threads} -c{o.conns} -d{o.duration} (after a 2 s warm-up run each); "
      f"redis-benchmark -c {o.conns}, -P 1 and -P {o.pipeline}")
    w("- **The load generator and the servers share these 2 cores.** wrk's single thread takes "
      "up to one core; the server under test (2 tokio workers, plus single-threaded Redis on "
      "c and d) gets what is left. Absolute numbers are therefore low and the ratios are the "
      "point: each pair of a ratio ran with the same client and the same load.")
    w("- Redis runs without persistence (`--save \"\" --appendonly no`): c and d measure the "
      "same Redis, CPU-bound; AOF `appendfsync always` would lower both.")
    w("- Gateway: `loadtest/config/gateway-header.toml` on the benchmark's ports (identity from "
      "the trusted `X-User-Id` header, loopback trusted for `X-Forwarded-For`, per-IP 1000/s "
      "burst 2000, per-user 10/s burst 20), campaign `loadtest/config/campaigns/bench.toml`, "
      "`RUST_LOG=info`.")
    w("")
    w("## Results")
    w("")
    w("| | what | req/s | p50 ms | p99 ms | answers | cores used |")
    w("|---|---|---:|---:|---:|---|---|")

    def cores(name):
        c = kv(f"{r}/{name}.cpu")
        wall = c.pop("wall_s", 0)
        if not wall:
            return ""
        parts = [f"client {c.pop('client_cpu_s', 0) / wall:.2f}"]
        for k, v in c.items():
            if v / wall >= 0.01:
                parts.append(f"{k[:-len('_cpu_s')]} {v / wall:.2f}")
        return ", ".join(parts)

    def row(tag, what, x, name=None):
        if x is None:
            w(f"| {tag} | {what} | not run | | | | |")
            return
        st = ", ".join(f"{k}: {v:,}" for k, v in x.get("statuses", {}).items())
        errs = x.get("socket_errors", 0)
        if errs:
            st += f"; socket errors: {errs}"
        w(f"| {tag} | {what} | {fmt(x['rps'])} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | {st} | {cores(name)} |")

    row("a", "bench_ceiling: bare hyper, fixed 409", a, "a_ceiling")
    row("a", "the same under the JWT load (b's script and tokens)", aj, "a_ceiling_jwt")
    row("b", "gateway sold-out path (409 from the local flag)", b, "b_sold_out")
    row("b", "the same with JWT identity (a valid HS256 token per request)", bj, "b_sold_out_jwt")
    row("c", "gateway reserve path (201, one EVALSHA each)", c, "c_reserve")
    for tag, p, x in (("d", 1, d1), ("d", int(o.pipeline), dp)):
        if x is None:
            w(f"| {tag} | redis-benchmark EVALSHA reserve.lua -P {p} | not run | | | | |")
        else:
            w(f"| {tag} | redis-benchmark EVALSHA reserve.lua, -P {p} | {fmt(x['rps'])} | "
              f"{x['p50_latency_ms']:.3f} | {x['p99_latency_ms']:.3f} | (redis-benchmark's own latencies) | "
              f"{cores(f'd_redis_p{p}')} |")
    row("e", "proxy path: gateway → demo_store", e, "e_proxy")
    row("e", "demo_store directly", ed, "e_direct")
    w("")
    w("cores = CPU seconds per wall second during the measured run: the client's from "
      "getrusage, each server's from `/proc/<pid>/stat` (2.00 = both cores).")
    w("")
    w("## Ratios and targets")
    w("")
    w("| ratio | value |")
    w("|---|---:|")
    w(f"| b/a sold-out path / HTTP ceiling | {fmt(ba, 3)} |")
    w(f"| b(JWT)/a(JWT) sold-out path with JWT identity / HTTP ceiling, same JWT load | {fmt(bja, 3)} |")
    w(f"| b(JWT)/a sold-out path with JWT identity / HTTP ceiling under the header load | {fmt(bja_header, 3)} |")
    if fg_peer is not None:
        w(f"| p flashgate / nginx + Lua peer, reserve path (medians) | {fmt(fg_peer, 3)} |")
    w(f"| c/d reserve path / Redis ceiling, not pipelined | {fmt(cd1, 3)} |")
    w(f"| c/d reserve path / Redis ceiling, pipelined -P {o.pipeline} | {fmt(cdp, 3)} |")
    w(f"| e proxy / direct | {fmt(ed_r, 3)} |")
    w("")
    w("| target | measured | |")
    w("|---|---:|---|")
    for t in targets:
        w(f"| {t[0]} | {t[1]} | {t[2]} |")
    w("")
    w("### The reserve path against the nginx + Lua peer (p)")
    w("")
    if not peer:
        w("Not run.")
    else:
        w("`loadtest/peer_bench.sh`: the peer (`loadtest/peer/nginx-lua/`: two nginx workers, "
          "lua-nginx-redis, one `EVALSHA` per buy) and flashgate (`gateway-header.toml`) take "
          f"turns, A B A B, on one Redis without persistence, each under wrk -t1 -c{o.conns} "
          f"-d{o.duration} with `loadtest/wrk/reserve.lua` (every request a new user from a new "
          "IP; every answer 201 on both sides). CPU per request from `/proc/<pid>/stat` "
          "(utime + stime) of the server's processes and of Redis over each run.")
        w("")
        w("| side | runs (req/s) | median req/s | median p99 ms | server µs/req | Redis µs/req |")
        w("|---|---|---:|---:|---:|---:|")
        for side, runs in peer.items():
            m_ = med[side]
            w(f"| {side} | {', '.join(f'{x[0]:,.0f}' for x in runs)} | {m_[0]:,.0f} | {m_[2]:.2f} | "
              f"{m_[3]:.1f} | {m_[4]:.1f} |")
        w("")
        for side in med:
            if side != "peer" and pr:
                w(f"- {side}/peer: req/s {med[side][0] / pr[0]:.2f}×, p99 {med[side][2] / pr[2]:.2f}×")
    w("")
    w("### Latency at about half of peak (reserve path)")
    w("")
    if lat is None:
        w("Not run.")
    else:
        w(f"k6 `constant-arrival-rate` (open model: requests start on schedule whatever the "
          f"answers do; wrk2 is not packaged, and plain wrk is closed-loop) at "
          f"{lat['rate_target']:,} req/s = {o.rate_share} × c's peak, for {o.duration}, "
          f"up to {4 * int(o.conns)} VUs, a new user and IP per request. k6 itself runs on the same "
          f"2 cores (it is far heavier per request than wrk) and its client-side timing is included.")
        w("")
        w("| achieved req/s | requests | dropped | 201 | other | p50 ms | p90 ms | p99 ms | max ms |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        w(f"| {fmt(lat['rps'])} | {lat['requests']:,} | {lat['dropped_iterations']:,} | "
          f"{lat['created_201']:,} | {lat['other']:,} | {lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} | "
          f"{lat['p99_ms']:.3f} | {lat['max_ms']:.3f} |")
        w(f"\nCores used during the k6 run: {cores('lat_reserve')}.")
    w("")
    if latw is not None:
        w(f"The same rate with wrk (`loadtest/wrk/reserve_paced.lua`: -t{o.threads} -c{o.conns}, "
          f"each connection waits `delay()` ms after an answer so that all together send about "
          f"the target rate). Light on the CPU, but closed-loop: a connection stuck on a slow "
          f"answer sends nothing meanwhile, so stalls are under-sampled (coordinated omission).")
        w("")
        w("| achieved req/s | requests | p50 ms | p90 ms | p99 ms | max ms | answers | cores used |")
        w("|---:|---:|---:|---:|---:|---:|---|---|")
        st = ", ".join(f"{k}: {v:,}" for k, v in latw.get("statuses", {}).items())
        w(f"| {fmt(latw['rps'])} | {latw['requests']:,} | {latw['p50_ms']:.3f} | {latw['p90_ms']:.3f} | "
          f"{latw['p99_ms']:.3f} | {latw['max_ms']:.3f} | {st} | {cores('lat_wrk')} |")
        w("")
    w("### Memory after distinct users and IPs (f)")
    w("")
    if not mem:
        w("Not run.")
    else:
        w(f"A fresh gateway; wrk `loadtest/wrk/distinct.lua` sends {int(float(o.distinct)):,} "
          f"buy requests on the sold-out item, each with a new `X-User-Id` and a new "
          f"`X-Forwarded-For` address, so every request adds one per-IP and one per-user "
          f"limiter key (answered 409 from memory after both limiters). Readings from "
          f"`/proc/<pid>/status`; the key count is the `flashgate_limiter_keys` gauge "
          f"(refreshed every second).")
        w("")
        w("| reading | value |")
        w("|---|---:|")
        w(f"| idle (after start) VmRSS | {fmt(idle_mb)} MB |")
        if fdrive:
            w(f"| drive: requests / seconds / req/s | {fdrive['requests']:,} / "
              f"{mem.get('drive_seconds', 0):.1f} / {fmt(fdrive['rps'])} |")
        w(f"| right after: VmRSS | {fmt(rss_mb)} MB |")
        w(f"| right after: VmHWM (peak) | {fmt(hwm_mb)} MB |")
        w(f"| right after: limiter keys | {fmt(mem.get('after_keys'), 0)} |")
        w(f"| most limiter keys seen in a 1 s sample | {fmt(max_keys, 0)} |")
        w(f"| largest VmRSS seen in a 1 s sample | {fmt(max_rss_sample and max_rss_sample / 1024)} MB |")
        w(f"| after the GC (+12 s): VmRSS | {fmt(gc_rss_mb)} MB |")
        w(f"| after the GC: limiter keys | {fmt(mem.get('gc_keys'), 0)} |")
        w("")
        w("The limiter GC (`retain_recent` + `shrink_to_fit`, every 10 s) drops keys whose "
          "state has fully replenished (1 ms per IP at 1000/s, 100 ms per user at 10/s), so "
          "the map holds the keys of the last ≤ 10 s, not all of them: at the drive's rate "
          "the peak key count is what arrived between two GC runs.")
    w("")
    w("## Commands")
    w("")
    w("Every measurement command of this run, as run by `loadtest/bench.sh` (ports are the "
      "benchmark's own; `$sha` is `SCRIPT LOAD` of lib.lua + \"\\n\" + reserve.lua):")
    w("")
    w("```")
    try:
        with open(f"{r}/commands.txt") as f:
            for line in f:
                name, cmd = line.rstrip("\n").split("\t", 1)
                parts = cmd.split(" ")
                if "EVALSHA" in parts:
                    i = parts.index("EVALSHA")
                    parts[i + 1] = "$sha"
                    parts = [x if x else '""' for x in parts]  # the empty Idempotency-Key
                w(f"{name}: {' '.join(parts)}")
    except FileNotFoundError:
        pass
    w("```")
    w("")
    w("Raw outputs stay in `var/bench/results/` (not committed).")
    w("")
    analysis = ""
    if os.path.exists(o.out):
        with open(o.out) as f:
            old = f.read()
        if MARKER in old:
            analysis = old.split(MARKER, 1)[1]
    w(MARKER + analysis.rstrip("\n") if analysis.strip() else MARKER)
    with open(o.out, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
