-- reserve_paced.lua — reserve.lua at a target RATE (req/s in all) instead of flat out:
-- after each answer a connection waits so that CONNS connections together send about
-- RATE requests a second (wrk's delay(); no wrk2 here). Light on the client, unlike k6,
-- but still closed-loop: a connection waiting for a slow answer sends nothing meanwhile,
-- so stalls are under-sampled (coordinated omission); the achieved rate shows how close
-- it came to RATE.
--
--   RATE=7000 CONNS=64 wrk -t1 -c64 -d10s -s loadtest/wrk/reserve_paced.lua http://127.0.0.1:18080
--
-- Environment: RATE (1000), CONNS (must equal wrk's -c; 64), plus reserve.lua's.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local campaign = common.env("CAMPAIGN", "bench")
local sku = common.env("SKU", "reserve")
local path = "/seckill/campaigns/" .. campaign .. "/items/" .. sku .. "/orders"
-- ms between two requests of one connection; wrk's delay() takes whole ms, so the
-- fraction is dithered.
local gap = tonumber(common.env("CONNS", "64")) * 1000 / tonumber(common.env("RATE", "1000"))
local n = 0

setup = common.setup
done = common.done

function delay()
  local whole = math.floor(gap)
  if math.random() < gap - whole then whole = whole + 1 end
  return whole
end

function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["X-User-Id"] = "p" .. run .. "-" .. tid .. "-" .. n,
    ["X-Forwarded-For"] = common.ip(tid, n),
    ["Content-Length"] = "0",
  })
end

if common.counting() then
  response = function(status) common.count(status) end
end
