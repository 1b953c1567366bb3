#!/usr/bin/env bash
# The LLM gateway benchmark: Headwater's LLM route vs LiteLLM's proxy vs Portkey's gateway, each
# taking OpenAI chat requests and sending them on as Anthropic Messages requests to the same fast
# mock provider (`headwater mock-llm`), in one run; with the mock called directly as the baseline.
#
#   bench/llm.sh --install                             # once: LiteLLM and Portkey into target/
#   bench/llm.sh                                       # 4 rows x 5 targets x 3 runs x 10 s: ~17 min
#   RUNS=1 DURATION=3s WARMUP=1s bench/llm.sh          # short validation run (~4 min)
#   ROWS=load TARGETS="direct headwater litellm" bench/llm.sh > report.md
#
# Needs the Debian package wrk, plus curl, python3 (standard library only, and its venv module
# for --install), node and npm (Portkey's gateway is a Node program), taskset (util-linux) and
# cargo. The gateways to compare with are installed under target/ by `bench/llm.sh --install`,
# at the versions pinned in bench/llm/ (the script installs nothing otherwise; if they are
# missing it prints the commands and exits 1):
#   LiteLLM 1.106.2 (`litellm[proxy]`) into the venv target/bench-venv, every package pinned by
#     bench/llm/litellm-requirements.txt;
#   @portkey-ai/gateway 1.15.2 into target/bench-node, from bench/llm/portkey/package-lock.json.
#
# Layout (the machine this was written for has 2 cores):
#   core PROXY_CORE (0): the gateway under test, one worker/process each: Headwater (workers = 1),
#                        LiteLLM (uvicorn, --num_workers 1), Portkey (one Node process). All
#                        three run all the time; one is loaded at once.
#   core LOAD_CORE (1):  wrk (-t1) AND the mock provider (`headwater mock-llm`, no added latency).
# Ports, on 127.0.0.1 only: 18980 mock, 18981 Headwater, 18982 LiteLLM, 18983 Portkey. Configs in
# bench/llm/. Every load run targets 127.0.0.1 only and is bounded by DURATION; everything
# started here is stopped on exit.
#
# Targets (TARGETS, in this order by default):
#   direct         wrk -> mock POST /v1/messages, Anthropic body: the request each gateway makes;
#                  the baseline "added latency" is measured against
#   direct-openai  wrk -> mock POST /v1/chat/completions, the OpenAI body (reference only)
#   headwater      wrk -> Headwater /v1/chat/completions (OpenAI body), alias claude-bench whose
#                  one deployment is provider = "anthropic" at the mock (bench/llm/headwater.toml)
#   litellm        wrk -> LiteLLM /v1/chat/completions (OpenAI body), model anthropic/claude-bench
#                  with api_base at the mock (bench/llm/litellm.yaml)
#   portkey        wrk -> Portkey /v1/chat/completions (OpenAI body) with x-portkey-provider:
#                  anthropic and x-portkey-custom-host: http://127.0.0.1:18980/v1
# The bodies are bench/llm/openai.json and bench/llm/anthropic.json (the same conversation),
# sent by bench/llm/wrk.lua.
#
# Rows (ROWS, in this order by default):
#   load       non-streaming, CONNS (32) connections: throughput, and latency under saturation
#   c1         non-streaming, 1 connection: the latency a gateway adds to one request, no queueing
#   stream     "stream": true, CONNS connections (latency is to the end of the stream)
#   stream-c1  "stream": true, 1 connection
#
# Checks before measuring: for each target in turn, a fresh mock is started, the target is sent
# the row's requests (bench/llm/check.py: 200, a chat.completion or Messages answer, streamed or
# not, whose text is the mock's echo of the user message), and the mock is stopped: its own count
# of what it served must be exactly those requests, at /v1/messages (Anthropic Messages) for every
# target but direct-openai. Then, on a fresh mock each, a BURST of load (CONNS connections, not
# streamed, then streamed) counts the connections the target opens to the mock (the mock's own
# count again): a gateway that does not reuse its upstream connections shows here. Then the
# measurement mock starts, every target is warmed up, and the checks are repeated against it.
#
# Per target, row and run it records req/s, p50/p99/p99.9 (wrk, via wrk.lua's done()), errors
# (socket errors + non-2xx), the gateway's CPU time (utime+stime of its process and children)
# and the CPU used by unrelated processes ("other"). Rounds rotate the targets so drift hits all
# alike. At the end it prints Markdown for bench/RESULTS.md on stdout: command, date, machine,
# versions, checks, one table of medians per row with the latency each gateway adds over direct
# (target median minus direct median, p50 and p99), and the Headwater/LiteLLM and
# Headwater/Portkey ratios. Progress goes to stderr.
#
# Environment:
#   RUNS=3            measured runs per target and row
#   DURATION=10s      length of each measured run
#   WARMUP=3s         one unmeasured run per target and row first (0: none)
#   ROWS="load c1 stream stream-c1"
#   TARGETS="direct direct-openai headwater litellm portkey"   a subset (direct is always added)
#   CONNS=32          wrk connections of the load and stream rows (1 wrk thread)
#   WRK_TIMEOUT=5s    wrk's request timeout
#   MOCK_LATENCY=0    the mock's added latency per answer, ms (`headwater mock-llm --latency`)
#   PROXY_CORE=0 LOAD_CORE=1
#   QUIET_WAIT=30     before each measured run, wait up to this many seconds for other processes
#                     to use at most QUIET_PCT=5 % of a core over a 1 s sample (0: don't wait)
#   STARTUP_WAIT=120  seconds to wait for each gateway to answer after starting (LiteLLM's
#                     imports take a while on a busy machine)
#   BURST=2s          length of the connection-counting bursts of the checks
#   KEEP_RAW=DIR      keep every raw wrk output, the results and the logs in DIR
#   NO_BUILD=1        skip `cargo build --release -p headwater-engine`
#   HEADWATER_BIN=P   benchmark this headwater binary instead of target/release/headwater
#   BENCH_VENV=DIR BENCH_NODE=DIR   where LiteLLM and Portkey are (default target/bench-venv,
#                     target/bench-node); --install installs there

