-- wrk script for .ci/bench: POSTs $BENCH_POST if set, and prints the results as one JSON line.
local body = os.getenv("BENCH_POST")
if body then
  wrk.method, wrk.body = "POST", body
  wrk.headers["Content-Type"] = "application/json"
end

function done(s, latency, _)
  local e = s.errors
  io.write(string.format('BENCH {"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "max_ms": %f, '
    .. '"non2xx": %d, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    s.requests, s.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, e.status, e.connect, e.read, e.write, e.timeout))
end
