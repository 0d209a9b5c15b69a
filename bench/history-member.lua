-- GET /firmware/{id} by a member: the admin key of the device's project (bench/provision.sql: project 1 holds the
-- first BIG devices, the others are spread over projects 2-10) reads a random sample device's history, first page.
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, big
setup = common.setup
init = function(args) devices = common.load(args[1]); big = tonumber(args[2]) end
request = function()
  local d = devices[math.random(#devices)]
  local id = tonumber(d.id)
  local project = id <= big and 1 or 2 + id % 9
  return wrk.format("GET", "/firmware/" .. d.id, { ["api_key"] = "fmm_bench_admin_" .. project })
end
response = common.count
done = common.done