set -Eeuo pipefail
trap 'echo "llm.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
LLM_DIR="$BENCH_DIR/llm"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

# The command as given, for the report (only the settings that were set).
COMMAND=$(command_line bench/llm.sh RUNS DURATION WARMUP ROWS TARGETS CONNS WRK_TIMEOUT MOCK_LATENCY \
    PROXY_CORE LOAD_CORE QUIET_WAIT QUIET_PCT STARTUP_WAIT BURST KEEP_RAW NO_BUILD HEADWATER_BIN BENCH_VENV BENCH_NODE)

LITELLM_VERSION=1.106.2
PORTKEY_VERSION=1.15.2
BENCH_VENV=${BENCH_VENV:-"$ROOT/target/bench-venv"}
BENCH_NODE=${BENCH_NODE:-"$ROOT/target/bench-node"}
LITELLM_BIN="$BENCH_VENV/bin/litellm"
PORTKEY_PKG="$BENCH_NODE/node_modules/@portkey-ai/gateway"
PORTKEY_JS="$PORTKEY_PKG/build/start-server.js"

install_cmds() {
    echo "  python3 -m venv $BENCH_VENV"
    echo "  $BENCH_VENV/bin/pip install -r bench/llm/litellm-requirements.txt"
    echo "  mkdir -p $BENCH_NODE && cp bench/llm/portkey/package.json bench/llm/portkey/package-lock.json $BENCH_NODE/"
    echo "  (cd $BENCH_NODE && npm ci --no-audit --no-fund)"
}

case "${1:-}" in
    "") ;;
    --install)
        require_cmds python3 npm node
        echo "installing LiteLLM $LITELLM_VERSION into $BENCH_VENV and Portkey's gateway $PORTKEY_VERSION into $BENCH_NODE:" >&2
        install_cmds >&2
        python3 -m venv "$BENCH_VENV"
        "$BENCH_VENV/bin/pip" install -q -r "$LLM_DIR/litellm-requirements.txt"
        mkdir -p "$BENCH_NODE"
        cp "$LLM_DIR/portkey/package.json" "$LLM_DIR/portkey/package-lock.json" "$BENCH_NODE/"
        (cd "$BENCH_NODE" && npm ci --no-audit --no-fund)
        "$LITELLM_BIN" --version >/dev/null 2>&1 || { echo "LiteLLM did not install" >&2; exit 1; }
        [[ -f "$PORTKEY_JS" ]] || { echo "Portkey's gateway did not install" >&2; exit 1; }
        echo "installed" >&2
        exit 0
        ;;
    -h | --help)
        sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: bench/llm.sh [--install]   (settings are environment variables; see --help)" >&2
        exit 2
        ;;
