#!/usr/bin/env bash
# The published benchmark suite: Headwater vs nginx vs HAProxy as HTTP/1.1 reverse proxies, each
# with one worker on the same core, over a matrix of workloads, in one run.
#
#   bench/suite.sh                                   # everything: 3 runs x 10 s per proxy and row
#   RUNS=1 DURATION=3s WARMUP=1s bench/suite.sh      # short validation run (~3 min on a quiet machine)
#   ROWS="ka128 ka4k" PROXIES="headwater nginx" bench/suite.sh
#
# Needs the Debian packages wrk, nginx and haproxy, and oha from crates.io (for the `rate` row),
# plus curl, python3, taskset (util-linux) and cargo. It installs nothing; if something is
# missing it says what and how to install it, and exits 1:
#   apt-get install -y wrk nginx haproxy
#   cargo install oha          (add --locked if the newest oha needs a newer rustc)
#
# Layout (the machine this was written for has 2 cores):
#   core PROXY_CORE (0): the proxy under test: Headwater (workers = 1), nginx (worker_processes 1)
#                        or HAProxy (nbthread 1). All three run all the time; one is loaded at once.
#   core LOAD_CORE (1):  the load generator (wrk -t1, or oha for the rate row) AND the upstream,
#                        nginx with one worker serving fixed bodies.
# Configs: bench/suite/{upstream.conf,headwater.toml,nginx.conf,haproxy.cfg}. Ports 18950
# (upstream), 18951 (Headwater), 18952 (nginx), 18953 (HAProxy), on 127.0.0.1 only. Every load
# run is bounded by DURATION; everything started here is stopped on exit.
#
# Rows (ROWS, in this order by default):
#   ka128 ka4k ka16k ka160k  keep-alive GET, 128 B / 4 KiB / 16 KiB / 160 KiB body, 64 connections
#   close     a new connection per request: wrk -H 'Connection: close' (128 B, 64 connections)
#   c1 c1024  1 and 1024 client connections (128 B keep-alive); 64 connections is ka128
#   post16k   POST with a 16 KiB body (bench/suite/wrk.lua), 64 connections; the upstream reads
#             and discards the body
#   chunked   keep-alive GET of a 16 KiB body that the upstream sends chunked (4 x 4 KiB)
#   rate      latency at a fixed rate below saturation: oha -q RATE, keep-alive, RATE_CONNS
#             connections, --latency-correction (open loop, corrects coordinated omission)
#
# For every row, proxy and run it records req/s, p50/p99/p99.9 latency, errors (wrk's socket
# errors + non-2xx responses; oha's errors + non-2xx) and the proxy's CPU time (utime + stime from
# /proc/PID/stat of all its processes, before and after the run), as CPU seconds per 10k
# requests. Rounds alternate the proxies (H N X, N X H, X H N, ...) so drift hits all equally.
# At the end it prints Markdown for bench/RESULTS.md on stdout: the command, date, machine,
# versions, the checks, one table of medians per row with Headwater/nginx and Headwater/HAProxy
# ratios, and a summary of the ratios. Progress goes to stderr.
#
# Environment:
#   RUNS=3            measured runs per proxy and row
#   DURATION=10s      length of each measured run
#   WARMUP=2s         one unmeasured run per proxy and row first (0: none)
#   ROWS="ka128 ka4k ka16k ka160k close c1 c1024 post16k chunked rate"
#   PROXIES="headwater nginx haproxy"   a subset; "direct" (the upstream without a proxy) may be
#                     added as a baseline
#   RATE=20000        req/s of the rate row; keep it below every proxy's saturation
#   RATE_CONNS=64     connections of the rate row
#   WRK_TIMEOUT=2s    wrk's request timeout
#   PROXY_CORE=0 LOAD_CORE=1
#   QUIET_WAIT=10     before each measured run, wait up to this many seconds for other processes
#                     to use at most QUIET_PCT=5 % of a core over a 1 s sample (0: don't wait)
#   KEEP_RAW=DIR      keep every raw wrk/oha output and the proxies' logs in DIR
#   NO_BUILD=1        skip `cargo build --release -p headwater-engine`
#   HEADWATER_BIN=P   benchmark this headwater binary instead of target/release/headwater

