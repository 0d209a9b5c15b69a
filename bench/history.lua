-- GET /firmware/{id}: a random device of the sample reads its own history (first page, 100 events).
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices
setup = common.setup
init = function(args) devices = common.load(args[1]) end
request = function()
  local d = devices[math.random(#devices)]
  return wrk.format("GET", "/firmware/" .. d.id, { ["api_key"] = d.key })
end
response = common.count
done = common.done
