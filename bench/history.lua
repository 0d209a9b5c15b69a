-- GET /firmware/{id}: a random device of the sample reads its own history (first page, 100 events).
-- Arguments: the sample (id,key lines); optionally the path before the device id (default /firmware/;
-- bench/naive's baseline takes /naive/{project}/).
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, prefix
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  prefix = args[2] or "/firmware/"
end
request = function()
  local d = devices[math.random(#devices)]
  return wrk.format("GET", prefix .. d.id, { ["api_key"] = d.key })
end
response = common.count
done = common.done
