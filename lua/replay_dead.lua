-- replay_dead.lua — re-queue dead letters into the outbox for another round of delivery.
--
-- KEYS[1]  <base>dead   KEYS[2] <base>outbox
-- ARGV[1]  max entries to move
-- Returns the number of entries moved.

local dead, outbox, n = KEYS[1], KEYS[2], tonumber(ARGV[1])
local entries = redis.call('XRANGE', dead, '-', '+', 'COUNT', n)
for _, e in ipairs(entries) do
  local src, fields = e[2], {}
  for i = 1, #src, 2 do
    if src[i] ~= 'attempts' and src[i] ~= 'last_error' then
      fields[#fields + 1] = src[i]
      fields[#fields + 1] = src[i + 1]
    end
  end
  redis.call('XADD', outbox, '*', unpack(fields))
  redis.call('XDEL', dead, e[1])
end
return #entries
