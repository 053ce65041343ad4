-- void.lua — undo reservations whose buyers were answered 503 although their reserve
-- call may have run (its reply was lost: the connection dropped, or it came after the
-- gateway gave up): a buy answered 503 reserved nothing (docs/guarantees.md). The
-- gateway that answered runs this before its campaign lane sends anything else. Its
-- binding (the order of KEYS and ARGV, the reply) is `VoidCall` / `VoidReply` in
-- src/stock/reserve.rs.
--
-- An order is undone only while it is pending and nobody was told about it: reserve.lua
-- marks an order `told` when it returns it to a retry (on any instance); such an order
-- stays, its buyer knows it. Undoing is exact: the units go back to `remaining`, the
-- user's quota and holder entry are freed, the order and its deadline are deleted, its
-- Idempotency-Key no longer points at it (a retry with the key reserves afresh), and a
-- raffle entrant's claim it used is open again (until its claim_by).
--
-- KEYS[1] <base>deadlines  KEYS[2] <base>claims  KEYS[3] <base>selection
-- KEYS[4] <base>admission  KEYS[5..] <base>order:<id> of each reservation to undo
-- ARGV[1] base, then per order: id, Idempotency-Key or ""
-- Built inside from each stored order: <base>item:<sku>, <base>user:<user>,
-- <base>holders:<sku>.
-- Returns {undone, kept (told or no longer pending)}; an order that does not exist was
-- never made (the call did not run, or refused) and counts in neither.

local dkey, claims, selection, adm = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base = ARGV[1]
local undone, kept = 0, 0
for i = 5, #KEYS do
  local okey = KEYS[i]
  local a = 2 + 2 * (i - 5)
  local id, idem = ARGV[a], ARGV[a + 1]
  local f = redis.call('HMGET', okey, 'status', 'told', 'sku', 'user', 'qty')
  if f[1] == 'pending_payment' and not f[2] then
    local sku, user, qty = f[3], f[4], tonumber(f[5])
    local ikey = base .. 'item:' .. sku
    local ukey = base .. 'user:' .. user
    redis.call('HINCRBY', ikey, 'remaining', qty)
    redis.call('HINCRBY', ikey, 'pending', -qty)
    redis.call('HINCRBY', ukey, 'held', -qty)
    drop_holder(base, ikey, sku, user, id)
    if idem ~= '' and redis.call('HGET', ukey, 'i:' .. idem) == id then
      redis.call('HDEL', ukey, 'i:' .. idem)
    end
    redis.call('ZREM', dkey, id)
    redis.call('DEL', okey)
    local v = redis.call('HGET', selection, user)
    if v and string.sub(v, 1, 1) == 'c' then
      redis.call('HSET', selection, user, 's' .. string.sub(v, 2))
      redis.call('ZADD', claims, tonumber(string.match(v, ':(%d+)$')), user)
      redis.call('HINCRBY', adm, 'claimed', -1)
    end
    undone = undone + 1
  elseif f[1] then
    kept = kept + 1
  end
end
return {undone, kept}
