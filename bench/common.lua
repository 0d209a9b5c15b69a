-- Shared by the wrk scripts: the fleet sample (id,key per line), per-thread counters and the report.
local M = {}

function M.load(path)
  local devices = {}
  for line in io.lines(path) do
    local id, key = line:match("^(%d+),([^,]+)")
    if id then devices[#devices + 1] = { id = id, key = key } end
  end
  return devices
end

local threads = {}
function M.setup(thread)
  thread:set("thread_id", #threads + 1)
  threads[#threads + 1] = thread
end

-- Counts 2xx and everything else per thread; done() adds them up.
function M.count(status)
  if status >= 200 and status < 300 then
    ok = (ok or 0) + 1
  else
    failed = (failed or 0) + 1
    local key = "s" .. status
    _G[key] = (_G[key] or 0) + 1
  end
end

function M.done(summary, latency, requests)
  local ok_total, failed_total, by_status = 0, 0, {}
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    failed_total = failed_total + (t:get("failed") or 0)
    for _, s in ipairs({ 400, 401, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504 }) do
      local n = t:get("s" .. s)
      if n then by_status[s] = (by_status[s] or 0) + n end
    end
  end
  local errors = {}
  for s, n in pairs(by_status) do errors[#errors + 1] = s .. ":" .. n end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d ok=%d non2xx=%d socket_errors=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f timeouts=%d errors=%s\n",
    summary.requests, ok_total, failed_total,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, summary.errors.timeout, table.concat(errors, " ")))
end

return M
