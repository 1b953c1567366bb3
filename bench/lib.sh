# shellcheck shell=bash
# Shared by bench/run.sh and bench/chaos.sh, which source it from their own directory:
#
#   source "$BENCH_DIR/lib.sh"
#
# Only definitions: sourcing it runs nothing.

# Exits (status 1) with an install hint if wrk or nginx is not on PATH.
require_wrk_nginx() {
    local missing=() cmd
    for cmd in wrk nginx; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        echo "missing: ${missing[*]}" >&2
        echo "install them with:  apt-get install -y wrk nginx" >&2
        exit 1
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
