-- wrk script for the schema registry, with a JSON summary line at the end for scripts/bench.sh.
--   SCENARIO=lookup   GET /schemas/ids/1 (the path Confluent's deserializers take for every new id they meet)
--   SCENARIO=register POST a new schema each request (an enum with one more symbol), each under its own subject
--   SCENARIO=lookup wrk -t1 -c16 -d10s -s bench/http/registry.lua http://127.0.0.1:8081
local scenario = os.getenv("SCENARIO") or "lookup"
local n = 0

function request()
  if scenario == "register" then
    n = n + 1
    local schema = '{\\"type\\":\\"enum\\",\\"name\\":\\"E' .. n .. '\\",\\"symbols\\":[\\"A\\",\\"S' .. n .. '\\"]}'
    return wrk.format("POST", "/subjects/bench-" .. n .. "-value/versions",
      { ["Content-Type"] = "application/vnd.schemaregistry.v1+json" }, '{"schema":"' .. schema .. '"}')
  end
  return wrk.format("GET", "/schemas/ids/1")
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"peer": "weir", "scenario": "registry_%s", "requests": %d, "errors": %d, "requests_per_s": %.1f, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    scenario, summary.requests, errors, summary.requests / secs,
    latency:percentile(50), latency:percentile(99), latency.max))
end
