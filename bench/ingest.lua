-- POST /firmware/{id}: one event from a random device of the sample, each with its own key; bodies never repeat.
-- Arguments: the sample (id,key lines); optionally a directory where each thread writes the id of every event
-- acknowledged with a 2xx (bench/faults.sh compares them with the table), and a number that makes this run's
-- timestamps differ from other runs'; and the path before the device id (default /firmware/; bench/naive's
-- baselines take /naive/ and /limit/).
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, counter, acks, offset, prefix
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  counter = 0
  offset = tonumber(args[3] or "0")
  acks = common.open_acks(args[2])
  prefix = args[4] or "/firmware/"
end
request = function()
  local d = devices[math.random(#devices)]
  counter = counter + 1
  return wrk.format("POST", prefix .. d.id, { ["api_key"] = d.key, ["Content-Type"] = "application/json" },
    common.report(counter, offset))
end
response = function(status, headers, body) common.count_ack(acks, status, body) end
done = common.done
