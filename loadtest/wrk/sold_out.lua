-- sold_out.lua — wrk on the sold-out path: new users from new IPs press buy on an item
-- with no stock. After the first Redis answer the gateway knows it is sold out and
-- answers 409 `sold-out` from memory (it asks Redis again every 250 ms), so this measures
-- admission (limits, identity, routing) and the 409 itself.
--
-- Gateway: loadtest/config/gateway-header.toml, campaign `bench`, item `sold-out`
-- (stock 0):
--
--   FLASHGATE_ADMIN_TOKEN=t target/release/flashgate serve --config loadtest/config/gateway-header.toml &
--   wrk -t2 -c64 -d5s --latency -s loadtest/wrk/sold_out.lua http://127.0.0.1:18080
--
-- No Idempotency-Key is sent: a keyed retry always goes to Redis (its first attempt may
-- have reserved), which is not the path measured here. Environment: CAMPAIGN (bench),
-- SKU (sold-out), WRK_STATUS=0 to skip counting statuses. Every answer should be 409.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local campaign = common.env("CAMPAIGN", "bench")
local sku = common.env("SKU", "sold-out")
local path = "/seckill/campaigns/" .. campaign .. "/items/" .. sku .. "/orders"
local n = 0

setup = common.setup
done = common.done

function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["X-User-Id"] = "s" .. run .. "-" .. tid .. "-" .. n,
    ["X-Forwarded-For"] = common.ip(tid, n),
    ["Content-Length"] = "0",
  })
end

if common.counting() then
  response = function(status) common.count(status) end
end
