-- wrk script of bench/suite.sh, used for every wrk row.
--
-- With SUITE_POST_BYTES=N in the environment, every request is a POST of an N-byte body
-- (wrk adds Content-Length) to the URL's path; the suite's post16k row uses N = 16384 and /post.
-- Without it, requests are wrk's plain GETs. Neither defines request(), so wrk keeps sending
-- one pre-built request (its fast path).
--
-- At the end it prints one machine-readable line for the suite to parse:
--   suite: requests N p50_us N p99_us N p999_us N non2xx N connect N read N write N timeout N
local post = tonumber(os.getenv("SUITE_POST_BYTES") or "0")
if post > 0 then
    wrk.method = "POST"
    wrk.body = string.rep("p", post)
    wrk.headers["Content-Type"] = "application/octet-stream"
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "suite: requests %d p50_us %d p99_us %d p999_us %d non2xx %d connect %d read %d write %d timeout %d\n",
        summary.requests, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
        e.status, e.connect, e.read, e.write, e.timeout))
end
