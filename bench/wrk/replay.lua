-- Replays presigned mqgate requests with wrk 4.1, each exactly once.
--
--   mqgate-load presign --url http://ADDR --count N --files 2 --out PREFIX ...
--   wrk -t2 -c100 -d4s --timeout 10s -s bench/wrk/replay.lua http://ADDR -- PREFIX
--
-- wrk cannot sign, and mqgate refuses a signed request it has seen before
-- (a replay), so each wrk thread reads its own file, PREFIX.<thread number
-- from 0>, and sends its lines in order, one request each (one line per
-- request: a request target `/?Action=...&Signature=...`). A thread that
-- runs out of lines does not start over: it sends SPENT instead, a path the
-- floor (`mqgate-load baseline`) answers and mqgate refuses, and counts it,
-- so that a run too long for its files shows as `exhausted` threads (and,
-- against mqgate, as non-2xx answers) rather than as replays.
--
-- done() prints one line of JSON (the benchmark parses it): requests,
-- seconds, requests_per_second, non_2xx (wrk's count of answers with a
-- status above 399), connect_errors, read_errors, write_errors, timeouts,
-- p50_ms, p99_ms, threads, exhausted (threads that ran out) and
-- spent_requests (requests sent after running out).

local SPENT = "/?replay=exhausted"

-- The setup state (the main thread's, where done() runs too): the threads,
-- numbered from 0 in the order wrk sets them up.
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

-- Each thread's own state (a Lua state of its own): its file, and the
-- requests it has sent since the file ran out (a global, so that done()
-- can read it with thread:get).
local lines
spent = 0

function init(args)
   local path = args[1] .. "." .. id
   local file, err = io.open(path, "r")
   if not file then
      io.stderr:write("replay.lua: cannot read " .. path .. ": " .. tostring(err) .. "\n")
      os.exit(2)
   end
   lines = file
end

-- Called for every request (wrk also calls it once before the run, to
-- check the request's form: that line is consumed and never sent, which is
-- harmless; only sending a line twice would not be).
function request()
   local line = lines:read("*l")
   if line == nil then
      spent = spent + 1
      return wrk.format("GET", SPENT)
   end
   return wrk.format("GET", line)
end

function done(summary, latency, requests)
   local exhausted, spent_requests = 0, 0
   for _, thread in ipairs(threads) do
      local n = thread:get("spent") or 0
      if n > 0 then
         exhausted = exhausted + 1
         spent_requests = spent_requests + n
      end
   end
   local seconds = summary.duration / 1e6
   local errors = summary.errors
   io.write(string.format(
      '{"requests":%d,"seconds":%.6f,"requests_per_second":%.1f,"non_2xx":%d,'
         .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
         .. '"p50_ms":%.3f,"p99_ms":%.3f,"threads":%d,"exhausted":%d,"spent_requests":%d}\n',
      summary.requests, seconds, summary.requests / seconds, errors.status,
      errors.connect, errors.read, errors.write, errors.timeout,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      #threads, exhausted, spent_requests))
end
