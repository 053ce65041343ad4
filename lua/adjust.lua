-- adjust.lua — an operator adds (delta > 0) or removes (delta < 0) units of an item.
-- Ledger: initial + adjusted = remaining + pending + paid stays true.
--
-- KEYS[1]  <base>item:<sku>
-- ARGV[1]  delta: a decimal integer, |delta| <= 10^12
-- ARGV[2]  initial stock (loaded only if absent)
-- Returns {"ok", remaining}, or, with nothing changed:
--   {"negative", remaining}      remaining + delta would be below zero
--   {"out-of-range", remaining}  delta is not such an integer, or remaining or adjusted
--                                would leave +-(2^53 - 1)
--
-- Numbers: Lua's are doubles, exact for integers up to 2^53 in magnitude. With
-- |delta| <= 10^12 and every counter checked to stay within +-(2^53 - 1) before anything
-- is written, each value this script computes is exact. The writes themselves are
-- HINCRBY with ARGV[1]'s own decimal text: integer arithmetic in Redis, never a double.
-- Every check runs before the first write (a script that errors halfway keeps its
-- earlier writes, and two HINCRBYs must both happen or neither).

local MAX_DELTA = 1000000000000
local SAFE = 9007199254740991 -- 2^53 - 1

local ikey, raw = KEYS[1], ARGV[1]

-- Read without writing: an absent item counts as freshly loaded.
local remaining, adjusted
if redis.call('EXISTS', ikey) == 1 then
  local v = redis.call('HMGET', ikey, 'remaining', 'adjusted')
  remaining, adjusted = tonumber(v[1]), tonumber(v[2]) or 0
else
  remaining, adjusted = tonumber(ARGV[2]), 0
end

-- HINCRBY takes "0" or an optional "-" and digits without leading zeros.
local canonical = raw == '0' or string.match(raw, '^%-?[1-9]%d*$') ~= nil
local delta = canonical and #raw <= 14 and tonumber(raw) or nil
if delta == nil or math.abs(delta) > MAX_DELTA then
  return {'out-of-range', remaining}
end
if math.abs(remaining) > SAFE or math.abs(adjusted) > SAFE
    or math.abs(remaining + delta) > SAFE or math.abs(adjusted + delta) > SAFE then
  return {'out-of-range', remaining}
end
if remaining + delta < 0 then
  return {'negative', remaining}
end

ensure_item(ikey, ARGV[2])
redis.call('HINCRBY', ikey, 'adjusted', raw)
return {'ok', redis.call('HINCRBY', ikey, 'remaining', raw)}
