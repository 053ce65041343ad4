-- expire.lua — close due pending pre-orders (pay_by <= now) in one batch: each goes to
-- `expired`, its units back on sale, the user's quota freed. Safe to run from any number
-- of gateway instances at once: an order leaves `pending_payment` exactly once.
--
-- KEYS[1]  <base>deadlines
-- ARGV[1]  base   ARGV[2] batch size   ARGV[3] retain_ms
-- ARGV[4]  now (ms): the sweeping gateway's clock, so tests can move time. pay_by was set
--          from Redis' clock; the two differ by the hosts' clock skew (milliseconds under
--          NTP), which only moves an expiry by as much. confirm.lua judges a late payment
--          by Redis' own clock, and an order leaves `pending_payment` exactly once.
-- Built inside from the ids in the deadlines set: <base>order:<id>, and from each stored
-- order <base>item:<sku>, <base>user:<user>, <base>holders:<sku>.
-- Returns {due_seen, sku1, qty1, sku2, qty2, ...} for each order expired by this call.
-- due_seen == batch size means more may be due: call again.

local dkey, base, batch, retain = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, batch)
local out = {#ids}
for _, id in ipairs(ids) do
  local okey = base .. 'order:' .. id
  if redis.call('HGET', okey, 'status') == 'pending_payment' then
    local sku, qty = close_pending(base, okey, dkey, 'expired', now, retain)
    out[#out + 1] = sku
    out[#out + 1] = qty
  else
    redis.call('ZREM', dkey, id)
  end
end
return out