set -Eeuo pipefail
trap 'echo "suite.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
SUITE_DIR="$BENCH_DIR/suite"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

# The command as given, for the report (only the settings that were set).
COMMAND=$(command_line bench/suite.sh RUNS DURATION WARMUP ROWS PROXIES RATE RATE_CONNS WRK_TIMEOUT \
    PROXY_CORE LOAD_CORE QUIET_WAIT QUIET_PCT KEEP_RAW NO_BUILD HEADWATER_BIN)

ALL_ROWS="ka128 ka4k ka16k ka160k close c1 c1024 post16k chunked rate"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROWS=${ROWS:-$ALL_ROWS}
PROXIES=${PROXIES:-"headwater nginx haproxy"}
RATE=${RATE:-20000}
RATE_CONNS=${RATE_CONNS:-64}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
QUIET_WAIT=${QUIET_WAIT:-10}
QUIET_PCT=${QUIET_PCT:-5}
HEADWATER_BIN=${HEADWATER_BIN:-"$ROOT/target/release/headwater"}

# ---------------------------------------------------------------- rows and proxies
declare -A ROW_PATH=([ka128]=/128b [ka4k]=/4k [ka16k]=/16k [ka160k]=/160k [close]=/128b
    [c1]=/128b [c1024]=/128b [post16k]=/post [chunked]=/chunked/16k [rate]=/128b)
declare -A ROW_CONNS=([ka128]=64 [ka4k]=64 [ka16k]=64 [ka160k]=64 [close]=64 [c1]=1 [c1024]=1024
    [post16k]=64 [chunked]=64 [rate]=$RATE_CONNS)
declare -A ROW_DESC=(
    [ka128]="keep-alive GET, 128 B body, 64 connections"
    [ka4k]="keep-alive GET, 4 KiB body, 64 connections"
    [ka16k]="keep-alive GET, 16 KiB body, 64 connections"
    [ka160k]="keep-alive GET, 160 KiB body, 64 connections"
    [close]="new connection per request (Connection: close), 128 B body, 64 connections"
    [c1]="keep-alive GET, 128 B body, 1 connection"
    [c1024]="keep-alive GET, 128 B body, 1024 connections"
    [post16k]="keep-alive POST, 16 KiB request body, 64 connections"
    [chunked]="keep-alive GET, 16 KiB body sent chunked by the upstream (4 x 4 KiB), 64 connections"
    [rate]="latency at a fixed $RATE req/s (open loop, oha --latency-correction), keep-alive, $RATE_CONNS connections")
declare -A PORT=([direct]=18950 [headwater]=18951 [nginx]=18952 [haproxy]=18953)
declare -A LABEL=([direct]="direct (no proxy)" [headwater]=Headwater [nginx]=nginx [haproxy]=HAProxy)

for row in $ROWS; do
    [[ -n "${ROW_PATH[$row]:-}" ]] || { echo "unknown row '$row'; rows: $ALL_ROWS" >&2; exit 1; }
done
read -r -a PROXY_LIST <<<"$PROXIES"
for p in "${PROXY_LIST[@]}"; do
    [[ -n "${PORT[$p]:-}" ]] || { echo "unknown proxy '$p'; proxies: headwater nginx haproxy direct" >&2; exit 1; }
