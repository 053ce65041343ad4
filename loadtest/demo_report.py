#!/usr/bin/env python3
"""The demo's summary (scripts/demo.sh): reads what the run left in var/demo and checks it.

Inputs in --var: crowd-summary.json and payments-summary.json (handleSummary of the k6
scripts), ledger.json (GET /admin/campaigns after the expiry), outbox.json
(GET /admin/outbox), orders.jsonl (what the demo store received).

Prints requests by outcome, p50/p99 and req/s, the pre-order lifecycle (reserved, paid,
expired and returned to stock), the orders the store received, and the ledger checks.
Exit status 0 when every check passed, 1 otherwise. Standard library only.
"""

import argparse
import json
import math
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"_error": f"{path}: {e}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--var", required=True)
    ap.add_argument("--campaign", required=True)
    ap.add_argument("--sku", required=True)
    ap.add_argument("--sku2", default="")
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--pay-share", type=float, required=True)
    ap.add_argument("--window", type=int, required=True)
    ap.add_argument("--crowd-rc", type=int, default=0)
    ap.add_argument("--payments-rc", type=int, default=0)
    a = ap.parse_args()

    checks = []  # (ok, text)

    def check(ok, text):
        checks.append((bool(ok), text))

    crowd = load(os.path.join(a.var, "crowd-summary.json")).get("flashgate") or {}
    pay = load(os.path.join(a.var, "payments-summary.json")).get("flashgate") or {}
    ledger_doc = load(os.path.join(a.var, "ledger.json"))
    outbox = load(os.path.join(a.var, "outbox.json"))
    campaign = next((c for c in ledger_doc.get("campaigns", []) if c["id"] == a.campaign), None)
    items = {i["sku"]: i for i in (campaign or {}).get("items", [])}

    orders, bad_lines = [], 0
    orders_path = os.path.join(a.var, "orders.jsonl")
    if os.path.exists(orders_path):
        with open(orders_path) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    orders.append(json.loads(line))
                except ValueError:
                    bad_lines += 1

    print()
    print("=" * 78)
    print(f" flashgate demo: summary ({a.campaign}/{a.sku})")
    print("=" * 78)

    # --- the crowd ---
    check(a.crowd_rc == 0, f"k6 flash_crowd.js exited {a.crowd_rc} (thresholds, ledger checks)")
    check(crowd.get("ok"), "flash crowd checks and thresholds (see its report above)")
    oc = crowd.get("outcomes", {})
    stock = crowd.get("stock_at_start")
    print(f"\nflash crowd: {a.users} users, each with its own JWT and IP, pressed buy at the start")
    print(f"  (stock {stock}; every user pressed twice with one Idempotency-Key, and holders also")
    print(f"   tried {a.sku2}, which the per-user limit of 1 refuses)")
    print("  requests by outcome:")
    labels = [
        ("reserved_201", "201 reserved"),
        ("existing_200", "200 same order again (double click)"),
        ("sold_out_409", "409 sold-out"),
        ("limit_reached_409", "409 limit-reached"),
        ("rate_limited_429", "429 rate-limited"),
        ("unavailable_503", "503 unavailable"),
        ("not_started_403", "403 not-started"),
        ("other", "other"),
    ]
    for key, label in labels:
        print(f"    {label:<38} {oc.get(key, 0):>8}")
    print(f"    {'total':<38} {crowd.get('buys', 0):>8}")
    lat = crowd.get("latency_ms", {})
    fmt = lambda v: "-" if v is None else f"{v:.2f} ms"
    rps = crowd.get("req_per_s")
    print(f"  buy latency: p50 {fmt(lat.get('p50'))}, p99 {fmt(lat.get('p99'))}, max {fmt(lat.get('max'))}")
    print(f"  throughput: {crowd.get('buys', 0)} buys in {crowd.get('span_ms', 0) / 1000:.2f} s after the start"
          + (f" = {rps:.0f} req/s" if rps else ""))
    check(oc.get("unavailable_503", 0) == 0 and crowd.get("server_errors", 0) == 0, "no 5xx answers")

    # --- payments and the lifecycle ---
    check(a.payments_rc == 0, f"k6 payments.js exited {a.payments_rc} (thresholds, ledger checks)")
    check(pay.get("ok"), "payment checks and thresholds (see its report above)")
    pc = pay.get("counts", {})
    it = items.get(a.sku)
    print()
    if it is None:
        check(False, f"{a.sku} is in the ledger")
    else:
        reserved = it["pending"] + it["paid"] + it["expired"] + it["cancelled"]
        expect_reserved = min(a.users, it["initial"] + it["adjusted"])
        expect_paid = math.floor(reserved * a.pay_share)
        print(f"pre-orders of {a.sku}:")
        print(f"  reserved                 {reserved:>6}   (stock {it['initial']}, demand {a.users} users)")
        print(f"  paid                     {it['paid']:>6}   ({pc.get('paid', 0)} callbacks answered paid, "
              f"{pc.get('duplicate_paid', 0)} repeated callbacks answered paid again)")
        print(f"  expired, back on sale    {it['expired']:>6}   (payment window {a.window}s)")
        print(f"  cancelled                {it['cancelled']:>6}")
        print(f"  still pending            {it['pending']:>6}")
        print(f"  remaining stock          {it['remaining']:>6}   (= {it['initial']} - {it['paid']} paid)")
        check(reserved == expect_reserved,
              f"exactly min(demand, stock) = {expect_reserved} units reserved (got {reserved})")
        check(reserved == oc.get("reserved_201"),
              f"one 201 per reserved unit ({oc.get('reserved_201')} 201s, {reserved} units)")
        check(it["paid"] == expect_paid and pc.get("paid") == expect_paid,
              f"paid = floor({reserved} x {a.pay_share}) = {expect_paid} (ledger {it['paid']}, callbacks {pc.get('paid')})")
        check(it["pending"] == 0, f"no pre-order still pending after the window ({it['pending']})")
        check(it["expired"] == reserved - it["paid"] - it["cancelled"],
              f"every unpaid pre-order expired: {it['expired']} = {reserved} - {it['paid']} paid")
        check(it["remaining"] == it["initial"] + it["adjusted"] - it["paid"],
              f"expired units are back on sale: remaining {it['remaining']} = {it['initial']} - {it['paid']} paid")
    if a.sku2 and a.sku2 in items:
        i2 = items[a.sku2]
        r2 = i2["pending"] + i2["paid"] + i2["expired"] + i2["cancelled"]
        check(r2 == 0, f"per-user limit: no holder of {a.sku} got {a.sku2} too ({r2} reserved)")

    # --- the store ---
    ids = [o.get("order_id") for o in orders]
    paid_ids = set(pay.get("paid_order_ids", []))
    print(f"\norders received by the store (var/demo/orders.jsonl): {len(orders)} lines, "
          f"{len(set(ids))} distinct order ids")
    statuses = {}
    for o in orders:
        statuses[o.get("status")] = statuses.get(o.get("status"), 0) + 1
    print(f"  by status: {statuses}")
    check(bad_lines == 0, f"every line of orders.jsonl is JSON ({bad_lines} bad)")
    check(len(ids) == len(set(ids)), f"no order twice at the store ({len(ids) - len(set(ids))} duplicates)")
    paid_units = sum(i["paid"] for i in items.values())
    check(len(orders) == paid_units and all(o.get("status") == "paid" for o in orders),
          f"the store holds exactly the {paid_units} paid orders, all with status paid")
    check(set(ids) == paid_ids,
          f"the store's order ids are the ones paid by payments.js ({len(paid_ids & set(ids))} of {len(paid_ids)})")
    check(all(o.get("payment_id") and o.get("paid_at") for o in orders), "every stored order has payment_id and paid_at")
    check(outbox.get("pending") == 0 and outbox.get("dead") == 0,
          f"outbox drained: pending {outbox.get('pending')}, dead letters {outbox.get('dead')}")

    # --- the ledger ---
    print(f"\nledger of {a.campaign} (GET /admin/campaigns):")
    cols = ["initial", "adjusted", "remaining", "pending", "paid", "expired", "cancelled", "refund_required"]
    w = max([4] + [len(s) for s in items])
    print(f"  {'sku':<{w}}  " + " ".join(f"{c:>9}" for c in cols))
    for sku in sorted(items):
        print(f"  {sku:<{w}}  " + " ".join(f"{items[sku].get(c, 0):>9}" for c in cols))
    check(campaign is not None, f"campaign {a.campaign} in GET /admin/campaigns")
    for sku in sorted(items):
        i = items[sku]
        lhs, rhs = i["initial"] + i["adjusted"], i["remaining"] + i["pending"] + i["paid"]
        check(lhs == rhs and i["remaining"] >= 0,
              f"ledger {sku}: initial + adjusted {lhs} = remaining + pending + paid {rhs}")

    print("\nchecks:")
    for ok, text in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    passed = all(ok for ok, _ in checks)
    print()
    print("RESULT: " + ("PASS - the ledger holds, nothing oversold, every paid order reached the store once"
                        if passed else "FAIL - see the checks above and the logs in var/demo"))
    print()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
