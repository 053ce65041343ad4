-- heartbeat.lua — stamp the caller's outbox consumer alive, and name the consumers whose
-- heartbeat is stale: their instance is gone (crashed, killed), so the entries they hold
-- can be reclaimed now rather than after `claim_idle`.
--
-- Every living instance stamps `<base>consumers[me] = now` once a second, on a task of
-- its own (a slow sink never delays it). Redis' clock on both sides, so instances'
-- clocks never matter. A consumer without a stamp (made by hand, or by an older version)
-- is never named: it waits for `claim_idle` as before.
--
-- KEYS[1]  <base>consumers (hash: consumer name -> last stamp, ms)
-- ARGV[1]  the caller's consumer name   ARGV[2] a stamp older than this (ms) is stale
-- Returns the names of the stale consumers.

local alive, me, stale_ms = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
redis.call('HSET', alive, me, now)
local stale = {}
local stamps = redis.call('HGETALL', alive)
for i = 1, #stamps, 2 do
  if now - tonumber(stamps[i + 1]) > stale_ms then
    stale[#stale + 1] = stamps[i]
  end
end
return stale