esac

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROWS=${ROWS:-"load c1 stream stream-c1"}
TARGETS=${TARGETS:-"direct direct-openai headwater litellm portkey"}
CONNS=${CONNS:-32}
WRK_TIMEOUT=${WRK_TIMEOUT:-5s}
MOCK_LATENCY=${MOCK_LATENCY:-0}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_PCT=${QUIET_PCT:-5}
STARTUP_WAIT=${STARTUP_WAIT:-120}
BURST=${BURST:-2s}
HEADWATER_BIN=${HEADWATER_BIN:-"$ROOT/target/release/headwater"}

# ---------------------------------------------------------------- targets and rows
MOCK_PORT=18980
MOCK_BASE="http://127.0.0.1:$MOCK_PORT"
declare -A PORT=([direct]=$MOCK_PORT [direct-openai]=$MOCK_PORT [headwater]=18981 [litellm]=18982 [portkey]=18983)
declare -A LABEL=([direct]="direct (mock, Anthropic /v1/messages)" [direct-openai]="direct-openai (mock, OpenAI /v1/chat/completions; reference)"
    [headwater]=Headwater [litellm]=LiteLLM [portkey]=Portkey)
declare -A URL_PATH=([direct]=/v1/messages [direct-openai]=/v1/chat/completions [headwater]=/v1/chat/completions
    [litellm]=/v1/chat/completions [portkey]=/v1/chat/completions)
declare -A BODY=([direct]=anthropic.json [direct-openai]=openai.json [headwater]=openai.json [litellm]=openai.json
    [portkey]=openai.json)
declare -A FORMAT=([direct]=anthropic [direct-openai]=openai [headwater]=openai [litellm]=openai [portkey]=openai)
declare -A HEADERS=([direct]="x-api-key: bench-key|anthropic-version: 2023-06-01"
    [direct-openai]="Authorization: Bearer bench-key" [headwater]="" [litellm]=""
    [portkey]="x-portkey-provider: anthropic|x-portkey-custom-host: $MOCK_BASE/v1|Authorization: Bearer bench-key")
# what the mock must count for the target's requests
declare -A MOCK_ENDPOINT=([direct]=messages [direct-openai]=chat_completions [headwater]=messages [litellm]=messages
    [portkey]=messages)

ALL_ROWS="load c1 stream stream-c1"
declare -A ROW_CONNS=([load]=$CONNS [c1]=1 [stream]=$CONNS [stream-c1]=1)
declare -A ROW_STREAM=([load]=0 [c1]=0 [stream]=1 [stream-c1]=1)
declare -A ROW_DESC=(
    [load]="non-streaming chat completion, $CONNS connections (throughput; latency under saturation)"
    [c1]="non-streaming chat completion, 1 connection (latency added to a single request, no queueing)"
    [stream]="streaming chat completion (\"stream\": true), $CONNS connections (latency to the end of the stream)"
    [stream-c1]="streaming chat completion, 1 connection (latency to the end of the stream, no queueing)")

for row in $ROWS; do
    [[ -n "${ROW_CONNS[$row]:-}" ]] || { echo "unknown row '$row'; rows: $ALL_ROWS" >&2; exit 1; }
done
read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    [[ -n "${PORT[$t]:-}" ]] || { echo "unknown target '$t'; targets: direct direct-openai headwater litellm portkey" >&2; exit 1; }
done
[[ " $TARGETS " == *" direct "* ]] || TARGET_LIST=(direct "${TARGET_LIST[@]}") # the baseline
TARGETS="${TARGET_LIST[*]}"
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
GATEWAYS=()
for t in headwater litellm portkey; do has_target "$t" && GATEWAYS+=("$t"); done

# ---------------------------------------------------------------- prerequisites
require_packages wrk
require_cmds curl python3 taskset awk sort getconf
if ! has_target headwater || [[ -z "${NO_BUILD:-}" ]]; then require_cmds cargo; fi
absent=""
if has_target litellm && ! [[ -x "$LITELLM_BIN" ]]; then absent+=" LiteLLM ($LITELLM_BIN)"; fi
if has_target portkey; then
    require_cmds node
    [[ -f "$PORTKEY_JS" ]] || absent+=" Portkey's gateway ($PORTKEY_JS)"
