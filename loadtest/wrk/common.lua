-- common.lua — shared by the wrk scripts of this directory (loaded with dofile from the
-- script's own directory, so wrk may run from any working directory).
--
-- Gives each wrk thread its own id and each run its own tag, so users and IPs never
-- repeat across threads or runs; counts response statuses per thread (the `response`
-- callback; WRK_STATUS=0 turns it off, it costs a little client CPU) and prints them in
-- `done`, as "status <code>: <count>" lines plus one "flashgate-wrk {json}" line for
-- scripts (the benchmark harness) to parse: requests, seconds, rps, socket_errors,
-- non_2xx_3xx, p50/p90/p99/max in ms, statuses (empty with WRK_STATUS=0).
-- A run stops with requests in flight: their answers are not counted, so the server may
-- have handled up to one request per connection more than wrk reports.

local M = {}

local threads = {}
local next_tid = 0
local run = string.format("%x%04x", os.time(), math.random(0, 0xffff))

-- wrk calls setup(thread) in the main state, once per thread, before the run.
function M.setup(thread)
  thread:set("tid", next_tid)
  thread:set("run", run)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- A distinct IPv4 address for request n of this thread: 10+tid . n>>16 . n>>8 . n.
function M.ip(tid, n)
  return string.format("%d.%d.%d.%d", 10 + tid % 200, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

-- Per-thread status counts (a global of each thread's state, read back in `done`).
counts = {}

function M.count(status)
  counts[status] = (counts[status] or 0) + 1
end

function M.counting()
  return M.env("WRK_STATUS", "1") ~= "0"
end

function M.done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for status, n in pairs(c) do
      total[status] = (total[status] or 0) + n
    end
  end
  local codes = {}
  for status in pairs(total) do table.insert(codes, status) end
  table.sort(codes)
  local parts = {}
  for _, status in ipairs(codes) do
    io.write(string.format("status %d: %d\n", status, total[status]))
    table.insert(parts, string.format('"%d":%d', status, total[status]))
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    'flashgate-wrk {"requests":%d,"seconds":%.3f,"rps":%.1f,"socket_errors":%d,"non_2xx_3xx":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"statuses":{%s}}\n',
    summary.requests, secs, summary.requests / secs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, table.concat(parts, ",")))
end

return M
