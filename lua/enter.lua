-- enter.lua — a user enters a raffle, once.
--
-- KEYS[1]  <base>admission   KEYS[2]  <base>entrants   KEYS[3]  <base>ranking
-- ARGV[1]  user id
-- ARGV[2]  ranking member: the user's 32 ticket bytes .. user id
-- ARGV[3]  starts_at (ms): entries close then, by Redis' clock as well as the caller's
-- Returns {"entered", at} | {"existing", at} | {"closed"}
-- Once the draw is made (`drawn`) no entry is added: an entrant arriving after it would
-- change the ranks already published.

local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then
  return {'existing', prev}
end
local now = now_ms()
if redis.call('HEXISTS', KEYS[1], 'drawn') == 1 or now >= tonumber(ARGV[3]) then
  return {'closed'}
end
redis.call('HSET', KEYS[2], ARGV[1], now)
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return {'entered', now}
