-- wrk script: POST a fixed body read from a file, print one machine-readable summary line.
-- A copy of ../shared/bench/serving/wrk_post.lua (read-only there) that can also send an
-- Authorization header, taken from the environment so that the key stays off the command line.
-- usage: WRK_AUTHORIZATION="Bearer KEY" wrk -t1 -c8 -d10s --latency -s wrk_post.lua URL -- BODY_FILE [CONTENT_TYPE]
function init(args)
  local path = args[1] or os.getenv("WRK_BODY_FILE")
  assert(path, "pass the body file after --")
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = args[2] or "application/json"
  local auth = os.getenv("WRK_AUTHORIZATION")
  if auth and auth ~= "" then
    wrk.headers["Authorization"] = auth
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  -- e.status counts responses with status >= 400 (wrk's "Non-2xx or 3xx responses")
  io.write(string.format(
    "BENCH rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d sock_err=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
