#!/usr/bin/env bash
# Instructions per proxied request: Headwater vs nginx, one worker each, same workload.
#
#   perf/instructions.sh                          # N=3000, CONNS=4, both Headwater drivers
#   NO_BUILD=1 HEADWATER_BIN=/path/headwater perf/instructions.sh
#   N=2000 PERF_STAT=0 SYSCALLS=0 perf/instructions.sh            # callgrind only, quicker
#   KEEP=/tmp/budget perf/instructions.sh         # keep every tool output (for cg_per_request.py)
#
# Workload: perf/budget/client.py sends exactly N keep-alive GET requests (on CONNS
# connections, one in flight per connection) through the proxy under test to an upstream nginx
# that answers every request with the same 128-byte body (perf/budget/upstream.conf), and checks
# every response (200, the exact body). The proxies:
#   Headwater  perf/budget/headwater.toml (workers = 1) with io_driver = each of DRIVERS
#   nginx      perf/budget/nginx-proxy.conf (worker_processes 1, master_process off, daemon off:
#              the process the tool started is the one that serves)
#
# Method: each proxy runs twice under the counting tool, once serving N requests and once 2N,
# from start to exit (SIGTERM). (count(2N) - count(N)) / N is the cost of one request: startup,
# the first upstream connections and shutdown are in both runs and cancel out.
#   callgrind  valgrind --tool=callgrind --trace-children=no: user-space instructions of all the
#              proxy's threads (Headwater's health, signal and main threads are idle), exact and
#              repeatable whatever else runs on the machine.
#   perf stat  perf stat -e instructions:u (when the VM exposes the hardware counter, checked
#              with `perf stat -e instructions:u true`): the same subtraction at native speed,
#              the only way to count io_uring properly (see below).
#   perf trace perf trace -s (or, without it, strace -f -c): system calls per request, by name
#              and with how many failed (EAGAIN), all threads, in two regimes: serial (the same
#              subtraction, the client on one connection, so nothing is batched) and loaded
#              (wrk -c64 for LOAD_SECS, the tool attached to the proxy; calls divided by wrk's
#              request count). With several connections and no saturation the
#              counts depend on timing (how often a read finds data already there), which is
#              why neither regime uses CONNS. perf trace reads tracepoints and barely slows the
#              proxy; strace stops it on every call.
#
# io_uring under valgrind 3.19 works only in part, so callgrind measures Headwater with
# io_driver = "epoll" by default, and perf stat is the reference for io_uring. Requests are
# served, but the ring's timed waits (IORING_ENTER_EXT_ARG) never time out: timers only run when
# some I/O completes, and a SIGTERM is only handled once the shard thread wakes up, so shutdown
# takes from 20 s to several minutes (this script opens a connection every 2 s to wake it, and
# gives up after 180 s), and the per-request count moves by up to 10 % between runs (26.8k to
# 30.0k here) with the irregular wake-ups. CALLGRIND_DRIVERS="epoll io_uring" measures it anyway.
#
# Needs the Debian packages valgrind and nginx (perf stat, perf trace: linux-perf; or strace),
# and python3, curl, taskset:
#   apt-get install -y valgrind nginx linux-perf strace
# Everything listens on 127.0.0.1 (ports 18960-18962, not those of bench/run.sh); all that the
# script starts is stopped when it exits, also on Ctrl-C.
#
# Environment:
#   N=3000            requests of the short run (the long run sends 2N)
#   CONNS=4           client keep-alive connections
#   DRIVERS="epoll io_uring"    Headwater io_driver values for perf stat and the system calls
#   CALLGRIND_DRIVERS=epoll     the same for callgrind (io_uring under valgrind: see above)
#   PROXIES="headwater nginx"
#   CALLGRIND=1       0: skip the callgrind rows (e.g. for a quick perf stat / syscall run)
#   PERF_STAT=auto    1: also count with perf stat (fails if it cannot); 0: don't; auto: if it works
#   SYSCALLS=auto     system calls per request: perf-trace, strace, 0 (none), or auto (perf
#                     trace if it works, else strace if it works, else none)
#   LOAD_SECS=5       length of the wrk run of the loaded system call count (needs wrk)
#   PERF_REPEAT=3     perf stat pairs per row (the median of the per-request figures is shown:
#                     native runs vary a little with how many events one wait returns)
#   KEEP=DIR          copy every tool output there: callgrind's (e.g. DIR/headwater-epoll-6000.cg),
#                     perf stat's, the system call summaries; perf/budget/cg_per_request.py turns
#                     a pair of callgrind outputs into costs per request by function
#   CALLGRIND_OPTS=   extra valgrind options for the callgrind runs. "--cache-sim=yes --branch-sim=yes"
#                     slows the proxy down about 2x without changing the instruction count, so that
#                     it never catches up with its peers: every read finds its data, no run pays
#                     for waits (EAGAIN, epoll_wait, timer), and repeated runs agree to ±0.3 %
#                     (see "Reads that wait" in BUDGET.md)
#   PROXY_CORE=0 LOAD_CORE=1    the proxy alone on one core; client and upstream on the other
#   NO_BUILD=1        skip `cargo build --release -p headwater-engine`
#   HEADWATER_BIN=P   measure this binary instead of target/release/headwater (it is copied
#                     first, so a concurrent rebuild cannot swap it)

