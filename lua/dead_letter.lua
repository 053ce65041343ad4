-- dead_letter.lua — move one outbox entry that failed too often to the dead-letter stream.
--
-- KEYS[1]  <base>outbox   KEYS[2] <base>dead
-- ARGV[1]  consumer group   ARGV[2] entry id   ARGV[3] attempts   ARGV[4] last error
-- Returns the new dead-letter entry id, or false when the entry is already gone.

local outbox, dead, group, id = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local e = redis.call('XRANGE', outbox, id, id)
if #e == 0 then
  redis.call('XACK', outbox, group, id)
  return false
end
local fields = e[1][2]
fields[#fields + 1] = 'attempts'
fields[#fields + 1] = ARGV[3]
fields[#fields + 1] = 'last_error'
fields[#fields + 1] = ARGV[4]
local new_id = redis.call('XADD', dead, '*', unpack(fields))
redis.call('XACK', outbox, group, id)
redis.call('XDEL', outbox, id)
return new_id
