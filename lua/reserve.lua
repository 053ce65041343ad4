-- reserve.lua — reserve `qty` units of one item for one user as a pre-order, in ONE call:
-- idempotency, stock check, per-user limit, decrement, pre-order record, deadline entry.
--
-- KEYS[1]  <base>item:<sku>
-- KEYS[2]  <base>user:<user>
-- KEYS[3]  <base>deadlines
-- KEYS[4]  <base>paused (exists while an operator has paused the campaign)
-- KEYS[5]  <base>holders:<sku>
-- KEYS[6]  <base>order:<ARGV[7]> (the new pre-order, written only if one is created)
-- ARGV[1]  base ("<prefix>:{<campaign>}:")     ARGV[2]  campaign id
-- ARGV[3]  sku                                 ARGV[4]  user id
-- ARGV[5]  qty                                 ARGV[6]  per_user_limit (units per campaign)
-- ARGV[7]  new order id (used only if a pre-order is created)
-- ARGV[8]  payment window (ms)                 ARGV[9]  amount_cents (price * qty)
-- ARGV[10] Idempotency-Key, or ""              ARGV[11] initial stock (loaded only if absent)
-- ARGV[12] the caller's holders version (`hv`) of this item, or "" (see sold_out below)
-- ARGV[13] deadline (ms, Redis' clock as the caller estimates it), or "": a script that
--          runs later than this (Redis was frozen, the call queued behind others) reserves
--          nothing — the caller has given up and answered 503 (SPEC §1.5)
-- ARGV[14] "raffle" when only selected entrants with an open claim may reserve, else ""
-- ARGV[15] raffle: the user's ranking member (ticket bytes .. user id), else ""
-- KEYS[7]  <base>claims   KEYS[8]  <base>selection   KEYS[9]  <base>admission
-- KEYS[10] <base>entrants KEYS[11] <base>ranking     (read or written in a raffle only)
-- Returns one of:
--   {"reserved", ORDER_FIELDS...}   a new pre-order
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

local ikey, ukey, dkey, hkey, okey = KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6]
-- One clock reading for the deadline and the new pre-order's times.
local now = now_ms()
if ARGV[13] ~= '' and now > tonumber(ARGV[13]) then
  return {'late', now}
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {'paused'}
end
local base, campaign, sku, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local qty, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local id, window, amount, idem = ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]

ensure_item(ikey, ARGV[11])

if idem ~= '' then
  local prev = redis.call('HGET', ukey, 'i:' .. idem)
  if prev then
    local prev_key = base .. 'order:' .. prev
    if redis.call('EXISTS', prev_key) == 1 then
      if redis.call('HGET', prev_key, 'sku') ~= sku then
        return {'idem_mismatch'}
      end
      local r = order_fields(prev_key)
      table.insert(r, 1, 'existing')
      return r
    end
  end
end

local pending = redis.call('HGET', ukey, 'p:' .. sku)
if pending then
  local pending_key = base .. 'order:' .. pending
  if redis.call('HGET', pending_key, 'status') == 'pending_payment' then
    local r = order_fields(pending_key)
    table.insert(r, 1, 'existing')
    return r
  end
end

-- A raffle admits only a selected entrant whose claim is still open (never after
-- claim_by); a retry of an order made under the claim was answered above.
local raffle = ARGV[14] == 'raffle'
if raffle then
  local claim_by = redis.call('ZSCORE', KEYS[7], user)
  if not claim_by or tonumber(claim_by) < now then
    local r = entry_state(KEYS[9], KEYS[10], KEYS[11], KEYS[8], user, ARGV[15])
    table.insert(r, 1, 'not_selected')
    return r
  end
end

local MAX_HOLDERS_INLINE = 5000
local remaining = tonumber(redis.call('HGET', ikey, 'remaining'))
if remaining < qty then
  local hv = redis.call('HGET', ikey, 'hv') or '0'
  local r = {'sold_out', remaining, hv}
  if remaining <= 0 and hv ~= ARGV[12] then
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
local held = tonumber(redis.call('HGET', ukey, 'held') or '0')
if held + qty > limit then
  return {'limit', held}
end

-- all checks passed: write
local pay_by = now + window
redis.call('HINCRBY', ikey, 'remaining', -qty)
redis.call('HINCRBY', ikey, 'pending', qty)
redis.call('HINCRBY', ukey, 'held', qty)
redis.call('HSET', ukey, 'p:' .. sku, id)
redis.call('HSET', hkey, user, id)
redis.call('HINCRBY', ikey, 'hv', 1)
if idem ~= '' then
  redis.call('HSET', ukey, 'i:' .. idem, id)
end
redis.call('HSET', okey, 'id', id, 'campaign', campaign, 'sku', sku, 'user', user,
  'qty', qty, 'amount', amount, 'status', 'pending_payment', 'created', now, 'pay_by', pay_by)
redis.call('ZADD', dkey, pay_by, id)
if raffle then
  -- The claim is used: its units are held now, and never come back to this entrant.
  redis.call('ZREM', KEYS[7], user)
  local v = redis.call('HGET', KEYS[8], user)
  redis.call('HSET', KEYS[8], user, 'c' .. string.sub(v, 2))
  redis.call('HINCRBY', KEYS[9], 'claimed', 1)
end
local r = order_fields(okey)
table.insert(r, 1, 'reserved')
return r
