-- distinct.lua — drive a fixed number of DISTINCT users and client IPs through the
-- gateway's limiters (the benchmark's memory test: RSS after 1,000,000 keys). Like
-- sold_out.lua (new X-User-Id and new X-Forwarded-For on every request, item `sold-out`,
-- answered 409 from memory, so Redis plays no part), but each thread stops by itself
-- after REQUESTS / threads answers; give wrk a -d long enough to get there.
--
--   REQUESTS=1000000 wrk -t1 -c64 -d120s -s loadtest/wrk/distinct.lua http://127.0.0.1:18080
--
-- Users are "d<run>-<thread>-<n>", IPs 10+<thread>.x.y.z (distinct up to 16.7M per
-- thread). Environment: REQUESTS (1000000), THREADS (must equal wrk's -t; 1),
-- CAMPAIGN (bench), SKU (sold-out), WRK_STATUS=0 to skip counting statuses.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local campaign = common.env("CAMPAIGN", "bench")
local sku = common.env("SKU", "sold-out")
local path = "/seckill/campaigns/" .. campaign .. "/items/" .. sku .. "/orders"
local quota = math.ceil(tonumber(common.env("REQUESTS", "1000000")) /
  tonumber(common.env("THREADS", "1")))
local counting = common.counting()
local n, answered = 0, 0

setup = common.setup
done = common.done

function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["X-User-Id"] = "d" .. run .. "-" .. tid .. "-" .. n,
    ["X-Forwarded-For"] = common.ip(tid, n),
    ["Content-Length"] = "0",
  })
end

function response(status)
  if counting then common.count(status) end
  answered = answered + 1
  if answered >= quota then wrk.thread:stop() end
end
