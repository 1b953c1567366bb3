#!/usr/bin/env bash
# Chaos benchmark: Headwater vs nginx while upstreams die, stall, fail, reset and flap.
#
#   bench/chaos.sh                               # every scenario, 15 s each, per proxy (~4 min)
#   DURATION=3 SCENARIOS=kill bench/chaos.sh     # smoke test
#
# Needs the Debian packages wrk and nginx (plus curl, taskset from util-linux, awk, cargo):
#   apt-get install -y wrk nginx
#
# Layout (2 cores): core 0 runs the proxy under test (Headwater with one shard, or nginx with one
# worker); core 1 runs wrk (1 thread, CONNS connections) and the three upstreams, each a
# `headwater upstream` process on 127.0.0.1:19101-19103 named u1, u2, u3 (every response carries
# `x-upstream: uN`). Everything listens on 127.0.0.1 only; every wrk run is bounded by DURATION;
# everything started here is stopped on exit.
#
# Each run starts fresh upstreams and a fresh proxy, waits until the proxy serves (Headwater: all
# endpoints healthy), runs wrk with bench/chaos/timeline.lua (responses counted per 100 ms bucket,
# status and upstream), injects the scenario's fault FAULT_AT seconds in and undoes it FAULT_FOR
# seconds later:
#
#   kill     u1 is killed (SIGKILL), then started again
#   stall    u1 stops answering (reads requests, never responds), then answers again
#   500s     u1 answers every request with 500, then 200 again
#   reset    u1 resets every connection once a request head arrives, then answers again
#   flap     u1 is killed and restarted every FLAP_PERIOD (0.5 s) for FAULT_FOR, then stays up
#   alldown  u1, u2 and u3 are killed, then started again
#   backup   path /backup: u1 and u2 are the primary level, u3 the backup (Headwater priority 1,
#            nginx `backup`); u1 and u2 are killed, then started again
#
# stall, 500s and reset switch u1's behavior in place (`headwater upstream --fault B`, SIGUSR1 /
# SIGUSR2): the listener and the proxies' pooled connections stay, as when a live process
# degrades. Configs: bench/chaos/headwater.toml and bench/chaos/nginx.conf.
#
# Per run it prints: wrk's requests, non-2xx responses and socket errors; success % (2xx out of
# requests + socket errors); p99 and max latency; detect = from the fault to the end of the last
# 100 ms bucket with a non-2xx response before the restore ("none": no failed response at all;
# ">=N": failures until the restore); recover = from the restore to the end of the first bucket in
# which the restored upstream(s) served a 2xx again through the proxy ("never": not before wrk
# stopped); degraded = time after the fault in buckets whose 2xx count fell below half the
# pre-fault median; after = non-2xx responses after the restore.
#
# Environment:
#   SCENARIOS="kill stall 500s reset flap alldown backup"
#   PROXIES="headwater nginx"   in this order
#   DURATION=15      seconds of load per run (whole seconds)
#   FAULT_AT=5       seconds into the run when the fault starts (default: min(5, DURATION/3))
#   FAULT_FOR=3      seconds until it is undone (default: min(3, (DURATION-FAULT_AT)/2))
#   FLAP_PERIOD=0.5  flap: seconds down, then seconds up, repeated
#   CONNS=32         wrk connections (1 thread)
#   WRK_TIMEOUT=2s   wrk's per-request timeout
#   RUNS=1           rounds (each round runs every scenario with every proxy)
#   BUCKET_MS=100    timeline resolution
#   PROXY_CORE=0 LOAD_CORE=1
#   NO_BUILD=1       skip `cargo build --release -p headwater-engine`
#   HEADWATER_BIN=P  use this headwater binary (proxy and upstreams) instead of target/release/headwater
#   HEADWATER_CONFIG=F / NGINX_CONFIG=F   other configs (same ports and paths)
#   KEEP_RAW=DIR     keep every raw wrk output (with its timeline) and the event times in DIR
#   VERBOSE=1        also print a per-second timeline of every run

set -Eeuo pipefail
trap 'echo "chaos.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
CHAOS_DIR="$BENCH_DIR/chaos"

ALL_SCENARIOS="kill stall 500s reset flap alldown backup"
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
PROXIES=${PROXIES:-"headwater nginx"}
DURATION=${DURATION:-15}
DURATION=${DURATION%s}
FLAP_PERIOD=${FLAP_PERIOD:-0.5}
CONNS=${CONNS:-32}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
RUNS=${RUNS:-1}
BUCKET_MS=${BUCKET_MS:-100}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
HEADWATER_BIN=${HEADWATER_BIN:-"$ROOT/target/release/headwater"}
HEADWATER_CONFIG=${HEADWATER_CONFIG:-"$CHAOS_DIR/headwater.toml"}
NGINX_CONFIG=${NGINX_CONFIG:-"$CHAOS_DIR/nginx.conf"}

