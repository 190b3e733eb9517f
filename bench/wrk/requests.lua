-- Replays pre-built raw HTTP requests, each at most once per thread until the set wraps.
-- Usage: wrk -s bench/wrk/requests.lua URL -- <requests file> <wrk threads>
-- The file holds records `<length>\n<raw request bytes>` (bench/common.py write_requests).
-- Thread k of n takes records k, k+n, k+2n, ... so no two threads send the same request.

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  local fh = assert(io.open(path, "rb"))
  reqs, i = {}, 0
  local n = 0
  while true do
    local line = fh:read("*l")
    if not line then break end
    local raw = fh:read(tonumber(line))
    if n % nthreads == tid then
      reqs[#reqs + 1] = raw
    end
    n = n + 1
  end
  fh:close()
end

function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