done
((${#PROXY_LIST[@]})) || { echo "PROXIES is empty" >&2; exit 1; }
has_proxy() { [[ " $PROXIES " == *" $1 "* ]]; }
has_row() { [[ " $ROWS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- prerequisites
packages=(wrk nginx)
if has_proxy haproxy; then packages+=(haproxy); fi
require_packages "${packages[@]}"
require_cmds curl python3 taskset cargo awk sort getconf
if has_row rate; then require_cargo_tool oha; fi
warn_few_cores

DUR_S=$(duration_secs "$DURATION")
WARM_S=$(duration_secs "$WARMUP")
n_rows=$(wc -w <<<"$ROWS")
n_prox=${#PROXY_LIST[@]}
# per measured run: DURATION, plus the 1 s quiet sample (if QUIET_WAIT > 0) and ~0.3 s of /proc scans
est=$(((n_rows * n_prox * (10 * WARM_S + RUNS * (10 * DUR_S + (QUIET_WAIT > 0 ? 13 : 3)))) / 10 + 10))
echo "suite.sh: $n_rows rows x ${n_prox} proxies x $RUNS runs x $DURATION (+ warm-up $WARMUP):" \
    "about $((est / 60)) min $((est % 60)) s, plus up to ${QUIET_WAIT}s per run waiting for quiet" >&2

build_headwater
[[ -x "$HEADWATER_BIN" ]] || { echo "no $HEADWATER_BIN" >&2; exit 1; }

# 1024 client connections, and as many upstream connections for each proxy
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 8192)); then
    echo "warning: open files limit is $(ulimit -n); the c1024 row needs about 4096" >&2
fi

# ---------------------------------------------------------------- processes
make_tmp_with_traps suite
make_suite_files "$TMP"
mkdir -p "$TMP/raw"
head -c 16384 /dev/zero | tr '\0' 'p' >"$TMP/post-body"
cp "$HEADWATER_BIN" "$TMP/headwater" # a concurrent rebuild must not swap the binary under test

declare -A PIDS_OF=([direct]="")
start_suite "${PROXY_LIST[@]}"

wait_url "http://127.0.0.1:${PORT[direct]}/128b" "upstream nginx" "$TMP/upstream.log"
for p in "${PROXY_LIST[@]}"; do
    [[ $p == direct ]] || wait_url "http://127.0.0.1:${PORT[$p]}/128b" "${LABEL[$p]}" "$TMP/$p.log"
done
for p in "${!SUITE_PID[@]}"; do PIDS_OF[$p]=$(pid_tree "${SUITE_PID[$p]}"); done
# processes whose CPU use is not "other": this shell, the proxies, the upstream (and children)
OURS="$$ $BASHPID $(pid_tree "$UPSTREAM_PID") ${PIDS_OF[*]}"

# ---------------------------------------------------------------- checks
CHECKS="$TMP/checks"
: >"$CHECKS"
check_fail() { echo "check failed: $*" >&2; exit 1; }
for p in direct "${PROXY_LIST[@]/direct/}"; do
    [[ -n "$p" ]] || continue
    port=${PORT[$p]}
    for spec in 128b:128 4k:4096 16k:16384 160k:163840; do
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/${spec%%:*}")
        [[ "$got" == "200 ${spec#*:}" ]] || check_fail "${LABEL[$p]} /${spec%%:*} answered '$got', want '200 ${spec#*:}'"
    done
    chunked=$(python3 "$SUITE_DIR/http_check.py" chunked "$port" /chunked/16k) ||
        check_fail "${LABEL[$p]} /chunked/16k: $chunked"
    [[ "$chunked" == *"body_bytes=16384"* ]] || check_fail "${LABEL[$p]} /chunked/16k: $chunked"
    if [[ $p == direct && "$chunked" != *"framing=chunked"* ]]; then
        check_fail "the upstream's /chunked/16k is not chunked: $chunked"
    fi
    got=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$TMP/post-body" \
        -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$port/post-check")
    [[ "$got" == 200 ]] || check_fail "${LABEL[$p]} POST /post-check answered $got"
    post=$(tail -1 "$TMP/tmp/post-check.log")
    req_len=$(sed -n 's/.*request_length=\([0-9]*\).*/\1/p' <<<"$post")
    ((req_len > 16384)) || check_fail "${LABEL[$p]}: the upstream did not get the 16 KiB POST body: $post"
    keepalive=$(python3 "$SUITE_DIR/http_check.py" keepalive "$port" /128b) ||
        check_fail "${LABEL[$p]} keep-alive: $keepalive"
    close=$(python3 "$SUITE_DIR/http_check.py" close "$port" /128b) ||
        echo "warning: ${LABEL[$p]} does not close after 'Connection: close' ($close); the close row will count errors" >&2
    printf '| %s | ok | %s | %s | %s | %s |\n' "${LABEL[$p]}" "${chunked#status=200 }" \
        "${post#POST /post-check }" "${keepalive#status=200,200 }" "${close#status=200 }" >>"$CHECKS"
done

# ---------------------------------------------------------------- measuring
run_load() { # proxy row duration outfile
    local row=$2 url="http://127.0.0.1:${PORT[$1]}${ROW_PATH[$2]}" post=0 hdr=()
    if [[ $row == rate ]]; then
        taskset -c "$LOAD_CORE" oha -z "$3" -w -q "$RATE" -c "${ROW_CONNS[$row]}" --latency-correction \
            --no-tui --output-format json "$url" >"$4" 2>&1 || true
        return
    fi
    [[ $row == post16k ]] && post=16384
    [[ $row == close ]] && hdr=(-H 'Connection: close')
    SUITE_POST_BYTES=$post taskset -c "$LOAD_CORE" wrk -t1 -c"${ROW_CONNS[$row]}" -d"$3" \
        --timeout "$WRK_TIMEOUT" -s "$SUITE_DIR/wrk.lua" "${hdr[@]}" "$url" >"$4" 2>&1 || true
}

# one raw output -> "rps requests p50_ms p99_ms p999_ms non2xx errors" (zeros if it failed)
parse_load() { # row file
    if [[ $1 == rate ]]; then
        python3 - "$2" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("0 0 0 0 0 0 0"); sys.exit()
codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
reqs = sum(codes.values())
non2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
errors = sum((d.get("errorDistribution") or {}).values())
lat = d.get("latencyPercentiles") or {}
ms = lambda k: 1000 * (lat.get(k) or 0)
print(f'{d["summary"].get("requestsPerSec") or 0:.1f} {reqs} {ms("p50"):.3f} {ms("p99"):.3f} {ms("p99.9"):.3f} {non2xx} {errors}')
EOF
    else
        parse_wrk_done suite "$2"
    fi
}

RESULTS="$TMP/results"
: >"$RESULTS"
for row in $ROWS; do
    echo "== $row: ${ROW_DESC[$row]}" >&2
    if ((WARM_S > 0)); then
        for p in "${PROXY_LIST[@]}"; do run_load "$p" "$row" "$WARMUP" "$TMP/raw/warmup"; done
    fi
    measure_row "$row" '   %-9s run %d: %8.0f req/s  p50 %7.3f ms  p99 %7.3f ms  p99.9 %7.3f ms  errors %d+%d  CPU s/10k %s  proxy CPU %s%%  other %s%%\n' \
        "${PROXY_LIST[@]}"
done
if [[ -n "${KEEP_RAW:-}" ]]; then
    mkdir -p "$KEEP_RAW" && cp "$TMP"/raw/*_*.txt "$TMP"/*.log "$RESULTS" "$KEEP_RAW"/
fi

# ---------------------------------------------------------------- report (stdout)
echo "## Benchmark suite: Headwater vs nginx vs HAProxy"
echo
report_common_items
echo "- versions: $(nginx_version), HAProxy $(if has_proxy haproxy; then haproxy_version; else echo -; fi)," \
    "$(wrk_version), oha $(if command -v oha >/dev/null; then oha_version; else echo -; fi)"
echo "- layout: proxy on core $PROXY_CORE (1 worker each: Headwater \`workers = 1\`, nginx \`worker_processes 1\`," \
    "HAProxy \`nbthread 1\`); load generator and upstream nginx (1 worker) on core $LOAD_CORE; configs in \`bench/suite/\`"
echo "- runs: $RUNS x $DURATION per proxy and row, rounds alternating the proxies, warm-up $WARMUP; medians shown." \
    "Errors are summed over the runs. CPU s per 10k req: the proxy's utime+stime (all its processes) per 10,000" \
    "requests completed. Max other CPU %: CPU time charged to unrelated processes during a run (children they" \
    "reaped included, so it can exceed 100 % per core); above a few % the run was disturbed"
warn_other_load "during measurement" | sed 's/^/- /'
echo
echo "Checks before measuring (framing of /chunked/16k as the client got it; the POST body as the upstream counted it, request_length = head + body; two requests on one connection; a request with \`Connection: close\`):"
echo
echo "| target | bodies 128 B-160 KiB | chunked | POST 16 KiB at the upstream | keep-alive | Connection: close |"
echo "|---|---|---|---|---|---|"
cat "$CHECKS"
echo
for row in $ROWS; do
    echo "### $row: ${ROW_DESC[$row]}"
    echo
    if [[ $row == rate ]]; then
        echo "| proxy | achieved req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | errors (socket / non-2xx) | CPU s per 10k req | proxy CPU % | max other CPU % |"
    else
        echo "| proxy | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | errors (socket / non-2xx) | CPU s per 10k req | proxy CPU % | max other CPU % |"
    fi
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for p in "${PROXY_LIST[@]}"; do
        printf '| %s | %.0f | %.3f | %.3f | %.3f | %s\n' "${LABEL[$p]}" \
            "$(med "$row" "$p" 4)" "$(med "$row" "$p" 5)" "$(med "$row" "$p" 6)" "$(med "$row" "$p" 7)" \
            "$(load_cpu_cells "$row" "$p")"
    done
    line=""
    for other in nginx haproxy; do
        if has_proxy headwater && has_proxy "$other"; then
            line+="${line:+; }Headwater/${LABEL[$other]}: req/s $(headwater_ratio "$row" "$other" 4)×,"
            line+=" p99 $(headwater_ratio "$row" "$other" 6)×, CPU per request $(headwater_ratio "$row" "$other" 11)×"
        fi
    done
    if [[ -n "$line" ]]; then echo && echo "$line"; fi
    if [[ $row == rate ]]; then
        for p in "${PROXY_LIST[@]}"; do
            awk -v a="$(med "$row" "$p" 4)" -v q="$RATE" -v l="${LABEL[$p]}" \
                'BEGIN { if (a < 0.97 * q) printf "\nWARNING: %s reached %.0f req/s, below RATE=%d: the proxy or the generator saturated, or the run was disturbed (see other CPU %%); rerun, or lower RATE.\n", l, a, q }'
        done
    fi
    echo
done
if has_proxy headwater && { has_proxy nginx || has_proxy haproxy; }; then
    echo "### Summary: Headwater / nginx (H/N) and Headwater / HAProxy (H/X), medians"
    echo
    echo "| row | H/N req/s | H/N p99 | H/N CPU per req | H/X req/s | H/X p99 | H/X CPU per req |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for row in $ROWS; do
        cells=""
        for other in nginx haproxy; do
            for c in 4 6 11; do
                if has_proxy "$other"; then
                    cells+=" $(headwater_ratio "$row" "$other" $c) |"
                else
                    cells+=" - |"
                fi
            done
        done
        echo "| $row |$cells"
    done
    echo
    echo "Ratios are of the medians above: req/s above 1, and p99 and CPU per request below 1, favour"
    echo "Headwater. In the rate row req/s is the offered rate and compares nothing; p99 there is"
    echo "measured from each request's scheduled send time (coordinated omission corrected). Where a"
    echo "proxy's req/s equals the load core's limit (wrk and the upstream share it), CPU per request"
    echo "is the fairer comparison."
fi
