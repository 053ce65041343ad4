-- expire.lua — close due pending pre-orders (pay_by <= now) in one batch: each goes to
-- `expired`, its units back on sale, the user's quota freed. Safe to run from any number
-- of gateway instances at once: an order leaves `pending_payment` exactly once.
--
-- KEYS[1]  <base>deadlines
-- ARGV[1]  base   ARGV[2] batch size   ARGV[3] retain_ms
-- Returns {due_seen, sku1, qty1, sku2, qty2, ...} for each order expired by this call.
-- due_seen == batch size means more may be due: call again.

local dkey, base, batch, retain = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, batch)
local out = {#ids}
for _, id in ipairs(ids) do
  local okey = base .. 'order:' .. id
  if redis.call('HGET', okey, 'status') == 'pending_payment' then
    local sku, qty = close_pending(base, okey, 'expired', now, retain)
    out[#out + 1] = sku
    out[#out + 1] = qty
  else
    redis.call('ZREM', dkey, id)
  end
end
return out
