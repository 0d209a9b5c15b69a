-- GET /firmware/{id}: a random device of the sample reads its own history (first page, 100 events).
-- Arguments: the sample (id,key lines); optionally the path before the device id (default /firmware/;
-- bench/naive's baseline takes /naive/{project}/), and "walk": each device of the sample in turn instead of at random
-- (bench/history-baselines.sh warms the service's key cache with it, as a fleet that reads steadily keeps it).
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, prefix, walk, next_index
setup = common.setup
init = function(args)
  devices = common.load(args[1])
  prefix = args[2] or "/firmware/"
  walk = args[3] == "walk"
  next_index = thread_id
end
request = function()
  local d
  if walk then
    d = devices[(next_index - 1) % #devices + 1]
    next_index = next_index + 2
  else
    d = devices[math.random(#devices)]
  end
  return wrk.format("GET", prefix .. d.id, { ["api_key"] = d.key })
end
response = common.count
done = common.done