UPSTREAM_PORTS=(19101 19102 19103)
HEADWATER_PORT=19110
NGINX_PORT=19111
HEADWATER_ADMIN=19119
declare -A PORT=([headwater]=$HEADWATER_PORT [nginx]=$NGINX_PORT)

die() { echo "chaos.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- settings
[[ $DURATION =~ ^[0-9]+$ ]] && ((DURATION >= 3)) || die "DURATION must be whole seconds, at least 3 (got '$DURATION')"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
[[ $BUCKET_MS =~ ^[1-9][0-9]*$ ]] || die "BUCKET_MS must be a positive integer (got '$BUCKET_MS')"
for s in $SCENARIOS; do
    [[ " $ALL_SCENARIOS " == *" $s "* ]] || die "unknown scenario '$s' (known: $ALL_SCENARIOS)"
done
for p in $PROXIES; do
    [[ $p == headwater || $p == nginx ]] || die "unknown proxy '$p' (known: headwater nginx)"
done
FAULT_AT=${FAULT_AT:-$(awk -v d="$DURATION" 'BEGIN { x = d / 3; if (x > 5) x = 5; print x }')}
FAULT_FOR=${FAULT_FOR:-$(awk -v d="$DURATION" -v a="$FAULT_AT" 'BEGIN { x = (d - a) / 2; if (x > 3) x = 3; print x }')}
awk -v d="$DURATION" -v a="$FAULT_AT" -v f="$FAULT_FOR" -v p="$FLAP_PERIOD" \
    'BEGIN { exit !(a > 0 && f > 0 && p > 0 && a + f < d) }' ||
    die "need FAULT_AT > 0, FAULT_FOR > 0, FLAP_PERIOD > 0 and FAULT_AT + FAULT_FOR < DURATION (got $FAULT_AT, $FAULT_FOR, $FLAP_PERIOD, $DURATION)"
to_ms() { awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }'; }
FAULT_AT_MS=$(to_ms "$FAULT_AT")
FAULT_FOR_MS=$(to_ms "$FAULT_FOR")

# ---------------------------------------------------------------- prerequisites
require_packages wrk nginx
require_cmds curl taskset awk sort date
warn_few_cores
for p in "${UPSTREAM_PORTS[@]}" $HEADWATER_PORT $NGINX_PORT $HEADWATER_ADMIN; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p on 127.0.0.1 is already in use (another chaos run?)"
    fi
done

build_headwater
[[ -x "$HEADWATER_BIN" ]] || die "no $HEADWATER_BIN"
"$HEADWATER_BIN" upstream --help >/dev/null 2>&1 ||
    die "$HEADWATER_BIN has no 'upstream' subcommand; rebuild it"
"$HEADWATER_BIN" check -c "$HEADWATER_CONFIG" >/dev/null

# ---------------------------------------------------------------- processes
TMP=$(mktemp -d /tmp/headwater-chaos.XXXXXX)
PIDS=()               # long-lived helpers of the current run (proxy, wrk)
declare -A UP_PID=()  # upstream index (1..3) -> pid, while it runs
cleanup() {
    stop_pids "${UP_PID[@]}" "${PIDS[@]}"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "$(basename "$0"): stopped by a signal" >&2; exit 130' INT TERM HUP

chmod 755 "$TMP" # nginx workers run as nobody when started by root
mkdir -p "$TMP/nginx/tmp" "$TMP/raw"
cp "$HEADWATER_BIN" "$TMP/headwater" # a concurrent rebuild must not swap the binary under test
HW="$TMP/headwater"

now_ms() { date +%s%3N; }
sleep_until() { # epoch ms
    local d
    d=$(($1 - $(now_ms)))
    if ((d > 0)); then sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"; fi
    return 0
}

# upstream i (1..3) with an optional in-place fault behavior (SIGUSR1 on, SIGUSR2 off)
start_upstream() { # i [fault]
    local i=$1 fault=${2:-}
    local args=(upstream --listen "127.0.0.1:${UPSTREAM_PORTS[$((i - 1))]}" --behavior fixed --name "u$i")
    [[ -n $fault ]] && args+=(--fault "$fault")
    taskset -c "$LOAD_CORE" "$HW" "${args[@]}" 2>>"$TMP/upstreams.log" &
    UP_PID[$i]=$!
}
kill_upstream() { # i: SIGKILL, as a crash
    local pid=${UP_PID[$1]:-}
    [[ -n $pid ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "UP_PID[$1]"
}
signal_upstream() { # i signal
    kill -"$2" "${UP_PID[$1]}"
}
stop_upstreams() {
    stop_pids "${UP_PID[@]}"
    UP_PID=()
}

start_proxy() { # proxy
    case $1 in
    headwater)
        taskset -c "$PROXY_CORE" "$HW" run -c "$HEADWATER_CONFIG" 2>>"$TMP/headwater.log" &
        PROXY_PID=$!
        PIDS+=("$PROXY_PID")
        wait_url "http://127.0.0.1:$HEADWATER_ADMIN/healthz" "headwater admin" "$TMP/headwater.log" "$PROXY_PID" 5
        # until every endpoint of both clusters is healthy (not just "unknown, tried anyway")
        local healthy=0
        for _ in $(seq 100); do
            healthy=$(curl -s -m 1 "http://127.0.0.1:$HEADWATER_ADMIN/status" | grep -o '"state": *"healthy"' | wc -l || true)
            ((healthy >= 6)) && break
            sleep 0.05
        done
        ((healthy >= 6)) || die "headwater: endpoints not healthy after 5 s (logs in $TMP)"
        ;;
    nginx)
        start_nginx "$PROXY_CORE" "$TMP/nginx/" "$NGINX_CONFIG" "$TMP/nginx.log"
        PROXY_PID=$!
        PIDS+=("$PROXY_PID")
        ;;
    esac
    wait_url "http://127.0.0.1:${PORT[$1]}/" "$1" "$TMP/$1.log" "$PROXY_PID" 5
    wait_url "http://127.0.0.1:${PORT[$1]}/backup" "$1" "$TMP/$1.log" "$PROXY_PID" 5
}
stop_proxy() {
    stop_pids "$PROXY_PID"
    PIDS=()
}

# ---------------------------------------------------------------- one run
# Prints the analysis line (see analyze) and, with VERBOSE, the per-second timeline.
run_one() { # scenario proxy round
    local scenario=$1 proxy=$2 round=$3
    local fault="" path=/ restored="^u1$"
    case $scenario in
    stall) fault=stall ;;
    500s) fault=status:500 ;;
    reset) fault=reset ;;
    alldown) restored="^u[123]$" ;;
    backup) path=/backup restored="^u[12]$" ;;
    esac
    start_upstream 1 "$fault"
    start_upstream 2
    start_upstream 3
    local i
    for i in 1 2 3; do
        wait_url "http://127.0.0.1:${UPSTREAM_PORTS[$((i - 1))]}/" "upstream u$i" "$TMP/upstreams.log" "${UP_PID[$i]}" 5
    done
    start_proxy "$proxy"

    local raw="$TMP/raw/${scenario}_${proxy}_$round.txt"
    local t0 f r
    t0=$(now_ms)
    CHAOS_BUCKET_MS=$BUCKET_MS taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        --timeout "$WRK_TIMEOUT" --latency -s "$CHAOS_DIR/timeline.lua" \
        "http://127.0.0.1:${PORT[$proxy]}$path" >"$raw" 2>&1 &
    local wrk_pid=$!
    PIDS+=("$wrk_pid")

    sleep_until $((t0 + FAULT_AT_MS))
    f=$(now_ms)
    case $scenario in
    kill) kill_upstream 1 ;;
    stall | 500s | reset) signal_upstream 1 USR1 ;;
    alldown) kill_upstream 1; kill_upstream 2; kill_upstream 3 ;;
    backup) kill_upstream 1; kill_upstream 2 ;;
    flap)
        local next=$f
        while :; do
            kill_upstream 1
            next=$((next + $(to_ms "$FLAP_PERIOD")))
            sleep_until "$next"
            start_upstream 1
            next=$((next + $(to_ms "$FLAP_PERIOD")))
            ((next < f + FAULT_FOR_MS)) || break
            sleep_until "$next"
        done
        ;;
    esac

    if [[ $scenario != flap ]]; then
        sleep_until $((f + FAULT_FOR_MS))
        case $scenario in
        kill) start_upstream 1 ;;
        stall | 500s | reset) signal_upstream 1 USR2 ;;
        alldown) start_upstream 1; start_upstream 2; start_upstream 3 ;;
        backup) start_upstream 1; start_upstream 2 ;;
        esac
    fi
    r=$(now_ms) # flap: the last restart

    wait "$wrk_pid" || true
    stop_proxy
    stop_upstreams
    echo "t0=$t0 fault=$f restore=$r end=$((t0 + DURATION * 1000))" >"$raw.events"
    analyze "$raw" "$t0" "$f" "$r" "$restored"
}

