-- Fleet views of the largest project with a member key: args[1] is the key, args[2] the path.
package.path = "bench/?.lua;" .. package.path
local common = require("common")
local key, path
setup = common.setup
init = function(args) key, path = args[1], args[2] end
request = function() return wrk.format("GET", path, { ["api_key"] = key }) end
response = common.count
done = common.done
