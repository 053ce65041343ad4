-- sold_out_jwt.lua — the sold-out path with JWT identity: every request carries a valid
-- HS256 token (`Authorization: Bearer …`), from a pool of users each pressing buy again
-- and again, from new client IPs. Measures the same 409 from memory as sold_out.lua, plus
-- the token's verification (or its verified-token cache hit).
--
-- TOKENS names a file of tokens, one per line (loadtest/bench.sh mints them with the
-- gateway's secret); each thread walks the pool from its own offset. Environment:
-- TOKENS (required), CAMPAIGN (bench), SKU (sold-out), WRK_STATUS=0.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local campaign = common.env("CAMPAIGN", "bench")
local sku = common.env("SKU", "sold-out")
local path = "/seckill/campaigns/" .. campaign .. "/items/" .. sku .. "/orders"
local tokens = {}
local n = 0

setup = common.setup
done = common.done

function init(args)
  local file = assert(io.open(assert(os.getenv("TOKENS"), "set TOKENS"), "r"))
  for line in file:lines() do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  file:close()
  assert(#tokens > 0, "no tokens in " .. os.getenv("TOKENS"))
  n = tid * 7919
end

function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["Authorization"] = tokens[n % #tokens + 1],
    ["X-Forwarded-For"] = common.ip(tid, n),
    ["Content-Length"] = "0",
  })
end

if common.counting() then
  response = function(status) common.count(status) end
end
