#!/usr/bin/env python3
"""Verify a flashgate raffle draw from its published record.

Usage: scripts/verify-draw.py EXPORT.json     (or - for stdin)

EXPORT.json is what `GET /admin/campaigns/{id}/entries` answers once the draw is made.
This script needs nothing but Python's standard library and trusts nothing the gateway
computed: it checks that

  1. the revealed seed matches the commitment published before the draw
     (commitment = hex(SHA-256(seed)));
  2. every entrant's ticket is hex(HMAC-SHA256(key = seed, message = user id));
  3. the ranks are the entrants sorted by ticket, ascending (ties by user id);
  4. exactly the first `selected_count` ranks were ever selected, and none was selected
     before a better-ranked entrant.

Exit status 0 when the draw verifies, 1 (with every problem listed) when it does not.
"""
import hashlib
import hmac
import json
import sys


def main(path):
    export = json.load(sys.stdin if path == "-" else open(path))
    problems = []
    seed_hex = export.get("seed")
    if not seed_hex:
        print("no seed in the export: the draw has not been made yet")
        return 1
    seed = bytes.fromhex(seed_hex)
    if hashlib.sha256(seed).hexdigest() != export.get("commitment"):
        problems.append("the seed does not match the commitment")

    entrants = export["entrants"]
    tickets = {}
    for e in entrants:
        user = e["user_id"]
        t = hmac.new(seed, user.encode(), hashlib.sha256).digest()
        tickets[user] = t
        if e.get("ticket") is not None and e["ticket"] != t.hex():
            problems.append(f"{user}: published ticket {e['ticket']} is not {t.hex()}")

    ranked = sorted(tickets, key=lambda u: (tickets[u], u.encode()))
    published = [e["user_id"] for e in sorted(entrants, key=lambda e: e.get("rank") or 0)]
    if ranked != published:
        first = next(i for i, (a, b) in enumerate(zip(ranked, published)) if a != b)
        problems.append(f"ranks differ from rank {first + 1}: expected {ranked[first]}, "
                        f"published {published[first]}")

    n = export.get("selected_count", 0)
    by_user = {e["user_id"]: e for e in entrants}
    last = ""
    for rank, user in enumerate(ranked, start=1):
        at = by_user[user].get("selected_at")
        if rank <= n and at is None:
            problems.append(f"rank {rank} ({user}) should have been selected")
        if rank > n and at is not None:
            problems.append(f"rank {rank} ({user}) was selected out of rank order")
        if at is not None:
            if at < last:
                problems.append(f"rank {rank} ({user}) was selected before a better rank")
            last = at

    if problems:
        print("the draw does NOT verify:")
        for p in problems:
            print("  -", p)
        return 1
    print(f"the draw verifies: {len(entrants)} entrants, the first {n} ranks selected in order")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
