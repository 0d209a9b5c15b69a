-- Shared by the wrk scripts: the fleet sample (id,key per line), per-thread counters and the report.
local M = {}

function M.load(path)
  -- Every thread's Lua state starts with the same random sequence: without a seed of its own, the threads
  -- would pick the same devices in lockstep, and their reports would queue on each other's device locks.
  math.randomseed(os.time() + (thread_id or 0) * 7919)
  local devices = {}
  for line in io.lines(path) do
    local id, key = line:match("^(%d+),([^,]+)")
    if id then devices[#devices + 1] = { id = id, key = key } end
  end
  return devices
end

-- A device timestamp from a count of microseconds after 2025-01-01T00:00:00Z, RFC 3339 with 6 digits, UTC.
function M.timestamp(micros)
  return os.date("!%Y-%m-%dT%H:%M:%S", 1735689600 + math.floor(micros / 1000000)) ..
    string.format(".%06dZ", micros % 1000000)
end

-- One report body; a distinct microsecond per run, thread and request, so no two are identical repeats. Each device's
-- clock runs forward, as a real device's does: each run of wrk takes a larger offset (bench/lib.sh, next_offset),
-- which moves its times 1e11 us (27.8 hours) past the run before it, and the threads' requests interleave
-- (counter * 16 + thread), so a device's later report carries the later time (to within the threads' drift from each
-- other) and an "updated" report to another version moves its firmware. Until 2026-12-08 the times wrapped at 28
-- days, 12 months and 24 hours, each thread's were 100 s apart, and most scripts gave every measured run the same
-- offset, so most reports were older than the device's newest and moved nothing (docs/performance.md, "HOT updates
-- with the version's index kept, and a device's clock in the benchmark").
function M.report(counter, offset)
  local micros = offset * 100000000000 + counter * 16 + thread_id
  return string.format('{"firmware":"2.%d.%d","status":"%s","timestamp":"%s"}',
    counter % 7, thread_id, counter % 5 == 0 and "failed" or "updated", M.timestamp(micros))
end

-- Opens the thread's file of acknowledged event ids in dir (nil when dir is empty or nil).
function M.open_acks(dir)
  if not dir or dir == "" then return nil end
  local file = assert(io.open(dir .. "/acks-" .. thread_id .. ".txt", "w"))
  file:setvbuf("line")
  return file
end

-- Counts the answer; a 2xx to a report (a body with an id) goes to the acks file.
function M.count_ack(acks, status, body)
  M.count(status)
  if acks and status >= 200 and status < 300 and body then
    local id = body:match('^{"id":(%d+)')
    if id then acks:write(id, "\n") end
  end
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