set -Eeuo pipefail
trap 'echo "instructions.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

N=${N:-3000}
CONNS=${CONNS:-4}
DRIVERS=${DRIVERS:-"epoll io_uring"}
CALLGRIND_DRIVERS=${CALLGRIND_DRIVERS:-epoll}
PROXIES=${PROXIES:-"headwater nginx"}
PERF_STAT=${PERF_STAT:-auto}
CALLGRIND=${CALLGRIND:-1}
CALLGRIND_OPTS=${CALLGRIND_OPTS:-}
SYSCALLS=${SYSCALLS:-auto}
PERF_REPEAT=${PERF_REPEAT:-3}
LOAD_SECS=${LOAD_SECS:-5}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PERF_DIR/.." && pwd)
BUDGET_DIR="$PERF_DIR/budget"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
HEADWATER_BIN=${HEADWATER_BIN:-"$ROOT/target/release/headwater"}

UPSTREAM_PORT=18960
HEADWATER_PORT=18961
NGINX_PORT=18962
declare -A PORT=([headwater]=$HEADWATER_PORT [nginx]=$NGINX_PORT)

# ---------------------------------------------------------------- prerequisites
[[ $N =~ ^[1-9][0-9]*$ && $CONNS =~ ^[1-9][0-9]*$ && $PERF_REPEAT =~ ^[1-9][0-9]*$ &&
    $LOAD_SECS =~ ^[1-9][0-9]*$ ]] || {
    echo "N, CONNS, PERF_REPEAT and LOAD_SECS must be positive integers" >&2
    exit 1
}
for p in $PROXIES; do
    [[ $p == headwater || $p == nginx ]] || { echo "PROXIES: unknown proxy '$p'" >&2; exit 1; }
done
for d in $DRIVERS $CALLGRIND_DRIVERS; do
    [[ $d == epoll || $d == io_uring ]] || { echo "DRIVERS: '$d' is neither epoll nor io_uring" >&2; exit 1; }
done
if [[ $CALLGRIND != 0 ]]; then require_packages valgrind nginx; else require_packages nginx; fi
require_cmds python3 curl taskset awk

