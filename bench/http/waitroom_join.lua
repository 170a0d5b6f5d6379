-- wrk script: POST /api/v1/waitroom/join, a new user each request (thread number and counter), priorities 0-10 in
-- turn, for event EVENT; a JSON summary line at the end for scripts/bench.sh.
--   EVENT=bench wrk -t1 -c64 -d10s -s bench/http/waitroom_join.lua http://127.0.0.1:8080
local event = os.getenv("EVENT") or "bench"
local tag = os.getenv("TAG") or tostring(os.time())
local threads = {}
local counter = 0

function setup(thread)
  thread:set("prefix", "w" .. tag .. "-" .. #threads .. "-")
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local body = '{"user_id":"' .. prefix .. counter .. '","event_id":"' .. event .. '","priority":' .. (counter % 11) .. '}'
  return wrk.format("POST", "/api/v1/waitroom/join", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"peer": "weir", "transport": "http", "scenario": "waitroom_join", "count": %d, "errors": %d, "seconds": %.2f, ' ..
    '"per_second": %.1f, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, errors, secs, summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
