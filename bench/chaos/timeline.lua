-- wrk script for bench/chaos.sh: counts responses per time bucket, status and upstream, and
-- prints them after wrk's summary, one line per (bucket, status, upstream):
--
--   TIMELINE bucket_ms=100
--   B <bucket> <status> <upstream> <count>
--
-- <bucket> is floor(wall-clock ms since the epoch / bucket_ms), so the script can line buckets
-- up with the moments it injected faults (`date +%s%N`). <upstream> is the `x-upstream` header
-- that `headwater upstream` puts on every response ("-" when the proxy answered by itself).
-- Socket errors (connect/read/write/timeout) never reach response(); wrk only totals them.
--
-- Bucket width: CHAOS_BUCKET_MS (default 100). Wall clock via LuaJIT's FFI (clock_gettime),
-- since wrk's Lua has no millisecond clock of its own.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } chaos_timespec;
int clock_gettime(int clk_id, chaos_timespec *tp);
]]
local CLOCK_REALTIME = 0
local ts = ffi.new("chaos_timespec")
local bucket_ms = tonumber(os.getenv("CHAOS_BUCKET_MS") or "100") or 100

local function bucket()
  ffi.C.clock_gettime(CLOCK_REALTIME, ts)
  return math.floor((tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6) / bucket_ms)
end

local function upstream_of(headers)
  local v = headers["x-upstream"] or headers["X-Upstream"]
  if v then return v end
  for k, val in pairs(headers) do
    if string.lower(k) == "x-upstream" then return val end
  end
  return "-"
end

-- main state: the threads, so done() can collect their counts
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- per thread: "bucket status upstream" -> count (global: thread:get reads globals)
counts = {}
function response(status, headers, body)
  local key = bucket() .. " " .. status .. " " .. upstream_of(headers)
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  io.write("TIMELINE bucket_ms=" .. bucket_ms .. "\n")
  for _, t in ipairs(threads) do
    for key, n in pairs(t:get("counts")) do
      io.write("B " .. key .. " " .. n .. "\n")
    end
  end
end