# Whether an optional tool is to be used: 0/1 as asked, or for auto whether CHECK succeeds.
want_tool() { # setting name package check...
    local setting=$1 name=$2 package=$3
    shift 3
    case $setting in
        0) return 1 ;;
        1 | auto)
            if "$@" >/dev/null 2>&1; then return 0; fi
            if [[ $setting == 1 ]]; then
                echo "$name does not work here (checked with: $*); install it with:  apt-get install -y $package" >&2
                exit 1
            fi
            echo "note: $name does not work here (checked with: $*); its rows are skipped" >&2
            return 1
            ;;
        *) echo "$name: the setting must be 0, 1 or auto, not '$setting'" >&2; exit 1 ;;
    esac
}
# perf is there and the VM exposes the instructions counter (else perf prints "<not supported>").
perf_counts() { perf stat -x, -e instructions:u true 2>&1 >/dev/null | grep -q '^[0-9][0-9]*,'; }
USE_PERF=0
if want_tool "$PERF_STAT" "perf stat -e instructions:u" linux-perf perf_counts; then USE_PERF=1; fi
SYSCALL_TOOL=
case $SYSCALLS in
    0) ;;
    perf-trace)
        want_tool 1 "perf trace -s" linux-perf perf trace -s -o /dev/null -- true
        SYSCALL_TOOL=trace
        ;;
    strace)
        want_tool 1 "strace" strace strace -f -c -o /dev/null true
        SYSCALL_TOOL=strace
        ;;
    auto)
        if perf trace -s -o /dev/null -- true >/dev/null 2>&1; then
            SYSCALL_TOOL=trace
        elif strace -f -c -o /dev/null true >/dev/null 2>&1; then
            SYSCALL_TOOL=strace
        else
            echo "note: neither perf trace nor strace works here; no system call counts" >&2
        fi
        ;;
    *) echo "SYSCALLS must be auto, perf-trace, strace or 0, not '$SYSCALLS'" >&2; exit 1 ;;
esac

if [[ " $PROXIES " == *" headwater "* ]]; then
    build_headwater
    [[ -x "$HEADWATER_BIN" ]] || { echo "no $HEADWATER_BIN (build it, or set HEADWATER_BIN)" >&2; exit 1; }
fi

# ---------------------------------------------------------------- setup
make_tmp_with_traps budget
mkdir -p "$TMP/tmp" "$TMP/out"
if [[ " $PROXIES " == *" headwater "* ]]; then
    cp "$HEADWATER_BIN" "$TMP/headwater"
    # shellcheck disable=SC2086 # lists of words
    for d in $(printf '%s\n' $DRIVERS $CALLGRIND_DRIVERS | sort -u); do
        awk -v d="$d" '{ print } /^backlog = / { print "io_driver = \"" d "\"" }' \
            "$BUDGET_DIR/headwater.toml" >"$TMP/headwater-$d.toml"
        "$TMP/headwater" check -c "$TMP/headwater-$d.toml" >/dev/null
    done
fi

start_nginx "$LOAD_CORE" "$TMP/" "$BUDGET_DIR/upstream.conf" "$TMP/upstream.log"
PIDS+=($!)

# Waits until PORT answers GET /budget with 200 (up to 120 s: valgrind starts slowly), or the
# process PID has exited (then shows the end of its log and exits 1).
wait_ready() { wait_url "http://127.0.0.1:$1/budget" "the process serving port $1" "$3" "$2" 120; } # port pid log
wait_ready $UPSTREAM_PORT "${PIDS[0]}" "$TMP/upstream.log"

# Sets CMD to the proxy's command line (what follows the counting tool's).
set_cmd() { # proxy driver
    case $1 in
        headwater) CMD=("$TMP/headwater" run -c "$TMP/headwater-$2.toml") ;;
        nginx) CMD=(nginx -p "$TMP/" -e stderr -c "$BUDGET_DIR/nginx-proxy.conf" -g 'daemon off;') ;;
    esac
}

# Sets PROXY_PID to the pid of the proxy started as TOOL_PID: the tool itself for valgrind (it
# becomes the program), its only child for perf and strace.
set_proxy_pid() { # tool_pid tool
    local i
    PROXY_PID=$1
    [[ $2 == callgrind ]] && return
    for i in $(seq 100); do
        PROXY_PID=$(pgrep -P "$1" | head -1 || true)
        [[ -n $PROXY_PID ]] && return
        sleep 0.05
    done
    echo "no child process under $2 (pid $1)" >&2
    exit 1
}

