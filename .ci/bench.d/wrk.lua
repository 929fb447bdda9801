-- wrk script for .ci/bench: POSTs $BENCH_POST if set, counts answers with an X-Degraded header
-- if $BENCH_DEGRADED is set, and prints the results as one JSON line. Every request carries the
-- trace header Cloud Run's front end adds (unsampled, as it forwards most requests), unless
-- $BENCH_NO_TRACE is set: one fixed trace id would give every request one sampling decision.
if not os.getenv("BENCH_NO_TRACE") then
  wrk.headers["X-Cloud-Trace-Context"] = "4bf92f3577b34da6a3ce929d0e0e4736/8101922101423316;o=0"
end
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
