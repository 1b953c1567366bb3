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
