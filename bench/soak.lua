-- The soak's mix at a fixed rate: 4 in 5 requests a device's report (as ingest.lua), 1 in 5 a device reading its
-- own history. Arguments: the sample, the acks directory, the run number, the total rate (requests/s) and the
-- connection count; each connection waits connections/rate seconds between requests.
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, counter, acks, offset, pause_ms
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  acks = common.open_acks(args[2])
  offset = tonumber(args[3])
  pause_ms = tonumber(args[5]) * 1000 / tonumber(args[4])
  counter = 0
end
delay = function() return pause_ms end
request = function()
  local d = devices[math.random(#devices)]
  counter = counter + 1
  if counter % 5 == 0 then
    return wrk.format("GET", "/firmware/" .. d.id .. "?limit=20", { ["api_key"] = d.key })
  end
  return wrk.format("POST", "/firmware/" .. d.id, { ["api_key"] = d.key, ["Content-Type"] = "application/json" },
    common.report(counter, offset))
end
response = function(status, headers, body) common.count_ack(acks, status, body) end
done = common.done
