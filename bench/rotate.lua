-- wrk script: each request takes the next path from a file (one path a line, e.g.
-- `/v1/listings?q=weather`), so a run rotates over many queries; the summary line gives
-- rate, p50/p95/p99 (microseconds) and errors (non-2xx answers included).
--
--   wrk -t2 -c32 -d15s --latency -s bench/rotate.lua http://127.0.0.1:PORT -- paths.txt

local paths = {}
local counter = 0

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open the paths file " .. tostring(args[1]))
  for line in file:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  file:close()
  assert(#paths > 0, "no paths")
  -- Threads start at different places in the list.
  counter = math.random(#paths)
end

function request()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH rps=%.1f p50_us=%d p95_us=%d p99_us=%d requests=%d errors=%d detail=connect:%d,read:%d,write:%d,timeout:%d,non2xx:%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.requests,
    e.connect + e.read + e.write + e.timeout + e.status,
    e.connect, e.read, e.write, e.timeout, e.status))
end
