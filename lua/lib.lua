-- lib.lua — shared helpers, prepended to every script at build time (include_str!).
--
-- Key layout (all keys of a campaign share the hash tag {campaign}, so every script
-- touches exactly one Redis Cluster slot). `base` is "<prefix>:{<campaign>}:".
--   <base>item:<sku>     hash  initial remaining pending paid expired cancelled adjusted refund_required
--   <base>user:<user>    hash  held (units pending+paid), p:<sku> -> pending order id, i:<idem key> -> order id
--   <base>holders:<sku> hash  user -> pending order id (who may retry after a sell-out);
--                             item field `hv` counts its changes
--   <base>order:<id>     hash  the ORDER_FIELDS below; refund:<payment_id> -> ms for each
--                             second charge of a paid order already queued for refund;
--                             told = 1 once returned to a retry (void.lua keeps it)
--   <base>deadlines      zset  pending order ids scored by pay_by (ms)
--   <base>outbox         stream paid / refund_required / second_charge events for the sink
--   <base>dead           stream outbox entries that failed too often
--   <base>consumers      hash  outbox consumer name -> last heartbeat (ms)
--   <base>admission      hash  seed, drawn (ms), next (entrants considered), claimed, lapsed
--   <base>entrants       hash  raffle entrant -> entered at (ms)
--   <base>ranking        zset  score 0, member = 32 ticket bytes .. user id (byte order = rank)
--   <base>claims         zset  selected entrants with an open claim, scored by claim_by (ms)
--   <base>selection      hash  selected entrant -> "<s|c|l>:<selected at>:<claim by>"
-- Every key that can be known before a call is passed in KEYS. Only keys that depend on
-- what Redis holds are built inside, from `base`: the order key of an order id read from
-- a user or deadline entry, and the item / user / holders keys of a stored order's sku
-- and user. They carry the campaign's hash tag, so they live in the declared keys' slot.
-- Every check runs before the first write: a script that errors halfway keeps its
-- earlier writes.

local ORDER_FIELDS = {'id', 'campaign', 'sku', 'user', 'qty', 'amount', 'status',
                      'created', 'pay_by', 'payment_id', 'paid_at'}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function order_fields(okey)
  return redis.call('HMGET', okey, unpack(ORDER_FIELDS))
end

-- Creates an item's counters once; never re-adds stock to an existing item.
local function ensure_item(ikey, initial)
  if redis.call('EXISTS', ikey) == 0 then
    redis.call('HSET', ikey, 'initial', initial, 'remaining', initial, 'pending', 0,
      'paid', 0, 'expired', 0, 'cancelled', 0, 'adjusted', 0, 'refund_required', 0)
    return 1
  end
  return 0
end

-- The user no longer holds pending order `id` of this item (closed or paid).
local function drop_holder(base, ikey, sku, user, id)
  local ukey = base .. 'user:' .. user
  if redis.call('HGET', ukey, 'p:' .. sku) == id then
    redis.call('HDEL', ukey, 'p:' .. sku)
  end
  local hkey = base .. 'holders:' .. sku
  if redis.call('HGET', hkey, user) == id then
    redis.call('HDEL', hkey, user)
    redis.call('HINCRBY', ikey, 'hv', 1)
  end
end

-- Moves a PENDING order to `to` ('expired' or 'cancelled'): its units go back on sale
-- and the user's quota is freed. The caller has checked that the order is pending.
-- `dkey` is the campaign's deadlines key (from KEYS).
local function close_pending(base, okey, dkey, to, now, retain_ms)
  local f = redis.call('HMGET', okey, 'id', 'sku', 'user', 'qty')
  local id, sku, user, qty = f[1], f[2], f[3], tonumber(f[4])
  local ikey = base .. 'item:' .. sku
  redis.call('HINCRBY', ikey, 'remaining', qty)
  redis.call('HINCRBY', ikey, 'pending', -qty)
  redis.call('HINCRBY', ikey, to, qty)
  redis.call('HINCRBY', base .. 'user:' .. user, 'held', -qty)
  drop_holder(base, ikey, sku, user, id)
  redis.call('ZREM', dkey, id)
  redis.call('HSET', okey, 'status', to, 'closed_at', now)
  redis.call('PEXPIRE', okey, retain_ms)
  return sku, qty
end

-- Appends an outbox event carrying the whole order to the stream `outbox` (from KEYS).
-- `over` (optional) replaces some order fields in the event only, not in the order.
local function outbox_add(outbox, okey, event, over)
  local vals = order_fields(okey)
  local args = {outbox, '*', 'event', event}
  for i, name in ipairs(ORDER_FIELDS) do
    local v = vals[i]
    if over and over[name] then
      v = over[name]
    end
    if v then
      args[#args + 1] = name
      args[#args + 1] = v
    end
  end
  return redis.call('XADD', unpack(args))
end

-- A raffle entrant's state, for a refusal or `entries/me`:
-- {entered at or false, drawn (ms) or false, next, selection or false, rank or false}.
-- `member` is the entrant's ranking member (ticket bytes .. user); the rank is known
-- only after the draw.
local function entry_state(adm, entrants, ranking, selection, user, member)
  local entered = redis.call('HGET', entrants, user)
  local a = redis.call('HMGET', adm, 'drawn', 'next')
  local rank = false
  if entered and a[1] then
    local r = redis.call('ZRANK', ranking, member)
    if r then
      rank = r + 1
    end
  end
  return {entered or false, a[1] or false, a[2] or '0',
          redis.call('HGET', selection, user) or false, rank}
end
