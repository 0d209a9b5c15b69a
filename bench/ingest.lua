-- POST /firmware/{id}: one event from a random device of the sample, each with its own key; bodies never repeat.
-- Arguments: the sample (id,key lines); optionally a directory where each thread writes the id of every event
-- acknowledged with a 2xx (bench/faults.sh compares them with the table), and a number that makes this run's
-- timestamps differ from other runs'.
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, counter, acks, offset
local function idiv(a, b) return math.floor(a / b) end
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  counter = 0
  offset = tonumber(args[3] or "0")
  if args[2] and args[2] ~= "" then
    acks = assert(io.open(args[2] .. "/acks-" .. thread_id .. ".txt", "w"))
    acks:setvbuf("line")
  end
end
request = function()
  local d = devices[math.random(#devices)]
  counter = counter + 1
  -- A distinct microsecond per thread and request: no two events are identical repeats.
  local micros = offset * 1000000000000 + thread_id * 100000000 + counter
  local body = string.format(
    '{"firmware":"2.%d.%d","status":"%s","timestamp":"2025-%02d-%02dT%02d:%02d:%02d.%06dZ"}',
    counter % 7, thread_id, counter % 5 == 0 and "failed" or "updated",
    1 + idiv(micros, 2592000000000) % 12, 1 + idiv(micros, 86400000000) % 28, idiv(micros, 3600000000) % 24,
    idiv(micros, 60000000) % 60, idiv(micros, 1000000) % 60, micros % 1000000)
  return wrk.format("POST", "/firmware/" .. d.id, { ["api_key"] = d.key, ["Content-Type"] = "application/json" }, body)
end
response = function(status, headers, body)
  common.count(status)
  if acks and status >= 200 and status < 300 then
    acks:write(body:match('"id":(%d+)'), "\n")
  end
end
done = common.done