# wrk output with timeline -> "requests non2xx sockerr success% p99_ms max_ms detect recover
# degraded_ms after_errors", then (VERBOSE) timeline lines starting with "  ".
# Times are handled relative to t0 and buckets relative to t0's bucket: mawk turns integers
# beyond 2^31 into "%.6g" strings when they are used as array keys.
analyze() { # raw t0 fault restore restored-regex
    awk -v T0="$2" -v F="$(($3 - $2))" -v R="$(($4 - $2))" -v RESTORED="$5" \
        -v TEND="$((DURATION * 1000))" -v VERBOSE="${VERBOSE:-}" "$AWK_WRK_MS"'
    function bucket(t) { return int((t + off) / B) }  # bucket of a time relative to t0
    function end_of(b) { return (b + 1) * B - off }     # end of a bucket, relative to t0
    /^TIMELINE/ {
        split($2, kv, "="); B = kv[2] + 0
        t0b = int(T0 / B); off = T0 - t0b * B
        next
    }
    /^B / {
        b = $2 - t0b; st = $3 + 0; n = $5 + 0
        if (st >= 200 && st < 300) { ok[b] += n; if ($4 ~ RESTORED) rok[b] += n }
        else { bad[b] += n; status[st] += n }
        if (maxb == "" || b > maxb) maxb = b
        if (minb == "" || b < minb) minb = b
        next
    }
    /requests in/ { reqs = $1 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); conn = $4; rd = $6; wr = $8; to = $10 }
    /^ +Latency +[0-9]/ { maxlat = ms($4) }
    /^ +99%/ { p99 = ms($2) }
    END {
        if (!B) { print "no-timeline"; exit }
        fb = bucket(F); rb = bucket(R); last = bucket(TEND) - 1 # last whole bucket
        # baseline: median 2xx per bucket over the second half of the time before the fault
        nb = 0
        for (b = bucket(F / 2) + 1; b < fb; b++) base[++nb] = ok[b] + 0
        med = 0
        if (nb) {
            for (i = 2; i <= nb; i++) {
                v = base[i]
                for (j = i - 1; j >= 1 && base[j] > v; j--) base[j + 1] = base[j]
                base[j + 1] = v
            }
            med = (nb % 2) ? base[(nb + 1) / 2] : (base[nb / 2] + base[nb / 2 + 1]) / 2
        }
        degraded = 0
        for (b = fb; b <= last; b++) if (ok[b] + 0 < med / 2) degraded += B
        # detect: end of the last bucket with a failed response between the fault and the restore
        lastbad = ""
        for (b = fb; b <= rb; b++) if (bad[b] > 0) lastbad = end_of(b)
        if (lastbad == "") detect = "none"
        else if (lastbad > R - B && rb > fb) detect = ">=" (R - F)
        else detect = lastbad - F
        # recover: end of the first bucket from the restore on with a 2xx from a restored upstream
        recover = "never"
        for (b = rb; b <= maxb; b++) if (rok[b] > 0) { recover = end_of(b) - R; break }
        after = 0
        for (b = rb + 1; b <= maxb; b++) after += bad[b]
        sockerr = conn + rd + wr + to
        attempts = reqs + conn + rd + wr
        success = attempts ? 100 * (reqs - non2xx - to) / attempts : 0
        statuses = ""
        for (st = 100; st < 1000; st++) if (st in status) statuses = statuses (statuses == "" ? "" : ",") st "x" status[st]
        if (statuses == "") statuses = "-"
        printf "%d %d %d %.3f %.2f %.1f %s %s %d %d %s\n", reqs, non2xx, sockerr, success, p99, maxlat,
            detect, recover, degraded, after, statuses
        if (VERBOSE == "") exit
        # per second, counted from the fault (a bucket counts in the second its end falls in)
        lo = 0; hi = 0
        for (b = minb; b <= maxb; b++) {
            k = end_of(b) - 1 - F; k = (k < 0) ? -int((-k + 999) / 1000) : int(k / 1000)
            so[k] += ok[b]; se[k] += bad[b]; sr[k] += rok[b]
            if (k < lo) lo = k
            if (k > hi) hi = k
        }
        for (k = lo; k <= hi; k++) {
            mark = ""
            if (k == 0) mark = " <- fault"
            if (R >= F + k * 1000 && R < F + (k + 1) * 1000) mark = mark sprintf(" <- restore at +%.1fs", (R - F) / 1000)
            printf "  fault%+3ds  2xx %7d  failed %6d  2xx from restored %7d%s\n", k, so[k], se[k], sr[k], mark
        }
    }' "$1"
}

