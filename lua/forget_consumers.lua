-- forget_consumers.lua — remove the outbox group's consumers that hold nothing and have
-- been silent for a long time: instances that are gone (a restart or a crash leaves its
-- consumer behind; its entries were reclaimed by the living). Checked and deleted in one
-- script: XGROUP DELCONSUMER orphans a consumer's pending entries, so a consumer that
-- read an entry since the check must never be deleted, and inside a script none can.
-- A living consumer reads every poll, so it is never this idle; were one deleted anyway,
-- its next XREADGROUP creates it again.
--
-- KEYS[1]  <base>outbox
-- ARGV[1]  consumer group   ARGV[2] the caller's own consumer name (always kept)
-- ARGV[3]  minimum idle time, ms
-- Returns the number of consumers deleted.

local outbox, group, me, min_idle = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', outbox) == 0 then
  return 0
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', outbox, group)
if not ok then
  return 0 -- no group yet
end
local deleted = 0
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do
    info[c[i]] = c[i + 1]
  end
  if info['name'] ~= me and tonumber(info['pending']) == 0 and tonumber(info['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', outbox, group, info['name'])
    deleted = deleted + 1
  end
end
return deleted