# Stops the proxy PID (SIGTERM) and waits for TOOL_PID to exit (up to 180 s). Under valgrind an
# io_uring shard only wakes when I/O completes, so then a connection is opened every 2 s.
stop_proxy() { # tool_pid proxy_pid port poke
    local i
    kill -TERM "$2" 2>/dev/null || true
    for i in $(seq 1800); do
        kill -0 "$1" 2>/dev/null || break
        if [[ $4 == 1 ]] && ((i % 20 == 0)); then
            curl -s -m 1 -o /dev/null "http://127.0.0.1:$3/budget" || true
        fi
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "pid $1 did not exit within 180 s of SIGTERM; killing it" >&2
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
        exit 1
    fi
    wait "$1" 2>/dev/null || true
}

# One measured run: starts PROXY (driver DRIVER) under TOOL, sends REQUESTS requests through it,
# stays up until LOADED seconds (default 0) have passed since the client started, stops it.
# Sets LOADED_SECS to how long the client ran (or LOADED, if longer), and COUNT to the tool's
# count: instructions (callgrind, perf) or the path of the system call summary (trace, strace).
# (Globals, not output: a command substitution would run it in a subshell, whose background
# processes the exit trap would not know.)
measure() { # tool proxy driver requests [loaded]
    local tool=$1 proxy=$2 driver=$3 n=$4 loaded=${5:-0} tag out log tool_pid poke=0 t0 rest
    tag="$proxy-$driver-$n"
    log="$TMP/out/$tag.$tool.log"
    set_cmd "$proxy" "$driver"
    case $tool in
        callgrind)
            out="$TMP/out/$tag.cg"
            # shellcheck disable=SC2086 # CALLGRIND_OPTS is a list of options
            taskset -c "$PROXY_CORE" valgrind --tool=callgrind --trace-children=no $CALLGRIND_OPTS \
                --callgrind-out-file="$out" "${CMD[@]}" 2>"$log" &
            [[ $driver == io_uring ]] && poke=1
            ;;
        perf)
            out="$TMP/out/$tag.perf"
            taskset -c "$PROXY_CORE" perf stat -x, -e instructions:u -o "$out" -- \
                "${CMD[@]}" 2>"$log" &
            ;;
        trace)
            out="$TMP/out/$tag.trace"
            taskset -c "$PROXY_CORE" perf trace -s -o "$out" -- "${CMD[@]}" 2>"$log" &
            ;;
        strace)
            out="$TMP/out/$tag.strace"
            taskset -c "$PROXY_CORE" strace -f -c -o "$out" -- "${CMD[@]}" 2>"$log" &
            ;;
    esac
    tool_pid=$!
    PIDS+=("$tool_pid")
    set_proxy_pid "$tool_pid" "$tool"
    wait_ready "${PORT[$proxy]}" "$tool_pid" "$log"
    t0=$(date +%s.%N)
    if ! taskset -c "$LOAD_CORE" python3 "$BUDGET_DIR/client.py" "${PORT[$proxy]}" "$n" \
        --conns "${MEASURE_CONNS:-$CONNS}" >"$TMP/out/$tag.client" 2>&1; then
        echo "the client failed against $proxy ($driver, under $tool):" >&2
        cat "$TMP/out/$tag.client" >&2
        exit 1
    fi
    LOADED_SECS=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.3f", t1 - t0 }')
    rest=$(awk -v l="$loaded" -v d="$LOADED_SECS" 'BEGIN { printf "%.3f", (l > d ? l - d : 0) }')
    if [[ $rest != 0.000 ]]; then
        sleep "$rest"
        LOADED_SECS=$loaded
    fi
    stop_proxy "$tool_pid" "$PROXY_PID" "${PORT[$proxy]}" "$poke"
    if [[ -n "${KEEP:-}" ]]; then
        mkdir -p "$KEEP"
        cp "$out" "$KEEP/"
    fi
    case $tool in
        callgrind)
            COUNT=$(awk '/^totals:/ { print $2; found = 1 } END { exit !found }' "$out") || {
                echo "no totals in $out; log:" >&2
                cat "$log" >&2
                exit 1
            }
            ;;
        perf)
            COUNT=$(awk -F, '$3 ~ /^instructions/ && $1 ~ /^[0-9]+$/ { print $1; found = 1 } END { exit !found }' "$out") || {
                echo "no instruction count in $out:" >&2
                cat "$out" >&2
                exit 1
            }
            ;;
        trace | strace) COUNT=$out ;;
    esac
}

