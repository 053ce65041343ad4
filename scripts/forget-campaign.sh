#!/usr/bin/env bash
# Deletes an ended campaign's keys from Redis once nothing of it is in flight:
#
#   FLASHGATE_ADMIN_TOKEN=... scripts/forget-campaign.sh <campaign id>
#
# Environment: ADMIN (the admin listener, http://127.0.0.1:9090), REDIS_URL
# (redis://127.0.0.1:6379/0; for Redis Cluster the node that owns the campaign's slot,
# see docs/operations.md), PREFIX (redis.key_prefix, fg), FORCE_ORDERS=1 (see below).
#
# It refuses, changing nothing, unless:
#   - no gateway runs the campaign: its file is removed and POST /admin/reload ran on every
#     instance (checked here on $ADMIN), so nothing re-creates its stock;
#   - no pre-order is pending (the deadlines set is empty);
#   - its outbox is empty and it has no dead letters: the store has every paid order and
#     refund event;
#   - no order key is left: they expire by themselves 7 days after they closed, and until
#     then a late or duplicate payment callback still gets its right answer
#     (refund_required) instead of 404. FORCE_ORDERS=1 deletes them anyway.
# Then it prints the campaign's ledger (GET /admin/campaigns before the reload is the
# place to archive it), deletes every key of the campaign (UNLINK) and forgets it.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 <campaign id>" >&2; exit 2; }
id=$1
ADMIN=${ADMIN:-http://127.0.0.1:9090}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
PREFIX=${PREFIX:-fg}
base="$PREFIX:{$id}:"
die() { printf 'refused: %s\n' "$*" >&2; exit 1; }
r() { redis-cli -u "$REDIS_URL" --no-auth-warning "$@"; }

[[ $id =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "$id is not a campaign id"
[ "$(r SISMEMBER "${PREFIX}:campaigns" "$id")" = 1 ] ||
  die "Redis at $REDIS_URL does not know campaign $id (prefix $PREFIX)"

auth=()
[ -n "${FLASHGATE_ADMIN_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $FLASHGATE_ADMIN_TOKEN")
running=$(curl -fsS "${auth[@]}" "$ADMIN/admin/campaigns") || die "cannot read $ADMIN/admin/campaigns"
if grep -q "\"id\":\"$id\"" <<<"$running"; then
  die "the gateway at $ADMIN still runs $id: remove its file, POST /admin/reload on every instance"
fi

pending=$(r ZCARD "${base}deadlines")
[ "$pending" = 0 ] || die "$pending pre-orders of $id are still pending"
outbox=$(r XLEN "${base}outbox")
[ "$outbox" = 0 ] || die "$outbox outbox entries of $id are not delivered yet (GET /admin/outbox)"
dead=$(r XLEN "${base}dead")
[ "$dead" = 0 ] || die "$dead dead letters of $id: fix the sink, POST /admin/outbox/replay-dead"
orders=$(r --scan --pattern "${base}order:*" | wc -l)
if [ "$orders" != 0 ] && [ "${FORCE_ORDERS:-0}" != 1 ]; then
  die "$orders order keys of $id are within their 7-day retention (FORCE_ORDERS=1 deletes them)"
fi

for key in $(r --scan --pattern "${base}item:*"); do
  printf '%s ' "${key#"$base"}"
  r HGETALL "$key" | paste -sd' '
done
deleted=$(r --scan --pattern "${base}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" --no-auth-warning UNLINK |
  awk '{n += $1} END {print n + 0}')
r SREM "${PREFIX}:campaigns" "$id" >/dev/null
echo "forgot campaign $id: $deleted keys deleted"
