-- draw.lua — a raffle's draw and selection, run about once a second by every instance
-- (each run is atomic, so instances racing each other change nothing twice):
--   1. from starts_at: the draw is made once (`drawn`); entries close;
--   2. selected entrants whose claim_by has passed lapse;
--   3. until ends_at: the next entrants in rank order are selected while the units on
--      sale (remaining, over all items) exceed the open claims — stock-aware, so units
--      freed by a lapse, an expiry or a cancel go to the next entrant.
--
-- KEYS[1]  <base>admission   KEYS[2]  <base>ranking   KEYS[3]  <base>claims
-- KEYS[4]  <base>selection   KEYS[5..] <base>item:<sku> of every item of the campaign
-- ARGV[1]  starts_at (ms)    ARGV[2]  ends_at (ms)    ARGV[3]  claim_window (ms)
-- ARGV[4]  most entrants to select or lapse in this call (the caller calls again while
--          `more` says so: one call never blocks Redis for long)
-- ARGV[5..] initial stock of each item, in KEYS order (loaded only if absent)
-- Returns {drew (1 when this call made the draw), lapsed, selected, more, drawn (ms or 0)}

local adm, ranking, claims, selection = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
if now < tonumber(ARGV[1]) then
  return {0, 0, 0, 0, 0}
end
local max = tonumber(ARGV[4])
local drew = redis.call('HSETNX', adm, 'drawn', now)

local lapsed = 0
local due = redis.call('ZRANGEBYSCORE', claims, '-inf', '(' .. now, 'LIMIT', 0, max)
for _, u in ipairs(due) do
  local v = redis.call('HGET', selection, u)
  redis.call('HSET', selection, u, 'l' .. string.sub(v, 2))
  redis.call('ZREM', claims, u)
  lapsed = lapsed + 1
end
if lapsed > 0 then
  redis.call('HINCRBY', adm, 'lapsed', lapsed)
end
local more = (lapsed == max) and 1 or 0

local selected = 0
if now < tonumber(ARGV[2]) and more == 0 then
  local on_sale = 0
  for i = 5, #KEYS do
    ensure_item(KEYS[i], ARGV[i])
    on_sale = on_sale + tonumber(redis.call('HGET', KEYS[i], 'remaining'))
  end
  local nxt = tonumber(redis.call('HGET', adm, 'next') or '0')
  local want = math.min(on_sale - redis.call('ZCARD', claims), max)
  if want > 0 then
    local claim_by = now + tonumber(ARGV[3])
    local stamp = 's:' .. now .. ':' .. claim_by
    for _, m in ipairs(redis.call('ZRANGE', ranking, nxt, nxt + want - 1)) do
      local u = string.sub(m, 33)
      redis.call('HSET', selection, u, stamp)
      redis.call('ZADD', claims, claim_by, u)
      selected = selected + 1
    end
    if selected > 0 then
      redis.call('HSET', adm, 'next', nxt + selected)
    end
    if selected == max then
      more = 1
    end
  end
end
return {drew, lapsed, selected, more, tonumber(redis.call('HGET', adm, 'drawn'))}
