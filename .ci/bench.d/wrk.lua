-- wrk script for .ci/bench: POSTs $BENCH_POST if set, counts answers with an X-Degraded header
-- if $BENCH_DEGRADED is set, and prints the results as one JSON line.
local body = os.getenv("BENCH_POST")
if body then
  wrk.method, wrk.body = "POST", body
  wrk.headers["Content-Type"] = "application/json"
end

degraded, threads = 0, {}
function setup(thread) table.insert(threads, thread) end
if os.getenv("BENCH_DEGRADED") then -- else wrk parses no headers at all
  function response(_, headers, _)
    if headers["x-degraded"] or headers["X-Degraded"] then degraded = degraded + 1 end
  end
end

function done(s, latency, _)
  local e, d = s.errors, 0
  for _, thread in ipairs(threads) do d = d + thread:get("degraded") end
  io.write(string.format('BENCH {"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "max_ms": %f, '
    .. '"non2xx": %d, "degraded": %d, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    s.requests, s.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, e.status, d, e.connect, e.read, e.write, e.timeout))
end