# ---------------------------------------------------------------- main
SETTINGS="SCENARIOS=\"$SCENARIOS\" PROXIES=\"$PROXIES\" DURATION=$DURATION FAULT_AT=$FAULT_AT FAULT_FOR=$FAULT_FOR FLAP_PERIOD=$FLAP_PERIOD CONNS=$CONNS RUNS=$RUNS"
n_scen=$(wc -w <<<"$SCENARIOS")
n_prox=$(wc -w <<<"$PROXIES")
echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:   $(machine_summary), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx:     $(nginx_version)"
echo "wrk:       $(wrk_version)"
echo "headwater: $HEADWATER_BIN ($(date -u -r "$HEADWATER_BIN" +%Y-%m-%dT%H:%M:%SZ)), HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' + local changes')"
echo "layout:    proxy on core $PROXY_CORE; wrk -t1 -c$CONNS and upstreams u1-u3 (127.0.0.1:19101-19103) on core $LOAD_CORE"
echo "faults:    at ${FAULT_AT}s of each ${DURATION}s run, undone ${FAULT_FOR}s later (flap: every ${FLAP_PERIOD}s)"
echo "command:   $SETTINGS bench/chaos.sh"
echo "expect:    about $((RUNS * n_scen * n_prox * (DURATION + 2))) s"
echo

