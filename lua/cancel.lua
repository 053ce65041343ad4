-- cancel.lua — the owner cancels a pending pre-order; its units go back on sale.
--
-- KEYS[1]  <base>order:<id>   KEYS[2] <base>deadlines
-- ARGV[1]  base   ARGV[2] user id of the caller (must own the order)   ARGV[3] retain_ms
-- Built inside from the stored order: <base>item:<sku>, <base>user:<user>, <base>holders:<sku>.
-- Returns one of:
--   {"not_found"}                     no such order, or not the caller's
--   {"not_pending", ORDER_FIELDS...}  already paid / expired / cancelled
--   {"cancelled", ORDER_FIELDS...}

local okey, dkey, base, user, retain = KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])
local owner = redis.call('HGET', okey, 'user')
if not owner or owner ~= user then
  return {'not_found'}
end
if redis.call('HGET', okey, 'status') ~= 'pending_payment' then
  local r = order_fields(okey)
  table.insert(r, 1, 'not_pending')
  return r
end
close_pending(base, okey, dkey, 'cancelled', now_ms(), retain)
local r = order_fields(okey)
table.insert(r, 1, 'cancelled')
return r