fi
if [[ -n "$absent" ]]; then
    echo "missing:$absent" >&2
    echo "install them with:  bench/llm.sh --install   which runs (a few minutes, from PyPI and npm):" >&2
    install_cmds >&2
    exit 1
fi
warn_few_cores
# another program on one of the ports would answer in our place (a TCP connect succeeds)
for p in "$MOCK_PORT" "${PORT[headwater]}" "${PORT[litellm]}" "${PORT[portkey]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p on 127.0.0.1 is in use by another program (ss -ltnp | grep :$p); stop it first" >&2
        exit 1
    fi
done

DUR_S=$(duration_secs "$DURATION")
WARM_S=$(duration_secs "$WARMUP")
n_rows=$(wc -w <<<"$ROWS")
n_targets=${#TARGET_LIST[@]}
est=$(((n_rows * n_targets * (2 * WARM_S + RUNS * (DUR_S + (QUIET_WAIT > 0 ? 2 : 1)))) + n_targets * 3 * $(duration_secs "$BURST") + 60))
echo "llm.sh: $n_rows rows x $n_targets targets x $RUNS runs x $DURATION (+ warm-up $WARMUP):" \
    "about $((est / 60)) min $((est % 60)) s, plus up to ${QUIET_WAIT}s per run waiting for quiet" >&2

build_headwater
[[ -x "$HEADWATER_BIN" ]] || { echo "no $HEADWATER_BIN" >&2; exit 1; }

# ---------------------------------------------------------------- processes
make_tmp_with_traps llm
mkdir -p "$TMP/raw"
cp "$HEADWATER_BIN" "$TMP/headwater" # a concurrent rebuild must not swap the binary under test

# Waits up to STARTUP_WAIT seconds until URL answers 200 (GET); exits 1 if it does not, showing
# the end of LOG, or at once if PID died.
wait_http() { wait_url "$1" "$2" "$3" "$4" "$STARTUP_WAIT"; } # url name log pid

# The mock is restarted for the checks (its request counts are printed when it stops).
MOCK_PID=""
start_mock() {
    taskset -c "$LOAD_CORE" "$TMP/headwater" mock-llm --listen "127.0.0.1:$MOCK_PORT" \
        --latency "$MOCK_LATENCY" >"$TMP/mock.out" 2>"$TMP/mock.err" &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    wait_http "$MOCK_BASE/v1/models" "the mock provider" "$TMP/mock.err" "$MOCK_PID"
}
# Stops the mock; prints its own summary: "N requests on C connections (endpoint n, ...)".
stop_mock() {
    stop_tracked "$MOCK_PID"
    MOCK_PID=""
    sed -n 's/^headwater mock-llm: stopped after //p' "$TMP/mock.err" | tail -1
}

declare -A PIDS_OF=([direct]="" [direct-openai]="")
if has_target headwater; then
    # its one shard pins itself to the first allowed core
    taskset -c "$PROXY_CORE" "$TMP/headwater" run -c "$LLM_DIR/headwater.toml" >"$TMP/headwater.log" 2>&1 &
    PIDS+=($!)
    PIDS_OF[headwater]=$!
fi
if has_target litellm; then
    # LITELLM_LOCAL_MODEL_COST_MAP: the price map bundled with the package (no fetch at start);
    # LITELLM_LOG=ERROR: no access log line per request (Headwater's access_log is off)
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        taskset -c "$PROXY_CORE" "$LITELLM_BIN" --config "$LLM_DIR/litellm.yaml" --host 127.0.0.1 \
        --port "${PORT[litellm]}" --num_workers 1 >"$TMP/litellm.log" 2>&1 &
    PIDS+=($!)
    PIDS_OF[litellm]=$!
fi
if has_target portkey; then
    # --headless: no UI; portkey-loopback.mjs makes it listen on 127.0.0.1 only
    taskset -c "$PROXY_CORE" node --import "$LLM_DIR/portkey-loopback.mjs" "$PORTKEY_JS" \
        --port="${PORT[portkey]}" --headless >"$TMP/portkey.log" 2>&1 &
    PIDS+=($!)
    PIDS_OF[portkey]=$!
fi
has_target headwater && wait_http "http://127.0.0.1:${PORT[headwater]}/v1/models" Headwater "$TMP/headwater.log" "${PIDS_OF[headwater]}"
has_target litellm && wait_http "http://127.0.0.1:${PORT[litellm]}/health/liveliness" LiteLLM "$TMP/litellm.log" "${PIDS_OF[litellm]}"
has_target portkey && wait_http "http://127.0.0.1:${PORT[portkey]}/" Portkey "$TMP/portkey.log" "${PIDS_OF[portkey]}"
for t in "${GATEWAYS[@]}"; do PIDS_OF[$t]=$(pid_tree "${PIDS_OF[$t]}"); done

# ---------------------------------------------------------------- checks
run_load() { # target row duration outfile
    local t=$1 row=$2
    LLM_BODY_FILE="$LLM_DIR/${BODY[$t]}" LLM_STREAM="${ROW_STREAM[$row]}" LLM_HEADERS="${HEADERS[$t]}" \
        taskset -c "$LOAD_CORE" wrk -t1 -c"${ROW_CONNS[$row]}" -d"$3" --timeout "$WRK_TIMEOUT" \
        -s "$LLM_DIR/wrk.lua" "http://127.0.0.1:${PORT[$t]}${URL_PATH[$t]}" >"$4" 2>&1 || true
}

# one raw wrk output -> "rps requests p50_ms p99_ms p999_ms non2xx errors" (zeros if it failed)
parse_load() { parse_wrk_done llm "$2"; } # row file

check_one() { # target stream -> check.py's line (exits 1 on a failed check)
    local t=$1 hdr=() h out
    IFS='|' read -r -a hdr <<<"${HEADERS[$t]}"
    if ! out=$(python3 "$LLM_DIR/check.py" "http://127.0.0.1:${PORT[$t]}${URL_PATH[$t]}" \
        "$LLM_DIR/${BODY[$t]}" "${FORMAT[$t]}" "$2" "${hdr[@]}" 2>&1); then
        echo "check failed: ${LABEL[$t]} (stream=$2): $out" >&2
        for h in "${GATEWAYS[@]}"; do [[ $h != "$t" ]] || tail -5 "$TMP/$h.log" | sed 's/^/  /' >&2; done
        exit 1
    fi
    echo "$out"
}
STREAMS="0"
for row in $ROWS; do ((ROW_STREAM[$row])) && STREAMS="0 1"; done
CHECKS="$TMP/checks"
: >"$CHECKS"
echo "== checks (a fresh mock per target, its own request counts)" >&2
for t in "${TARGET_LIST[@]}"; do
    start_mock
    sent=0 first="" first_stream=""
    for s in $STREAMS; do
        for _ in 1 2; do
            line=$(check_one "$t" "$s")
            sent=$((sent + 1))
            if [[ $s == 0 && -z "$first" ]]; then first=$line; fi
            if [[ $s == 1 && -z "$first_stream" ]]; then first_stream=$line; fi
        done
    done
    counted=$(stop_mock)
    # its per-endpoint counts, less the GET /v1/models that start_mock waited on
    served=$(awk '{ s = $0; sub(/^[^(]*\(/, "", s); sub(/\)$/, "", s); n = split(s, a, ", "); out = ""
                    for (i = 1; i <= n; i++) { if (a[i] == "models 1" && !skipped) { skipped = 1; continue }
                                               out = out (out == "" ? "" : ", ") a[i] }
                    print out }' <<<"$counted")
    if [[ "$served" != "${MOCK_ENDPOINT[$t]} $sent" ]]; then
        echo "check failed: ${LABEL[$t]}: sent $sent requests; the mock served: '$counted'," \
            "want ${MOCK_ENDPOINT[$t]} $sent (and models 1, the readiness probe)" >&2
        exit 1
    fi
    echo "   ${LABEL[$t]}: $first; the mock served $counted" >&2
    # how many connections the target opens to the mock: a BURST of load on a fresh mock each
    # (less the readiness probe's request and connection)
    conns=()
    for s in 0 1; do
        if [[ " $STREAMS " != *" $s "* ]]; then conns+=("-"); continue; fi
        start_mock
        run_load "$t" "$([[ $s == 1 ]] && echo stream || echo load)" "$BURST" "$TMP/raw/burst"
        sleep 1 # wrk stops with requests in flight: let the target finish (or retry) them here
        served=$(stop_mock)
        read -r _ _ _ _ _ b_non2xx b_err < <(parse_wrk_done llm "$TMP/raw/burst")
        conns+=("$(awk -v s="$served" -v n="$b_non2xx" -v e="$b_err" 'BEGIN { split(s, a, " ")
            printf "%d for %d requests%s", a[4] - 1, a[1] - 1, (n + e) ? sprintf(" (wrk: %d errors, %d non-2xx)", e, n) : "" }')")
    done
    echo "   ${LABEL[$t]}: connections the mock accepted in a $BURST burst at $CONNS connections: ${conns[0]} (streamed: ${conns[1]})" >&2
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$t]}" "$sent ($([[ $STREAMS == "0 1" ]] && echo "2 + 2 streamed" || echo "not streamed"))" "$counted" \
        "${first%% text=*}" "$([[ -n "$first_stream" ]] && echo "${first_stream%% text=*} ${first_stream##* }" || echo -)" \
        "${conns[0]}" "${conns[1]}" >>"$CHECKS"
