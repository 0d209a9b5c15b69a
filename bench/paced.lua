-- bench/ingest.lua's reports at a fixed pace: each connection pauses before each request, as a fixed number of
-- devices that each report, wait and report again would. Arguments: ingest.lua's four, then the pause in
-- milliseconds. The load is then about connections x 1000 / (pause + latency) requests a second, and the latency
-- measures the service at that rate rather than the queue of a saturated service (which is what ingest.lua's,
-- answering each request with the next at once, measures). A separate script because wrk schedules a timer for
-- every request of a script that defines delay(), even one returning 0.
dofile("bench/ingest.lua")
local ingest_init = init
local pause
init = function(args)
  ingest_init(args)
  pause = tonumber(args[5])
end
delay = function() return pause end
