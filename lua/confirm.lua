-- confirm.lua — apply a verified payment callback to a pre-order: one atomic transition.
--
-- KEYS[1]  <base>order:<id>   KEYS[2] <base>outbox   KEYS[3] <base>deadlines
-- ARGV[1]  base   ARGV[2] payment_id   ARGV[3] amount_cents paid   ARGV[4] retain_ms
-- ARGV[5]  "1" when the caller WAITs for replicas after this call (redis.replica_ack): a
--          repeat (`*_dup`) then writes a mark on the order, so that the WAIT covers it —
--          and with it, replication being ordered, the first answer's writes.
-- Built inside from the stored order: <base>item:<sku>, <base>user:<user>, <base>holders:<sku>.
-- Returns {outcome, ORDER_FIELDS...} with outcome one of:
--   "paid"        pending -> paid; a `paid` event is in the outbox
--   "paid_dup"    already paid with this payment_id; nothing new in the outbox
--   "second"      already paid with ANOTHER payment_id (a second charge): ONE
--                 `second_charge` event for this payment_id is in the outbox; the order,
--                 its ledger and stock are untouched
--   "second_dup"  that second charge was reported before; nothing new in the outbox
--   "refund"      expired/cancelled (or past its deadline) -> refund_required; ONE refund event
--   "refund_dup"  already refund_required; nothing new in the outbox
--   "mismatch"    amount differs; the order stays pending
-- or {"not_found"}.
-- A pending order past pay_by is expired here first (same as the sweeper would), so a
-- callback racing the sweeper ends in exactly one of paid or refund_required.

local okey, outbox, dkey = KEYS[1], KEYS[2], KEYS[3]
local base, payment_id, paid_amount, retain = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local function reply(outcome)
  if ARGV[5] == '1' and string.sub(outcome, -4) == '_dup' then
    redis.call('HSET', okey, 'repeated_at', now_ms())
  end
  local r = order_fields(okey)
  table.insert(r, 1, outcome)
  return r
end

local f = redis.call('HMGET', okey, 'status', 'amount', 'pay_by', 'sku', 'user', 'qty', 'id')
local status = f[1]
if not status then
  return {'not_found'}
end
if status == 'paid' then
  local paid_id = redis.call('HGET', okey, 'payment_id')
  if paid_id == payment_id then
    return reply('paid_dup')
  end
  -- A second charge: the mark on the order hash makes retries (and parallel copies) of
  -- this callback queue nothing more; it expires with the order.
  local mark = 'refund:' .. payment_id
  if redis.call('HEXISTS', okey, mark) == 1 then
    return reply('second_dup')
  end
  local now = now_ms()
  -- The event is the order as a refund of THIS payment, for the amount charged.
  outbox_add(outbox, okey, 'second_charge',
    {status = 'refund_required', payment_id = payment_id, paid_at = now, amount = paid_amount})
  redis.call('HSET', okey, mark, now)
  return reply('second')
end
if status == 'refund_required' then
  return reply('refund_dup')
end

local now = now_ms()
if status == 'pending_payment' then
  if f[2] ~= paid_amount then
    return reply('mismatch')
  end
  if now <= tonumber(f[3]) then
    local sku, user, qty, id = f[4], f[5], tonumber(f[6]), f[7]
    local ikey = base .. 'item:' .. sku
    redis.call('HINCRBY', ikey, 'pending', -qty)
    redis.call('HINCRBY', ikey, 'paid', qty)
    drop_holder(base, ikey, sku, user, id)
    redis.call('ZREM', dkey, id)
    redis.call('HSET', okey, 'status', 'paid', 'payment_id', payment_id, 'paid_at', now)
    redis.call('PEXPIRE', okey, retain)
    outbox_add(outbox, okey, 'paid')
    return reply('paid')
  end
  close_pending(base, okey, dkey, 'expired', now, retain)
end

-- expired or cancelled before payment: the money must go back, exactly once
local sku, qty = redis.call('HGET', okey, 'sku'), tonumber(redis.call('HGET', okey, 'qty'))
redis.call('HINCRBY', base .. 'item:' .. sku, 'refund_required', qty)
redis.call('HSET', okey, 'status', 'refund_required', 'payment_id', payment_id, 'paid_at', now)
outbox_add(outbox, okey, 'refund_required')
return reply('refund')
