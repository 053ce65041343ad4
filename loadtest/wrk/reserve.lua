-- reserve.lua — wrk on the reserve path: every request is a NEW user from a NEW client
-- IP pressing buy on an item whose stock does not run out, so every answer should be
-- 201 (one Redis round trip, one pre-order, per request).
--
-- Gateway: loadtest/config/gateway-header.toml (identity from the trusted X-User-Id
-- header, loopback trusted for X-Forwarded-For), campaign `bench`, item `reserve`:
--
--   FLASHGATE_ADMIN_TOKEN=t target/release/flashgate serve --config loadtest/config/gateway-header.toml &
--   wrk -t2 -c64 -d5s --latency -s loadtest/wrk/reserve.lua http://127.0.0.1:18080
--
-- Users are "w<run>-<thread>-<n>" (a new run tag each time, so re-runs find no existing
-- orders); IPs are 10+<thread>.x.y.z, one per request. Environment: CAMPAIGN (bench),
-- SKU (reserve), WRK_STATUS=0 to skip counting statuses. Prints "status <code>: <n>" and
-- one "flashgate-wrk {json}" line at the end.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local campaign = common.env("CAMPAIGN", "bench")
local sku = common.env("SKU", "reserve")
local path = "/seckill/campaigns/" .. campaign .. "/items/" .. sku .. "/orders"
local n = 0

setup = common.setup
done = common.done

function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["X-User-Id"] = "w" .. run .. "-" .. tid .. "-" .. n,
    ["X-Forwarded-For"] = common.ip(tid, n),
    ["Content-Length"] = "0",
  })
end

if common.counting() then
  response = function(status) common.count(status) end
end
