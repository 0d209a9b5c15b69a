-- GET /devices/{id} by a member: the admin key of project 1 (bench/provision.sql) reads a random device of the sample.
-- Arguments: the sample (id,key lines; project 1's devices only) and the member key.
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local devices, key
setup = common.setup
init = function(args) devices = common.load(args[1]); key = args[2] end
request = function() return wrk.format("GET", "/devices/" .. devices[math.random(#devices)].id, { ["api_key"] = key }) end
response = common.count
done = common.done
