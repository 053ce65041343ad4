-- forget_consumers.lua — remove the outbox group's consumers of instances that are gone
-- (a restart or a crash leaves its consumer behind; its entries were reclaimed by the
-- living), and record the caller as alive.
--
-- Liveness is a heartbeat, not the consumer's `idle`: before Redis 7.2 an XREADGROUP
-- that finds nothing does not reset `idle`, so a living consumer on a quiet stream looks
-- as idle as a dead one. Each living instance stamps `<base>consumers[me] = now` on
-- every call (every `claim_idle`), and once a second through heartbeat.lua. A consumer
-- is forgotten when it holds nothing and its stamp is older than ARGV[3] ms — or,
-- without a stamp (made by hand, or by an older version), when its `idle` is.
--
-- Checked and deleted in one script: XGROUP DELCONSUMER orphans a consumer's pending
-- entries, so a consumer that read an entry since the check must never be deleted, and
-- inside a script none can.
--
-- KEYS[1]  <base>outbox   KEYS[2] <base>consumers (hash: consumer name -> last stamp, ms)
-- ARGV[1]  consumer group   ARGV[2] the caller's own consumer name (stamped, never deleted)
-- ARGV[3]  silence after which a consumer is gone, ms
-- Returns the number of consumers deleted.

local outbox, alive, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local min_idle, now = tonumber(ARGV[3]), now_ms()
redis.call('HSET', alive, me, now)
if redis.call('EXISTS', outbox) == 0 then
  return 0
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', outbox, group)
if not ok then
  return 0 -- no group yet
end
local deleted, present = 0, {}
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do
    info[c[i]] = c[i + 1]
  end
  local name = info['name']
  present[name] = true
  local stamp = tonumber(redis.call('HGET', alive, name))
  local silent = (stamp and now - stamp or tonumber(info['idle'])) >= min_idle
  if name ~= me and tonumber(info['pending']) == 0 and silent then
    redis.call('XGROUP', 'DELCONSUMER', outbox, group, name)
    redis.call('HDEL', alive, name)
    deleted = deleted + 1
  end
end
-- Stamps of consumers no longer in the group (deleted with the group, say) go too.
local stamps = redis.call('HGETALL', alive)
for i = 1, #stamps, 2 do
  if not present[stamps[i]] and now - tonumber(stamps[i + 1]) >= min_idle then
    redis.call('HDEL', alive, stamps[i])
  end
end
return deleted
