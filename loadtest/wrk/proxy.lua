-- proxy.lua — wrk on the proxy path: ordinary store traffic (GET /products/<n>) that
-- flashgate passes through to the store unchanged. Run it against the gateway and against
-- the store directly; the ratio is the proxy's cost.
--
-- Gateway: loadtest/config/gateway-header.toml (or gateway.toml: identity plays no part
-- here), the demo store on 127.0.0.1:13000:
--
--   target/release/demo_store --listen 127.0.0.1:13000 --orders var/orders.jsonl &
--   FLASHGATE_ADMIN_TOKEN=t target/release/flashgate serve --config loadtest/config/gateway-header.toml &
--   wrk -t2 -c64 -d5s --latency -s loadtest/wrk/proxy.lua http://127.0.0.1:18080   # through flashgate
--   wrk -t2 -c64 -d5s --latency -s loadtest/wrk/proxy.lua http://127.0.0.1:13000   # the store directly
--
-- Paths rotate over PRODUCTS (1000) products. Environment: PRODUCTS, WRK_STATUS=0 to skip
-- counting statuses. Every answer should be 200.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local products = tonumber(common.env("PRODUCTS", "1000"))
local n = 0

setup = common.setup
done = common.done

function request()
  n = n + 1
  return wrk.format("GET", "/products/" .. (n % products) .. "?ref=wrk")
end

if common.counting() then
  response = function(status) common.count(status) end
end
