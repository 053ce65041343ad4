-- reserve.lua — reserve units as pre-orders for a BATCH of buys of one campaign, in ONE
-- call (group commit: the buys that arrive while the campaign's calls are in flight ride
-- together). Each buy is handled exactly as if it had its own call, in batch order:
-- idempotency, pause, admission, stock, per-user limit — every check before its writes —
-- then the decrement, the pre-order record and its deadline. Two buys of one user in a
-- batch meet each other as two calls would (the second finds the first's pending order).
--
-- The gateway's side of this header is src/stock/reserve.rs: `ReserveCall::encode` writes
-- KEYS and ARGV in this order, `ReserveReply::parse` reads these replies (and refuses any
-- other shape).
--
-- Shared keys (one campaign, one Cluster slot):
-- KEYS[1] <base>deadlines   KEYS[2] <base>paused   KEYS[3] <base>claims
-- KEYS[4] <base>selection   KEYS[5] <base>admission KEYS[6] <base>entrants
-- KEYS[7] <base>ranking     (3-7 are read or written in a raffle only)
-- Then 4 keys per buy i (from 8 + 4(i-1)):
--   <base>item:<sku>  <base>user:<user>  <base>holders:<sku>
--   <base>order:<new id> (written only if a pre-order is created)
-- ARGV[1] base ("<prefix>:{<campaign>}:")   ARGV[2] campaign id
-- Then 13 values per buy i (from 3 + 13(i-1)):
--   sku, user, qty, per_user_limit, new order id, payment window (ms), amount_cents,
--   Idempotency-Key or "", initial stock (loaded only if absent),
--   the caller's holders version (`hv`) of the item or "" (see sold_out below),
--   deadline (ms, Redis' clock as the caller estimates it) or "": a buy that runs later
--     (Redis was frozen, the call queued behind others) reserves nothing — its caller
--     has given up and answered 503,
--   "raffle" when only a selected entrant with an open claim may reserve, else "",
--   raffle: the user's ranking member (ticket bytes .. user id), else ""
-- Returns one reply per buy, in order, each one of:
--   {"reserved", now}               a new pre-order, created at `now` (Redis' clock, ms);
--                                   pay_by = now + payment window; the rest the caller sent
--   {"existing", ORDER_FIELDS...}   the same Idempotency-Key, or the user's pending order for this item
--   {"idem_mismatch"}               the Idempotency-Key was used for another item
--   {"sold_out", remaining, hv}                      the caller's holders snapshot is current
--   {"sold_out", remaining, hv, "holders", user...}  users holding a pending order of the item
--   {"sold_out", remaining, hv, "many"}              too many to send; fetch them separately
--   {"limit", held}
--   {"paused"}                      the campaign is paused (checked here so every instance
--                                   obeys at once, not only after its next refresh)
--   {"late", now}                   past the deadline: nothing read, nothing written
--   {"not_selected", entry_state...} a raffle, and the user holds no open claim; the
--                                   user's state (lib.lua) for the refusal's body
-- Built inside: <base>order:<id> of an order id stored in the user's hash (an earlier
-- order: its idempotency key or pending order), which cannot be known before the call.
--
-- Shared writes are made once per batch, not once per buy: an item's counters are read
-- at its first buy and kept here (every later buy of the batch checks against them), and
-- the new holders and deadlines are collected; all are written before the script returns
-- (`flush`), and an item's holders before anything reads them. Nothing else runs while a
-- script runs, so no one can observe the difference; it saves three commands per buy.

local dkey = KEYS[1]
local base, campaign = ARGV[1], ARGV[2]
local MAX_HOLDERS_INLINE = 5000
-- One clock reading for every deadline and every new pre-order's times of the batch.
local now = now_ms()
-- Numbers handed to redis.call are written as integers: Redis would format a Lua number
-- as a double (%.17g, a bignum conversion), a measurable share of this script's CPU.
local function int(x)
  return string.format('%d', x)
end
local now_s = int(now)
local paused = redis.call('EXISTS', KEYS[2]) == 1

-- Per item key: {remaining, pending, hv, changed} as this batch has left them.
local items = {}
-- Per holders key: the {user, id, ...} pairs this batch adds (one HSET each at the end).
local new_holders = {}
-- The {pay_by, id, ...} pairs of this batch's new pre-orders (one ZADD at the end).
local new_deadlines = {}

local function item_state(ikey, initial)
  local st = items[ikey]
  if st then
    return st
  end
  local it = redis.call('HMGET', ikey, 'remaining', 'pending', 'hv')
  if not it[1] then
    ensure_item(ikey, initial)
    it = {initial, '0', false}
  end
  st = {tonumber(it[1]), tonumber(it[2]), tonumber(it[3] or '0'), false}
  items[ikey] = st
  return st
end

local function flush_holders(hkey)
  local pairs_ = new_holders[hkey]
  if pairs_ then
    redis.call('HSET', hkey, unpack(pairs_))
    new_holders[hkey] = nil
  end
end

local function flush()
  for ikey, st in pairs(items) do
    if st[4] then
      redis.call('HSET', ikey, 'remaining', int(st[1]), 'pending', int(st[2]), 'hv', int(st[3]))
    end
  end
  for hkey in pairs(new_holders) do
    flush_holders(hkey)
  end
  if #new_deadlines > 0 then
    redis.call('ZADD', dkey, unpack(new_deadlines))
  end
end

local function reserve_one(ikey, ukey, hkey, okey, a)
  local sku, user = ARGV[a], ARGV[a + 1]
  local qty, limit = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local id, window, amount, idem = ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7]
  local deadline = ARGV[a + 10]
  if deadline ~= '' and now > tonumber(deadline) then
    return {'late', now}
  end
  if paused then
    return {'paused'}
  end

  -- One read of the user's hash: units held, the pending order of this item, the
  -- Idempotency-Key's order.
  local u = redis.call('HMGET', ukey, 'held', 'p:' .. sku, 'i:' .. idem)
  local held, pending, prev = tonumber(u[1] or '0'), u[2], idem ~= '' and u[3]

  if prev then
    local prev_key = base .. 'order:' .. prev
    if redis.call('EXISTS', prev_key) == 1 then
      if redis.call('HGET', prev_key, 'sku') ~= sku then
        return {'idem_mismatch'}
      end
      -- Its buyer knows it now: void.lua must never undo it.
      redis.call('HSET', prev_key, 'told', 1)
      local r = order_fields(prev_key)
      table.insert(r, 1, 'existing')
      return r
    end
  end

  if pending then
    local pending_key = base .. 'order:' .. pending
    if redis.call('HGET', pending_key, 'status') == 'pending_payment' then
      redis.call('HSET', pending_key, 'told', 1)
      local r = order_fields(pending_key)
      table.insert(r, 1, 'existing')
      return r
    end
  end

  -- A raffle admits only a selected entrant whose claim is still open (never after
  -- claim_by); a retry of an order made under the claim was answered above.
  local raffle = ARGV[a + 11] == 'raffle'
  if raffle then
    local claim_by = redis.call('ZSCORE', KEYS[3], user)
    if not claim_by or tonumber(claim_by) < now then
      local r = entry_state(KEYS[5], KEYS[6], KEYS[7], KEYS[4], user, ARGV[a + 12])
      table.insert(r, 1, 'not_selected')
      return r
    end
  end

  -- The item as this batch has left it: read once per batch, written once by flush.
  local st = item_state(ikey, ARGV[a + 8])
  local remaining = st[1]
  if remaining < qty then
    local hv = int(st[3])
    local r = {'sold_out', remaining, hv}
    if remaining <= 0 and hv ~= ARGV[a + 9] then
      flush_holders(hkey)
      if redis.call('HLEN', hkey) > MAX_HOLDERS_INLINE then
        r[4] = 'many'
      else
        r[4] = 'holders'
        for _, u in ipairs(redis.call('HKEYS', hkey)) do
          r[#r + 1] = u
        end
      end
    end
    return r
  end
  if held + qty > limit then
    return {'limit', held}
  end

  -- all checks passed: write (the item's counters, holders and deadline by flush).
  local pay_by = int(now + window)
  st[1], st[2], st[3], st[4] = remaining - qty, st[2] + qty, st[3] + 1, true
  if idem ~= '' then
    redis.call('HSET', ukey, 'held', int(held + qty), 'p:' .. sku, id, 'i:' .. idem, id)
  else
    redis.call('HSET', ukey, 'held', int(held + qty), 'p:' .. sku, id)
  end
  local h = new_holders[hkey]
  if not h then
    h = {}
    new_holders[hkey] = h
  end
  h[#h + 1] = user
  h[#h + 1] = id
  redis.call('HSET', okey, 'id', id, 'campaign', campaign, 'sku', sku, 'user', user,
    'qty', ARGV[a + 2], 'amount', amount, 'status', 'pending_payment', 'created', now_s,
    'pay_by', pay_by)
  new_deadlines[#new_deadlines + 1] = pay_by
  new_deadlines[#new_deadlines + 1] = id
  if raffle then
    -- The claim is used: its units are held now, and never come back to this entrant.
    redis.call('ZREM', KEYS[3], user)
    local v = redis.call('HGET', KEYS[4], user)
    redis.call('HSET', KEYS[4], user, 'c' .. string.sub(v, 2))
    redis.call('HINCRBY', KEYS[5], 'claimed', 1)
  end
  -- The caller knows every field of the new order but its time: send only that.
  return {'reserved', now}
end

local replies = {}
local n = (#ARGV - 2) / 13
for i = 1, n do
  local k = 8 + 4 * (i - 1)
  replies[i] = reserve_one(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], 3 + 13 * (i - 1))
end
flush()
return replies
