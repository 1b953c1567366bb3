# shellcheck shell=bash
# Shared by bench/run.sh, bench/idle_conns.sh, bench/chaos.sh, bench/suite.sh and bench/llm.sh,
# which source it from their own directory (after setting BENCH_DIR and ROOT), and by
# perf/instructions.sh:
#
#   source "$BENCH_DIR/lib.sh"
#
# Only definitions: sourcing it runs nothing.

# Ports of the Headwater-vs-nginx setup used by run.sh and idle_conns.sh: bench/nginx/upstream.conf,
# bench/headwater/proxy.toml and bench/nginx/proxy.conf listen on them (chaos.sh has its own).
# shellcheck disable=SC2034 # used by the scripts that source this
UPSTREAM_PORT=18900
# shellcheck disable=SC2034
HEADWATER_PORT=18901
# shellcheck disable=SC2034
NGINX_PORT=18902

# Exits (status 1) with an install hint if one of the commands (each from the Debian package of
# the same name, e.g. wrk, nginx) is not on PATH.
require_packages() { # command...
    local missing=() cmd them=it
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        if (($# > 1)); then them=them; fi
        echo "missing: ${missing[*]}" >&2
        echo "install $them with:  apt-get install -y $*" >&2
        exit 1
    fi
}

# Exits (status 1) naming the first of the commands that is not on PATH.
require_cmds() { # command...
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || { echo "missing: $cmd" >&2; exit 1; }
    done
}

# Builds target/release/headwater under ROOT, unless NO_BUILD is set.
build_headwater() {
    if [[ -z "${NO_BUILD:-}" ]]; then
        (cd "$ROOT" && cargo build --release -p headwater-engine)
    fi
}

# Stops processes this shell started: SIGTERM to all, then for each up to STOP_WAIT seconds
# (default 5) before SIGKILL; reaps them.
stop_pids() { # pid...
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq $((${STOP_WAIT:-5} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# stop_pids PID, and takes it out of PIDS (for a process stopped before the script ends).
stop_tracked() { # pid
    local keep=() p
    stop_pids "$1"
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Makes TMP, a fresh directory /tmp/headwater-NAME.XXXXXX (mode 755: nginx workers run as nobody
# when started by root), and PIDS, the processes to stop on exit, and installs the traps: on exit,
# stop_pids "${PIDS[@]}" and remove TMP; on SIGINT, SIGTERM or SIGHUP, say so and exit 130.
make_tmp_with_traps() { # name
    TMP=$(mktemp -d "/tmp/headwater-$1.XXXXXX")
    chmod 755 "$TMP"
    PIDS=()
    trap 'stop_pids "${PIDS[@]}"; rm -rf "$TMP"' EXIT
    trap 'echo "$(basename "$0"): stopped by a signal" >&2; exit 130' INT TERM HUP
}

# Fills the nginx prefix DIR that bench/nginx/*.conf expect: html/100b, html/4k and tmp/.
make_nginx_prefix() { # dir
    mkdir -p "$1/html" "$1/tmp"
    head -c 100 /dev/zero | tr '\0' 'a' >"$1/html/100b"
    head -c 4096 /dev/zero | tr '\0' 'b' >"$1/html/4k"
}

# Starts nginx in the background, pinned to CORE, with prefix PREFIX and config CONF, its stderr
# appended to LOG. $! is its pid afterwards.
start_nginx() { # core prefix conf log
    taskset -c "$1" nginx -p "$2" -e stderr -c "$3" -g 'daemon off;' 2>>"$4" &
}

# Starts CMD... in the background pinned to CORE, its stdout and stderr appended to LOG, and
# tracks it in PIDS (stopped on exit). $! is its pid afterwards.
start_pinned() { # core log cmd...
    local core=$1 log=$2
    shift 2
    taskset -c "$core" "$@" >>"$log" 2>&1 &
    PIDS+=($!)
}

# The fixed bodies the suite's upstream (bench/suite/upstream.conf) serves from DIR/html: 128b,
# 4k, 16k, 160k and chunked/16k; and DIR/tmp for its temp files.
make_suite_files() { # dir
    mkdir -p "$1/html/chunked" "$1/tmp"
    local spec
    for spec in 128b:128 4k:4096 16k:16384 160k:163840; do
        head -c "${spec#*:}" /dev/zero | tr '\0' 'b' >"$1/html/${spec%%:*}"
    done
    cp "$1/html/16k" "$1/html/chunked/16k"
}

# Starts, with the configs in SUITE_DIR and the files in TMP (make_suite_files, and TMP/headwater
# the binary under test): the upstream nginx on LOAD_CORE, then each proxy named among nginx,
# haproxy and headwater on PROXY_CORE (other names are skipped), all tracked in PIDS. Sets
# UPSTREAM_PID and SUITE_PID[proxy] (nginx's master: take pid_tree once it answers).
declare -A SUITE_PID
# shellcheck disable=SC2153 # SUITE_DIR, TMP, LOAD_CORE and PROXY_CORE are the caller's
start_suite() { # proxy...
    start_nginx "$LOAD_CORE" "$TMP/" "$SUITE_DIR/upstream.conf" "$TMP/upstream.log"
    PIDS+=($!)
    UPSTREAM_PID=$!
    local p
    for p in "$@"; do
        case $p in
        nginx)
            start_nginx "$PROXY_CORE" "$TMP/" "$SUITE_DIR/nginx.conf" "$TMP/nginx.log"
            PIDS+=($!)
            ;;
        haproxy) start_pinned "$PROXY_CORE" "$TMP/haproxy.log" haproxy -db -f "$SUITE_DIR/haproxy.cfg" ;;
        # its one shard pins itself to the first allowed core
        headwater) start_pinned "$PROXY_CORE" "$TMP/headwater.log" "$TMP/headwater" run -c "$SUITE_DIR/headwater.toml" ;;
        *) continue ;;
        esac
        SUITE_PID[$p]=$!
    done
}

# Waits until URL answers a GET with 200, polling every 0.1 s for up to SECS seconds (default
# 10). Exits 1 if it does not, or at once if PID (when given) has exited, showing the end of LOG
# (when given).
wait_url() { # url name [log] [pid] [secs]
    local log=${3:-} pid=${4:-}
    for _ in $(seq $((${5:-10} * 10))); do
        if [[ $(curl -s -m 5 -o /dev/null -w '%{http_code}' "$1") == 200 ]]; then return 0; fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            echo "$2 exited while starting" >&2
            if [[ -n $log && -s $log ]]; then tail -15 "$log" | sed 's/^/  /' >&2; fi
            exit 1
        fi
        sleep 0.1
    done
    echo "$2 did not answer 200 on $1 within ${5:-10} s" >&2
    if [[ -n $log && -s $log ]]; then tail -15 "$log" | sed 's/^/  /' >&2; fi
    exit 1
}

# wait_url for http://127.0.0.1:PORT/100b (the bodies of make_nginx_prefix).
wait_port() { wait_url "http://127.0.0.1:$1/100b" "$2"; } # port name

# For the report: a warning (on stdout) naming fuzzers that run beside the benchmark, if any.
warn_other_load() { # [when, e.g. "during measurement"]
    local other
    other=$(pgrep -fa 'fuzz' || true)
    if [[ -n "$other" ]]; then
        echo "WARNING: other load present${1:+ $1}:"
        echo "$other" | sed 's/^/  /'
    fi
}

# Warns on stderr if the machine has fewer than 2 cores (proxy and load then share one).
warn_few_cores() {
    if (($(nproc) < 2)); then
        echo "warning: fewer than 2 cores; proxy and load will share a core" >&2
    fi
}

# For the machine summary: "N cores, CPU model, kernel X", nginx's version, wrk's version.
machine_summary() {
    echo "$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
}
nginx_version() { nginx -v 2>&1 | sed 's/^nginx version: //'; }
wrk_version() { { wrk -v 2>&1 || true; } | head -1 | awk '{print $1, $2}'; }

# An awk function to put in front of an awk program (awk "$AWK_WRK_MS"'...'): ms(v) turns one
# of wrk's durations (e.g. 812.00us, 1.25ms, 2.00s, 1.00m) into milliseconds.
# shellcheck disable=SC2034 # used by the scripts that source this
AWK_WRK_MS='
    function ms(v) {
        if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
        if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
        if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
        if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
        return v + 0
    }'

# ---------------------------------------------------------------- CPU accounting, durations, versions

# Exits (status 1) with `cargo install CRATE` as the hint if CMD is not on PATH (for tools that
# come from crates.io rather than Debian, e.g. oha).
require_cargo_tool() { # cmd [crate]
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing: $1 (from crates.io)" >&2
        echo "install it with:  cargo install ${2:-$1}   (takes a few minutes; add --locked if" >&2
        echo "the newest release needs a newer rustc than this one)" >&2
        exit 1
    fi
}

# PID and its direct children (an nginx master and its workers), space-separated.
pid_tree() { # pid
    echo "$1 $({ pgrep -P "$1" || true; } | tr '\n' ' ')"
}

# utime+stime of the processes (all their threads), in clock ticks (getconf CLK_TCK per second).
proc_cpu_ticks() { # pid...
    local pid total=0 t
    for pid in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# Writes "pid ticks" (utime+stime+cutime+cstime, so short-lived children reaped by a long-lived
# parent, e.g. rustc under cargo, count too) of every process except OURS (space-separated pids;
# their children are left out too) to FILE.
snapshot_other_cpu() { # file ours
    local f
    for f in /proc/[0-9]*/stat; do
        cat "$f" 2>/dev/null || true # a process may exit while we scan
    done | awk -v ours=" $2 " '{
        pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
        # f[2] = ppid; f[12..15] = utime stime cutime cstime
        if (index(ours, " " pid " ") || index(ours, " " f[2] " ")) next
        print pid, f[12] + f[13] + f[14] + f[15]
    }' >"$1"
}

# Ticks used by other processes between two snapshot_other_cpu files.
other_cpu_ticks() { # before after
    awk 'NR == FNR { before[$1] = $2; next } { d = $2 - ($1 in before ? before[$1] : 0); if (d > 0) s += d }
         END { print s + 0 }' "$1" "$2"
}

# Waits up to MAX seconds until processes other than OURS use at most PCT % of a core over a
# 1 s sample; prints how many seconds it waited. Uses DIR for two scratch files.
wait_quiet_others() { # max pct ours dir
    local waited=0 o tick
    tick=$(getconf CLK_TCK)
    while ((waited < $1)); do
        snapshot_other_cpu "$4/quiet0" "$3"
        sleep 1
        snapshot_other_cpu "$4/quiet1" "$3"
        o=$(other_cpu_ticks "$4/quiet0" "$4/quiet1")
        ((o * 100 <= $2 * tick)) && break
        waited=$((waited + 1))
    done
    echo "$waited"
}

# A wrk/oha duration ("10s", "2m", "1h", "500ms" or plain seconds) in whole seconds (rounded up).
duration_secs() { # duration
    awk -v d="$1" 'BEGIN {
        if (d ~ /ms$/) { sub(/ms$/, "", d); s = d / 1000 }
        else if (d ~ /s$/) { sub(/s$/, "", d); s = d }
        else if (d ~ /m$/) { sub(/m$/, "", d); s = d * 60 }
        else if (d ~ /h$/) { sub(/h$/, "", d); s = d * 3600 }
        else s = d
        print (s == int(s)) ? s : int(s) + 1
    }'
}

haproxy_version() { haproxy -v 2>&1 | awk 'NR == 1 { print $3 }'; }
oha_version() { oha --version 2>&1 | awk 'NR == 1 { print $NF }'; }

# ---------------------------------------------------------------- measure_row and reports (suite.sh, llm.sh)

# The command line a script was run with, for its report: those of the KNOBs (environment
# variables) that are set, shell-quoted, then SCRIPT. Call it before giving the knobs defaults.
command_line() { # script knob...
    local script=$1 knob line=""
    shift
    for knob in "$@"; do
        if [[ -n "${!knob+x}" ]]; then line+="$knob=$(printf '%q' "${!knob}") "; fi
    done
    echo "$line$script"
}

# One raw wrk output (FILE) run with bench/suite/wrk.lua or bench/llm/wrk.lua, whose done() prints
# "PREFIX: requests N p50_us N p99_us N p999_us N non2xx N connect N read N write N timeout N",
# as "rps requests p50_ms p99_ms p999_ms non2xx errors" (errors: wrk's socket errors of every
# kind); zeros if there is no such line (wrk failed).
parse_wrk_done() { # prefix file
    awk -v prefix="$1: " '/^Requests\/sec:/ { rps = $2 }
         index($0, prefix) == 1 { reqs = $3; p50 = $5; p99 = $7; p999 = $9; non2xx = $11; err = $13 + $15 + $17 + $19; ok = 1 }
         END { if (!ok) { print "0 0 0 0 0 0 0"; exit }
               printf "%s %d %.3f %.3f %.3f %d %d\n", rps, reqs, p50 / 1000, p99 / 1000, p999 / 1000, non2xx, err }' "$2"
}

# The measured runs of one ROW: RUNS rounds, each running every TARGET once, in an order rotated
# by the round (A B C, then B C A, C A B, ...) so that drift hits all alike. Before each run it
# waits up to QUIET_WAIT seconds (0: not at all) for processes other than OURS to use at most
# QUIET_PCT % of a core (scratch files in TMP); around it, it counts the CPU ticks of the target's
# processes (PIDS_OF[TARGET], space-separated pids; empty for a baseline without a proxy, whose
# CPU columns are then "-") and of every process but OURS. The caller defines
#   run_load TARGET ROW DURATION OUTFILE   one load run (OUTFILE: TMP/raw/ROW_TARGET_RUN.txt)
#   parse_load ROW OUTFILE                 -> "rps requests p50_ms p99_ms p999_ms non2xx errors"
# Every run is shown on stderr, by printf FORMAT with: target, run, req/s, p50, p99, p99.9 (ms),
# errors, non-2xx, CPU s per 10k requests, the target's CPU %, other processes' CPU %; and is
# appended to RESULTS as one line (the columns of the report functions below):
#   ROW TARGET RUN rps p50 p99 p999 non2xx errors requests cpu_s_per_10k cpu_pct other_pct
measure_row() { # row format target...
    local row=$1 format=$2 tick n r i t out waited c0 c1 t0 t1
    local rps reqs p50 p99 p999 non2xx err cpu10k cpu_pct other_pct
    shift 2
    local targets=("$@")
    n=${#targets[@]}
    tick=$(getconf CLK_TCK)
    for r in $(seq "$RUNS"); do
        for i in $(seq 0 $((n - 1))); do
            t=${targets[$(((r - 1 + i) % n))]}
            out="$TMP/raw/${row}_${t}_$r.txt"
            if ((QUIET_WAIT > 0)); then
                waited=$(wait_quiet_others "$QUIET_WAIT" "$QUIET_PCT" "$OURS" "$TMP")
                ((waited > 0)) && echo "   (waited ${waited}s for other processes to go quiet)" >&2
            fi
            # shellcheck disable=SC2086 # PIDS_OF holds space-separated pid lists
            {
                snapshot_other_cpu "$TMP/others0" "$OURS"
                c0=$(proc_cpu_ticks ${PIDS_OF[$t]}) t0=$(date +%s%N)
                run_load "$t" "$row" "$DURATION" "$out"
                t1=$(date +%s%N) c1=$(proc_cpu_ticks ${PIDS_OF[$t]})
                snapshot_other_cpu "$TMP/others1" "$OURS"
            }
            read -r rps reqs p50 p99 p999 non2xx err < <(parse_load "$row" "$out")
            read -r cpu10k cpu_pct other_pct < <(awk -v c=$((c1 - c0)) -v n="$reqs" \
                -v o="$(other_cpu_ticks "$TMP/others0" "$TMP/others1")" -v ns=$((t1 - t0)) -v tick="$tick" \
                -v direct="$([[ -z "${PIDS_OF[$t]}" ]] && echo 1 || echo 0)" \
                'BEGIN { s = ns / 1e9 * tick
                         printf "%s %s %.1f\n", (direct || n == 0) ? "-" : sprintf("%.4f", c / tick / n * 10000),
                             direct ? "-" : sprintf("%.1f", 100 * c / s), 100 * o / s }')
            # shellcheck disable=SC2059 # the caller's format
            printf "$format" "$t" "$r" "$rps" "$p50" "$p99" "$p999" "$err" "$non2xx" "$cpu10k" "$cpu_pct" "$other_pct" >&2
            echo "$row $t $r $rps $p50 $p99 $p999 $non2xx $err $reqs $cpu10k $cpu_pct $other_pct" >>"$RESULTS"
        done
    done
}

# For the reports, over the lines measure_row appended to RESULTS (the column numbers are theirs:
# 4 req/s, 5 p50, 6 p99, 7 p99.9, 8 non-2xx, 9 errors, 11 CPU s per 10k, 12 CPU %, 13 other CPU %).
# median: of the numbers on stdin, one a line ("-" if there are none).
median() { sort -g | awk '{ a[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# col: the values of COLUMN for ROW and TARGET, one a line, those that are "-" left out.
col() { awk -v r="$1" -v p="$2" -v c="$3" '$1 == r && $2 == p && $c != "-" { print $c }' "$RESULTS"; } # row target column
# sum: of the numbers on stdin, one a line.
sum() { awk '{ s += $1 } END { print s + 0 }'; }
# ratio: A / B, to 2 decimals (3 below 0.1); "-" if either is "-", A is negative or B is not positive.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 <= 0 || a + 0 < 0) print "-"; else printf (a / b < 0.1 ? "%.3f\n" : "%.2f\n"), a / b }'; }
# med: the median of COLUMN for ROW and TARGET.
med() { col "$1" "$2" "$3" | median; } # row target column
# headwater_ratio: the ratio of Headwater's median of COLUMN in ROW to OTHER's.
headwater_ratio() { ratio "$(med "$1" headwater "$3")" "$(med "$1" "$2" "$3")"; } # row other column
# load_cpu_cells: the cells a row table of either report ends with, for TARGET in ROW: errors
# (socket / non-2xx, each summed over the runs), median CPU s per 10k requests, median CPU %, max
# other CPU %.
load_cpu_cells() { # row target
    printf '%d / %d | %s | %s | %s |' "$(col "$1" "$2" 9 | sum)" "$(col "$1" "$2" 8 | sum)" \
        "$(med "$1" "$2" 11)" "$(med "$1" "$2" 12)" "$(col "$1" "$2" 13 | sort -g | tail -1)"
}

# The report's first items: the command (COMMAND), date, machine, and the Headwater binary under
# test (HEADWATER_BIN, ROOT's HEAD, and the I/O driver that TMP/headwater.log names).
report_common_items() {
    local driver
    driver=$({ sed -n 's/.* with \([a-z_]*\) (.*/\1/p' "$TMP/headwater.log" 2>/dev/null || true; } | head -1)
    echo "- command: \`$COMMAND\`"
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(machine_summary)"
    echo "- Headwater: binary $HEADWATER_BIN (built $(date -u -r "$HEADWATER_BIN" +%Y-%m-%dT%H:%MZ);" \
        "this repo's HEAD: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); its I/O driver: ${driver:-not running}"
}