RESULTS="$TMP/results"
: >"$RESULTS"
for round in $(seq "$RUNS"); do
    for scenario in $SCENARIOS; do
        for proxy in $PROXIES; do
            run_one "$scenario" "$proxy" "$round" >"$TMP/analysis" # not in a subshell: it tracks pids
            read -r reqs non2xx sockerr success p99 maxlat detect recover degraded after statuses <"$TMP/analysis"
            [[ $reqs == no-timeline ]] && die "wrk printed no timeline for $scenario/$proxy: $(cat "$TMP/raw/${scenario}_${proxy}_$round.txt")"
            printf '%-8s %-9s run %d: requests %8d  non-2xx %6d  socket errors %5d  success %7.3f%%  p99 %8.2f ms  max %7.1f ms  detect %6s ms  recover %6s ms  degraded %5d ms  failed after restore %d  (%s)\n' \
                "$scenario" "$proxy" "$round" "$reqs" "$non2xx" "$sockerr" "$success" "$p99" "$maxlat" "$detect" "$recover" "$degraded" "$after" "$statuses"
            if [[ -n "${VERBOSE:-}" ]]; then tail -n +2 "$TMP/analysis"; fi
            echo "$scenario $proxy $round $reqs $non2xx $sockerr $success $p99 $maxlat $detect $recover $degraded $after $statuses" >>"$RESULTS"
        done
    done
done
if [[ -n "${KEEP_RAW:-}" ]]; then
    mkdir -p "$KEEP_RAW" && cp "$TMP"/raw/* "$KEEP_RAW"/
fi

# ---------------------------------------------------------------- table
echo
echo "Command: \`$SETTINGS bench/chaos.sh\`"
echo
echo "| scenario | proxy | run | requests | non-2xx | socket errors | success % | p99 (ms) | max (ms) | detect (ms) | recover (ms) | degraded (ms) | failed after restore | non-2xx by status |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
awk '{ printf "| %s | %s | %s | %d | %d | %d | %.3f | %.2f | %.1f | %s | %s | %d | %d | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 }' "$RESULTS"
echo
echo "detect: fault -> end of the last ${BUCKET_MS} ms bucket with a failed response before the restore"
echo "(none: no failed response; >=N: failures until the restore). recover: restore -> end of the first"
echo "bucket with a 2xx from the restored upstream(s) (an upper bound; never: not before the run ended)."
echo "degraded: time after the fault in buckets with fewer than half the pre-fault median of 2xx."
echo "success %: 2xx / (requests + socket errors). Failures are non-2xx responses plus socket errors;"
echo "only responses are in the timeline. non-2xx by status: 502x6 = six 502s (all, over the whole run)."
