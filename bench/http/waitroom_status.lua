-- wrk script: GET /api/v1/waitroom/status/{id} for ids read from IDS (one a line, as `weir waitroom bench --ids-out`
-- writes them), spread over the file; a JSON summary line at the end for scripts/bench.sh.
--   IDS=ids.txt wrk -t1 -c64 -d10s -s bench/http/waitroom_status.lua http://127.0.0.1:8080
local ids = {}
for line in io.lines(os.getenv("IDS") or "ids.txt") do
  if #line > 0 then ids[#ids + 1] = line end
end
local counter = 0

function request()
  counter = counter + 1
  local id = ids[(counter * 2654435761) % #ids + 1]
  return wrk.format("GET", "/api/v1/waitroom/status/" .. id)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"peer": "weir", "transport": "http", "scenario": "waitroom_status", "count": %d, "errors": %d, "queued": %d, ' ..
    '"seconds": %.2f, "per_second": %.1f, "p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, errors, #ids, secs, summary.requests / secs, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end
