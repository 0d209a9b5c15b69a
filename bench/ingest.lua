-- POST /firmware/{id}: one event from a random device of the sample, each with its own key; bodies never repeat.
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, counter
local function idiv(a, b) return math.floor(a / b) end
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  counter = 0
end
request = function()
  local d = devices[math.random(#devices)]
  counter = counter + 1
  -- A distinct microsecond per thread and request: no two events are identical repeats.
  local micros = thread_id * 100000000 + counter
  local body = string.format(
    '{"firmware":"2.%d.%d","status":"%s","timestamp":"2025-%02d-%02dT%02d:%02d:%02d.%06dZ"}',
    counter % 7, thread_id, counter % 5 == 0 and "failed" or "updated",
    1 + idiv(micros, 2592000000000) % 12, 1 + idiv(micros, 86400000000) % 28, idiv(micros, 3600000000) % 24,
    idiv(micros, 60000000) % 60, idiv(micros, 1000000) % 60, micros % 1000000)
  return wrk.format("POST", "/firmware/" .. d.id, { ["api_key"] = d.key, ["Content-Type"] = "application/json" }, body)
end
response = common.count
done = common.done
