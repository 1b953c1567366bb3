# shellcheck shell=bash
# Shared by bench/run.sh, bench/idle_conns.sh and bench/chaos.sh, which source it from their own
# directory (after setting BENCH_DIR and ROOT):
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

# Waits (10 s at most) until http://127.0.0.1:PORT/100b answers 200; exits 1 if it does not.
wait_port() { # port name
    for _ in $(seq 100); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/100b") == 200 ]]; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not answer 200 on port $1" >&2
    exit 1
}

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

# ---------------------------------------------------------------- added for bench/suite.sh

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

# Waits (10 s at most) until URL answers 200; exits 1 if it does not, showing the end of LOG.
wait_url() { # url name [log]
    for _ in $(seq 100); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") == 200 ]]; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not answer 200 on $1" >&2
    if [[ -n "${3:-}" && -s "$3" ]]; then tail -5 "$3" | sed 's/^/  /' >&2; fi
    exit 1
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
