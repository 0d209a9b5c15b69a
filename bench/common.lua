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

local function idiv(a, b) return math.floor(a / b) end

-- A device timestamp from a count of microseconds (spread over the months of 2025), RFC 3339 with 6 digits.
function M.timestamp(micros)
  return string.format("2025-%02d-%02dT%02d:%02d:%02d.%06dZ",
    1 + idiv(micros, 2592000000000) % 12, 1 + idiv(micros, 86400000000) % 28, idiv(micros, 3600000000) % 24,
    idiv(micros, 60000000) % 60, idiv(micros, 1000000) % 60, micros % 1000000)
end

-- One report body; a distinct microsecond per run, thread and request, so no two are identical repeats.
function M.report(counter, offset)
  local micros = offset * 1000000000000 + thread_id * 100000000 + counter
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