# Sets PER_REQUEST to (count(2N) - count(N)) / N for TOOL and PROXY/DRIVER.
#
# Work that depends on time, not on requests (Headwater's shard wakes every 100 ms to flush its
# log and check for drain, its accept loop every 250 ms, its health thread on its own timer:
# about 115k instructions per second under valgrind), must cancel out too, so both runs stay
# up equally long: the 2N run goes first, and the N run idles after its requests until it has
# been up as long. (Without that, the 2N run's extra seconds, times 115k, divided by N, would
# count as request costs.)
per_request() { # tool proxy driver
    local b
    measure "$1" "$2" "$3" $((2 * N))
    b=$COUNT
    measure "$1" "$2" "$3" "$N" "$LOADED_SECS"
    PER_REQUEST=$(awk -v a="$COUNT" -v b="$b" -v n="$N" 'BEGIN { printf "%.0f\n", (b - a) / n }')
}

# ---------------------------------------------------------------- measuring
echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:   $(machine_summary)"
[[ $CALLGRIND != 0 ]] && echo "valgrind:  $(valgrind --version)${CALLGRIND_OPTS:+ ($CALLGRIND_OPTS)}"
echo "nginx:     $(nginx_version)"
if [[ " $PROXIES " == *" headwater "* ]]; then
    # the commit of the checkout the binary lies in ("-dirty": with uncommitted changes)
    commit=$(git -C "$(dirname "$HEADWATER_BIN")" describe --always --dirty --abbrev=7 2>/dev/null || echo "commit unknown")
    echo "headwater: $HEADWATER_BIN ($commit)"
fi
echo "workload:  N=$N and 2N=$((2 * N)) keep-alive GETs on $CONNS connections, 128-byte body from an upstream nginx"
warn_other_load
echo

ROWS=()   # "method proxy driver value"
rows_for() { # proxy [drivers] -> "driver ..." it runs with
    if [[ $1 == nginx ]]; then echo epoll; else echo "${2:-$DRIVERS}"; fi
}
if [[ $CALLGRIND != 0 ]]; then
    for proxy in $PROXIES; do
        for driver in $(rows_for "$proxy" "$CALLGRIND_DRIVERS"); do
            echo "callgrind: $proxy ($driver) ..." >&2
            per_request callgrind "$proxy" "$driver"
            ROWS+=("callgrind $proxy $driver $PER_REQUEST")
        done
    done
fi
if ((USE_PERF)); then
    for proxy in $PROXIES; do
        for driver in $(rows_for "$proxy"); do
            echo "perf stat: $proxy ($driver) x $PERF_REPEAT ..." >&2
            values="$TMP/out/perf-$proxy-$driver.values"
            : >"$values"
            for _ in $(seq "$PERF_REPEAT"); do
                per_request perf "$proxy" "$driver"
                echo "$PER_REQUEST" >>"$values"
            done
            ROWS+=("perf $proxy $driver $(printf '%.0f' "$(median <"$values")")")
        done
    done
fi

