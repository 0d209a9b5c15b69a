-- POST /firmware/{id}/batch: 100 distinct events (or the third argument's number) from a random device of the sample.
-- Arguments: the sample (id,key lines); optionally a number that makes this run's timestamps differ from other runs',
-- and the events a batch holds (1 to 1000; default 100).
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, counter, offset, size
local function idiv(a, b) return math.floor(a / b) end
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  counter = 0
  offset = tonumber(args[2] or "0")
  size = tonumber(args[3] or "100")
end
request = function()
  local d = devices[math.random(#devices)]
  counter = counter + 1
  local events = {}
  for i = 1, size do
    local micros = offset * 1000000000000 + (thread_id * 1000000 + counter) * size + i
    events[i] = string.format(
      '{"firmware":"3.%d.0","status":"downloading","timestamp":"2026-%02d-%02dT%02d:%02d:%02d.%06dZ"}',
      i % 9, 1 + idiv(micros, 2592000000000) % 12, 1 + idiv(micros, 86400000000) % 28, idiv(micros, 3600000000) % 24,
      idiv(micros, 60000000) % 60, idiv(micros, 1000000) % 60, micros % 1000000)
  end
  return wrk.format("POST", "/firmware/" .. d.id .. "/batch", { ["api_key"] = d.key, ["Content-Type"] = "application/json" },
    "[" .. table.concat(events, ",") .. "]")
end
response = common.count
done = common.done
