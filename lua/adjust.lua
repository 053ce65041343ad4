-- adjust.lua — an operator adds (delta > 0) or removes (delta < 0) units of an item.
-- Ledger: initial + adjusted = remaining + pending + paid stays true.
--
-- KEYS[1]  <base>item:<sku>
-- ARGV[1]  delta   ARGV[2] initial stock (loaded only if absent)
-- Returns {"ok", remaining} or {"negative", remaining} (nothing changed).

local ikey, delta = KEYS[1], tonumber(ARGV[1])
ensure_item(ikey, ARGV[2])
local remaining = tonumber(redis.call('HGET', ikey, 'remaining'))
if remaining + delta < 0 then
  return {'negative', remaining}
end
redis.call('HINCRBY', ikey, 'adjusted', delta)
return {'ok', redis.call('HINCRBY', ikey, 'remaining', delta)}