done

# the measurement mock
start_mock
MOCK_PIDS=$(pid_tree "$MOCK_PID")
# processes whose CPU use is not "other": this shell, the mock, the gateways (and children)
OURS="$$ $BASHPID $MOCK_PIDS ${PIDS_OF[*]}"

# ---------------------------------------------------------------- measuring
if ((WARM_S > 0)); then
    echo "== warm-up ($WARMUP per target and row)" >&2
    for row in $ROWS; do
        for t in "${TARGET_LIST[@]}"; do run_load "$t" "$row" "$WARMUP" "$TMP/raw/warmup"; done
    done
fi
# the checks again, against the measurement mock (every gateway has reconnected to it by now)
for t in "${TARGET_LIST[@]}"; do
    for s in $STREAMS; do check_one "$t" "$s" >/dev/null; done
done
echo "   every target answers the mock's echo again after the restart" >&2

RESULTS="$TMP/results"
: >"$RESULTS"
for row in $ROWS; do
    echo "== $row: ${ROW_DESC[$row]}" >&2
    measure_row "$row" '   %-13s run %d: %8.0f req/s  p50 %8.3f ms  p99 %8.3f ms  p99.9 %8.3f ms  errors %d+%d  CPU s/10k %s  gateway CPU %s%%  other %s%%\n' \
        "${TARGET_LIST[@]}"
