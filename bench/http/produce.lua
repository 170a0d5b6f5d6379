-- wrk script: POST /topics/<TOPIC> with RECORDS records of 100 bytes each (REST Proxy v2 binary format), and a JSON
-- summary line at the end for scripts/bench.sh.
--   RECORDS=1000 TOPIC=bench wrk -t1 -c16 -d10s -s bench/http/produce.lua http://127.0.0.1:8080
local records = tonumber(os.getenv("RECORDS") or "1")
local topic = os.getenv("TOPIC") or "bench-http"
-- Optional: an Authorization header (HTTP Basic or a bearer token) and a label for the results' "transport" field.
local authorization = os.getenv("AUTHORIZATION")
local transport = os.getenv("TRANSPORT") or "http"
-- base64 of 100 bytes of 'x': 33 groups of "xxx" and one final 'x'.
local value = string.rep("eHh4", 33) .. "eA=="
local one = '{"value":"' .. value .. '"}'
local parts = {}
for i = 1, records do parts[i] = one end

wrk.method = "POST"
wrk.path = "/topics/" .. topic
wrk.headers["Content-Type"] = "application/vnd.kafka.binary.v2+json"
if authorization then wrk.headers["Authorization"] = authorization end
wrk.body = '{"records":[' .. table.concat(parts, ",") .. ']}'

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"peer": "weir", "transport": "%s", "scenario": "http_produce", "records_per_request": %d, "requests": %d, ' ..
    '"errors": %d, "requests_per_s": %.1f, "records_per_s": %.1f, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    transport, records, summary.requests, errors, summary.requests / secs, summary.requests * records / secs,
    latency:percentile(50), latency:percentile(99), latency.max))
end
