-- requests.lua at a fixed rate: each connection waits `delay_ms` between its requests.
-- Usage: wrk -s bench/wrk/paced.lua URL -- <requests file> <wrk threads> <delay_ms>
-- With c connections, the offered rate is c * 1000 / delay_ms requests per second.
dofile("bench/wrk/requests.lua")

local base_init = init
function init(args)
  base_init(args)
  pause = tonumber(args[3])
end

function delay()
  return pause
end