done
MOCK_SERVED=$(stop_mock)
if [[ -n "${KEEP_RAW:-}" ]]; then
    mkdir -p "$KEEP_RAW"
    cp "$TMP"/raw/*_*.txt "$TMP"/*.log "$TMP"/mock.err "$RESULTS" "$KEEP_RAW"/ 2>/dev/null || true
fi

# ---------------------------------------------------------------- report (stdout)
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.3f\n", a - b }'; }

litellm_v=$("$BENCH_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo -)
portkey_v=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$PORTKEY_PKG/package.json" 2>/dev/null | head -1)
echo "## LLM gateway benchmark: Headwater vs LiteLLM vs Portkey (OpenAI in, Anthropic out, to a mock)"
echo
report_common_items
echo "- versions: LiteLLM ${litellm_v} (\`litellm[proxy]\`, uvicorn, $("$BENCH_VENV/bin/python" --version 2>/dev/null || echo python -))," \
    "Portkey gateway ${portkey_v:--} (@portkey-ai/gateway, Node $(node --version 2>/dev/null || echo -)), $(wrk_version)"
echo "- layout: gateway on core $PROXY_CORE, one worker each (Headwater \`workers = 1\`, LiteLLM \`--num_workers 1\`," \
    "Portkey one Node process); wrk (\`-t1\`) and the mock provider (\`headwater mock-llm\`, latency ${MOCK_LATENCY} ms) on core $LOAD_CORE;" \
    "configs in \`bench/llm/\`; every gateway sends the mock Anthropic Messages requests (\`POST /v1/messages\`)"
echo "- runs: $RUNS x $DURATION per target and row, rounds rotating the targets, warm-up $WARMUP; medians shown." \
    "Added latency = the target's median p50 (p99) minus direct's, direct being wrk posting the Anthropic body to the mock itself." \
    "Errors are summed over the runs. CPU s per 10k req: the gateway's utime+stime per 10,000 requests completed." \
    "Max other CPU %: CPU time charged to unrelated processes during a run (children they reaped included," \
    "so it can exceed 100 % per core); above a few % the run was disturbed"
echo "- the mock served during measurement (warm-ups and re-checks included): $MOCK_SERVED"
warn_other_load "during measurement" | sed 's/^/- /'
echo
echo "Checks before measuring (for each target: a fresh mock, the requests below, then the mock's own count of what it served, the one GET /v1/models being the script's readiness probe; every answer was 200 with the mock's echo as the assistant's text. Then, on a fresh mock each, a burst of load, and the connections the mock accepted: wrk's own for direct, the gateway's upstream connections otherwise):"
echo
echo "| target | requests sent | the mock served | first answer | first streamed answer | connections to the mock in a $BURST burst at $CONNS connections | the same, streamed |"
echo "|---|---|---|---|---|---|---|"
cat "$CHECKS"
echo
for row in $ROWS; do
    echo "### $row: ${ROW_DESC[$row]}"
    echo
    echo "| target | req/s | p50 (ms) | p99 (ms) | added p50 (ms) | added p99 (ms) | errors (socket / non-2xx) | gateway CPU s per 10k req | gateway CPU % | max other CPU % |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    d50=$(med "$row" direct 5) d99=$(med "$row" direct 6)
    for t in "${TARGET_LIST[@]}"; do
        if [[ $t == direct ]]; then a50="(baseline)" a99="(baseline)"; else a50=$(minus "$(med "$row" "$t" 5)" "$d50") a99=$(minus "$(med "$row" "$t" 6)" "$d99"); fi
        printf '| %s | %.0f | %.3f | %.3f | %s | %s | %s\n' "${LABEL[$t]}" \
            "$(med "$row" "$t" 4)" "$(med "$row" "$t" 5)" "$(med "$row" "$t" 6)" "$a50" "$a99" \
            "$(load_cpu_cells "$row" "$t")"
    done
    line=""
    if has_target headwater; then
        h50=$(minus "$(med "$row" headwater 5)" "$d50") h99=$(minus "$(med "$row" headwater 6)" "$d99")
        for other in litellm portkey; do
            has_target "$other" || continue
            o50=$(minus "$(med "$row" "$other" 5)" "$d50") o99=$(minus "$(med "$row" "$other" 6)" "$d99")
            line+="${line:+; }Headwater/${LABEL[$other]}: req/s $(headwater_ratio "$row" "$other" 4)×,"
            line+=" added p50 $(ratio "$h50" "$o50")×, added p99 $(ratio "$h99" "$o99")×,"
            line+=" CPU per request $(headwater_ratio "$row" "$other" 11)×"
        done
    fi
    if [[ -n "$line" ]]; then echo && echo "$line"; fi
    echo
done
if has_target headwater && { has_target litellm || has_target portkey; }; then
    echo "### Summary: Headwater / LiteLLM (H/L) and Headwater / Portkey (H/P), of the medians"
    echo
    echo "| row | H/L req/s | H/L added p50 | H/L added p99 | H/L CPU per req | H/P req/s | H/P added p50 | H/P added p99 | H/P CPU per req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in $ROWS; do
        d50=$(med "$row" direct 5) d99=$(med "$row" direct 6)
        cells=""
        for other in litellm portkey; do
            if has_target "$other"; then
                cells+=" $(headwater_ratio "$row" "$other" 4) |"
                cells+=" $(ratio "$(minus "$(med "$row" headwater 5)" "$d50")" "$(minus "$(med "$row" "$other" 5)" "$d50")") |"
                cells+=" $(ratio "$(minus "$(med "$row" headwater 6)" "$d99")" "$(minus "$(med "$row" "$other" 6)" "$d99")") |"
                cells+=" $(headwater_ratio "$row" "$other" 11) |"
            else
                cells+=" - | - | - | - |"
            fi
        done
        echo "| $row |$cells"
    done
    echo
    echo "req/s above 1 and added latency and CPU per request below 1 favour Headwater. Under load (the"
    echo "load and stream rows) every gateway saturates its one core, so its latency there is mostly"
    echo "queueing (connections ÷ req/s); the c1 and stream-c1 rows show the time each adds to a lone request. Where"
    echo "the direct baseline is itself limited by the load core (wrk and the mock share it), req/s of a"
    echo "gateway that reaches it says nothing about the gateway; CPU per request then compares them."
fi