# ---------------------------------------------------------------- table
nginx_value() { # method
    local r
    for r in "${ROWS[@]}"; do
        read -r m p _ v <<<"$r"
        if [[ $m == "$1" && $p == nginx ]]; then echo "$v"; return; fi
    done
}
echo "| method | proxy | driver | instructions / request | Headwater / nginx |"
echo "|---|---|---|---:|---:|"
for r in "${ROWS[@]}"; do
    read -r m p d v <<<"$r"
    label=$p
    [[ $m == callgrind && $p == headwater && $d == io_uring ]] && label="headwater (see note)"
    ref=$(nginx_value "$m")
    if [[ $p == headwater && -n $ref ]]; then
        ratio=$(awk -v a="$v" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')
    else
        ratio="-"
    fi
    method=$m
    [[ $m == perf ]] && method="perf stat instructions:u (median of $PERF_REPEAT)"
    [[ $m == callgrind ]] && method="callgrind Ir"
    printf '| %s | %s | %s | %s | %s |\n' "$method" "$label" "$d" "$v" "$ratio"
done
if ((USE_PERF)); then
    echo
    for proxy in $PROXIES; do
        for driver in $(rows_for "$proxy"); do
            echo "perf stat runs, $proxy ($driver): $(tr '\n' ' ' <"$TMP/out/perf-$proxy-$driver.values")"
        done
    done
fi
echo
echo "Target (issue #5): Headwater <= 0.8 x nginx's instructions per proxied request."
if [[ $CALLGRIND != 0 && " $CALLGRIND_DRIVERS " == *" io_uring "* && " $PROXIES " == *" headwater "* ]]; then
    echo "Note: under valgrind 3.19 io_uring's timed waits do not time out and its callgrind count"
    echo "varies by up to 10 % between runs; perf stat is the reference for io_uring (see the header)."
fi

# ---------------------------------------------------------------- system calls
# "name calls errors" per system call, summed over all threads, from a perf trace -s or
# strace -c summary.
syscall_counts() { # tool file
    if [[ $1 == trace ]]; then
        # per thread: "   name   calls  errors  total  min  avg  max  stddev"
        awk 'NF == 8 && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { c[$1] += $2; e[$1] += $3 }
             END { for (s in c) print s, c[s], e[s] }' "$2"
    else
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        awk '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { c[$NF] += $4; if (NF == 6) e[$NF] += $5 }
             END { for (s in c) print s, c[s], e[s] + 0 }' "$2"
    fi
}

# Prints the table row "| proxy | driver | regime | total | by name |" for per-request counts:
# (calls(B) - calls(A)) / N, from two "name calls errors" files.
syscall_row() { # proxy driver regime a b n
    awk -v n="$6" -v head="| $1 | $2 | $3 |" '
        FILENAME == ARGV[1] { ca[$1] = $2; ea[$1] = $3; seen[$1] = 1; next }
        { cb[$1] = $2; eb[$1] = $3; seen[$1] = 1 }
        END {
            for (s in seen) {
                d = (cb[s] - ca[s]) / n
                if (d >= 0.005 || d <= -0.005) { per[s] = d; err[s] = (eb[s] - ea[s]) / n; total += d }
            }
            out = ""
            while (1) {
                best = ""
                for (s in per) if (best == "" || per[s] > per[best]) best = s
                if (best == "") break
                e = err[best] >= 0.005 ? sprintf(" (%.2f)", err[best]) : ""
                out = out sprintf("%s%s %.2f%s", out == "" ? "" : ", ", best, per[best], e)
                delete per[best]
            }
            printf "%s %.2f | %s |\n", head, total, out
        }' "$4" "$5"
}

# Under load: the proxy (no tool around it) serves wrk -t1 -c64 for LOAD_SECS seconds while
# the syscall tool is attached to it; per request = calls / wrk's request count.
syscalls_loaded() { # proxy driver
    local proxy=$1 driver=$2 pid tracer out="$TMP/out/$1-$2-loaded.$SYSCALL_TOOL" reqs
    set_cmd "$proxy" "$driver"
    taskset -c "$PROXY_CORE" "${CMD[@]}" 2>"$TMP/out/$proxy-$driver-loaded.log" &
    pid=$!
    PIDS+=("$pid")
    wait_ready "${PORT[$proxy]}" "$pid" "$TMP/out/$proxy-$driver-loaded.log"
    taskset -c "$LOAD_CORE" wrk -t1 -c64 -d1s "http://127.0.0.1:${PORT[$proxy]}/budget" >/dev/null 2>&1 || true
    if [[ $SYSCALL_TOOL == trace ]]; then
        perf trace -s -p "$pid" -o "$out" 2>/dev/null &
    else
        strace -f -c -p "$pid" -o "$out" 2>/dev/null &
    fi
    tracer=$!
    PIDS+=("$tracer")
    sleep 1 # attached (both tools print nothing when they are; 1 s is plenty here)
    taskset -c "$LOAD_CORE" wrk -t1 -c64 -d"${LOAD_SECS}s" "http://127.0.0.1:${PORT[$proxy]}/budget" \
        >"$TMP/out/$proxy-$driver-loaded.wrk" 2>&1
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    stop_proxy "$pid" "$pid" "${PORT[$proxy]}" 0
    reqs=$(awk '/requests in/ { print $1 }' "$TMP/out/$proxy-$driver-loaded.wrk")
    if grep -q "Non-2xx" "$TMP/out/$proxy-$driver-loaded.wrk" || [[ -z $reqs ]]; then
        echo "wrk against $proxy ($driver) did not get only 2xx answers:" >&2
        cat "$TMP/out/$proxy-$driver-loaded.wrk" >&2
        exit 1
    fi
    [[ -n "${KEEP:-}" ]] && cp "$out" "$KEEP/"
    : >"$TMP/out/sys-none"
    syscall_counts "$SYSCALL_TOOL" "$out" >"$TMP/out/sys-loaded"
    syscall_row "$proxy" "$driver" "wrk -c64, $reqs requests" "$TMP/out/sys-none" "$TMP/out/sys-loaded" "$reqs"
}

if [[ -n $SYSCALL_TOOL ]]; then
    echo
    if [[ $SYSCALL_TOOL == trace ]]; then
        echo "System calls per request (perf trace -s; all threads), in two regimes:"
    else
        echo "System calls per request (strace -f -c; all threads), in two regimes:"
    fi
    echo "- serial: client.py on ONE connection, so every step of every request waits for its"
    echo "  peer (no batching); (calls(2N) - calls(N)) / N;"
    echo "- loaded: wrk -t1 -c64 for ${LOAD_SECS} s, the tool attached to the running proxy; calls / requests."
    echo "\"(x)\": how many of those calls failed (EAGAIN: a read that found no data yet)."
    [[ $SYSCALL_TOOL == strace ]] && echo "strace stops the proxy on every call, which changes the timing (more EAGAIN)."
    echo
    echo "| proxy | driver | regime | syscalls / request | by name: calls (failed) per request |"
    echo "|---|---|---|---:|---|"
    for proxy in $PROXIES; do
        for driver in $(rows_for "$proxy"); do
            echo "$SYSCALL_TOOL: $proxy ($driver), serial ..." >&2
            MEASURE_CONNS=1
            measure "$SYSCALL_TOOL" "$proxy" "$driver" $((2 * N))
            syscall_counts "$SYSCALL_TOOL" "$COUNT" >"$TMP/out/sys-b"
            measure "$SYSCALL_TOOL" "$proxy" "$driver" "$N" "$LOADED_SECS"
            syscall_counts "$SYSCALL_TOOL" "$COUNT" >"$TMP/out/sys-a"
            unset MEASURE_CONNS
            syscall_row "$proxy" "$driver" "serial" "$TMP/out/sys-a" "$TMP/out/sys-b" "$N"
            if command -v wrk >/dev/null 2>&1; then
                echo "$SYSCALL_TOOL: $proxy ($driver), under load ..." >&2
                syscalls_loaded "$proxy" "$driver"
            fi
        done
    done
    command -v wrk >/dev/null 2>&1 || echo "(no wrk: the loaded regime is skipped; apt-get install -y wrk)"
fi
