-- wrk script of bench/llm.sh: every request is the same JSON POST (wrk's pre-built request, no
-- request() or response() callback, so wrk spends as little as it can per request).
--
-- Environment (set by bench/llm.sh):
--   LLM_BODY_FILE=PATH   the JSON body (bench/llm/openai.json or bench/llm/anthropic.json)
--   LLM_STREAM=1         add "stream": true to the body (otherwise the body is sent as it is)
--   LLM_HEADERS="Name: value|Name: value"   extra request headers (Portkey's, Anthropic's)
-- The URL given to wrk names the path (/v1/chat/completions or /v1/messages).
--
-- At the end it prints one machine-readable line for bench/llm.sh to parse:
--   llm: requests N p50_us N p99_us N p999_us N non2xx N connect N read N write N timeout N
local path = os.getenv("LLM_BODY_FILE") or error("LLM_BODY_FILE is not set")
local f = assert(io.open(path, "rb"))
local body = f:read("*a"):gsub("%s+$", "")
f:close()
if os.getenv("LLM_STREAM") == "1" then
    body = '{"stream":true,' .. body:sub(2)
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
for header in (os.getenv("LLM_HEADERS") or ""):gmatch("[^|]+") do
    local name, value = header:match("^%s*([^:]+):%s*(.-)%s*$")
    if name then wrk.headers[name] = value end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "llm: requests %d p50_us %d p99_us %d p999_us %d non2xx %d connect %d read %d write %d timeout %d\n",
        summary.requests, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
        e.status, e.connect, e.read, e.write, e.timeout))
end
