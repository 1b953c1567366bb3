#!/usr/bin/env bash
# Instructions per request under load, user space AND kernel, for each row of bench/suite.sh:
# Headwater (io_uring and epoll), nginx and HAProxy, one worker each.
#
#   perf/loaded.sh                                  # every row, 3 rounds x 3 s
#   ROWS="ka128 ka160k" ROUNDS=5 perf/loaded.sh
#   NO_BUILD=1 HEADWATER_BIN=/path/headwater perf/loaded.sh
#
# Why: on this 2-core VM a wall-clock run lands in one of two speed modes about 2x apart (see
# bench/RESULTS.md), so req/s ratios need many alternating slices to mean anything. The number of
# instructions a proxy retires per request does not depend on the mode: repeated rounds agree to
# about 1 %. And on loopback most of a proxy's cost is in the kernel (TCP send and receive, and
# the receive path of the peer, which runs inside the sender's system call): 82-84 % of the
# proxy's CPU samples for all three proxies (perf record, `perf/README.md`), so user-space counts
# alone (perf/instructions.sh) say little about throughput. This script counts both.
#
# Method: the suite's configs and upstream (bench/suite/*). For each round, row and target in
# turn: wrk -t1 (pinned to LOAD_CORE, with the upstream) for DURATION seconds, and
# `perf stat -e instructions:u,instructions:k -p <the proxy's pids>` attached for exactly that
# run; the counts divided by wrk's request count. The proxy is idle before and after, so what
# perf sees outside wrk's run is negligible. A round whose kernel count reads (nearly) zero, as
# the VM's counter sometimes does, is dropped and reported. Medians over ROUNDS; the ratio columns are
# Headwater (io_uring, the default driver) over each other proxy, total instructions.
#
# Needs: linux-perf (perf stat with the instructions counter; checked first), wrk, nginx,
# haproxy (PROXIES without haproxy to skip it), taskset. Ports 18950-18954 (the suite's, and
# 18954 for Headwater on epoll): do not run it at the same time as bench/suite.sh.
#
# Environment:
#   ROWS="ka128 ka4k ka16k ka160k close c1 c1024 post16k chunked"
#   PROXIES="headwater headwater-epoll nginx haproxy"
#   ROUNDS=3  DURATION=3  (seconds per wrk run)
#   PROXY_CORE=0 LOAD_CORE=1
#   NO_BUILD=1  HEADWATER_BIN=P  KEEP=DIR (keep every wrk and perf output)

set -Eeuo pipefail
trap 'echo "loaded.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PERF_DIR/.." && pwd)
BENCH_DIR="$ROOT/bench"
SUITE_DIR="$BENCH_DIR/suite"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
# The command as given, for the report (only the settings that were set).
COMMAND=$(command_line perf/loaded.sh ROWS PROXIES ROUNDS DURATION PROXY_CORE LOAD_CORE NO_BUILD HEADWATER_BIN KEEP)

ROWS=${ROWS:-"ka128 ka4k ka16k ka160k close c1 c1024 post16k chunked"}
PROXIES=${PROXIES:-"headwater headwater-epoll nginx haproxy"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

HEADWATER_BIN=${HEADWATER_BIN:-"$ROOT/target/release/headwater"}
has() { [[ " $PROXIES " == *" $1 "* ]]; }

require_packages wrk nginx
has haproxy && require_packages haproxy
require_cmds perf taskset awk
perf stat -x, -e instructions:u,instructions:k true 2>&1 >/dev/null | grep -q '^[0-9][0-9]*,' ||
    { echo "perf stat cannot count instructions here (no PMU, or perf_event_paranoid)" >&2; exit 1; }
build_headwater

declare -A ROW_PATH=([ka128]=/128b [ka4k]=/4k [ka16k]=/16k [ka160k]=/160k [close]=/128b
    [c1]=/128b [c1024]=/128b [post16k]=/post [chunked]=/chunked/16k)
declare -A ROW_CONNS=([ka128]=64 [ka4k]=64 [ka16k]=64 [ka160k]=64 [close]=64 [c1]=1 [c1024]=1024
    [post16k]=64 [chunked]=64)
declare -A PORT=([headwater]=18951 [nginx]=18952 [haproxy]=18953 [headwater-epoll]=18954)

make_tmp_with_traps loaded
make_suite_files "$TMP"
mkdir -p "$TMP/out"
cp "$HEADWATER_BIN" "$TMP/headwater"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

declare -A PIDS_OF
# shellcheck disable=SC2086 # PROXIES is a list of words
start_suite $PROXIES
if has headwater-epoll; then
    sed -e "s/127.0.0.1:${PORT[headwater]}/127.0.0.1:${PORT[headwater-epoll]}/" \
        -e 's/^workers = 1$/workers = 1\nio_driver = "epoll"/' "$SUITE_DIR/headwater.toml" >"$TMP/epoll.toml"
    grep -q '^io_driver = "epoll"' "$TMP/epoll.toml" || { echo "could not make the epoll config" >&2; exit 1; }
    start_pinned "$PROXY_CORE" "$TMP/headwater-epoll.log" "$TMP/headwater" run -c "$TMP/epoll.toml"
    PIDS_OF[headwater-epoll]=$!
fi
wait_url "http://127.0.0.1:18950/128b" "upstream nginx" "$TMP/upstream.log"
for p in $PROXIES; do wait_url "http://127.0.0.1:${PORT[$p]}/128b" "$p" "$TMP/$p.log"; done
for p in "${!SUITE_PID[@]}"; do PIDS_OF[$p]=$(pid_tree "${SUITE_PID[$p]}"); done

echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:  $(machine_summary)"
echo "command:  $COMMAND"
echo "method:   perf stat -e instructions:u,instructions:k on the proxy during wrk -t1 (core $LOAD_CORE), / requests; medians of $ROUNDS x ${DURATION}s"
warn_other_load "during measurement"
echo

run_wrk() { # proxy row seconds outfile
    local row=$2 args=(-t1 -c"${ROW_CONNS[$2]}" -d"$3"s)
    [[ $row == close ]] && args+=(-H "Connection: close")
    if [[ $row == post16k ]]; then
        SUITE_POST_BYTES=16384 taskset -c "$LOAD_CORE" wrk "${args[@]}" -s "$SUITE_DIR/wrk.lua" \
            "http://127.0.0.1:${PORT[$1]}${ROW_PATH[$row]}" >"$4" 2>&1
    else
        taskset -c "$LOAD_CORE" wrk "${args[@]}" "http://127.0.0.1:${PORT[$1]}${ROW_PATH[$row]}" >"$4" 2>&1
    fi
}

RESULTS="$TMP/results"
: >"$RESULTS"
for row in $ROWS; do
    for p in $PROXIES; do run_wrk "$p" "$row" 1 "$TMP/out/warmup"; done
    for round in $(seq "$ROUNDS"); do
        for p in $PROXIES; do
            out="$TMP/out/$row-$p-$round"
            perf stat -x, -e instructions:u,instructions:k -p "$(echo "${PIDS_OF[$p]}" | tr ' ' ',')" \
                -o "$out.perf" &
            perf_pid=$!
            sleep 0.2
            run_wrk "$p" "$row" "$DURATION" "$out.wrk"
            kill -INT "$perf_pid"
            wait "$perf_pid" || true
            reqs=$(awk '/requests in/ { print $1 }' "$out.wrk")
            bad=$(awk '/Non-2xx/ { print $NF }' "$out.wrk")
            [[ -n $bad ]] && echo "warning: $p $row: $bad non-2xx responses" >&2
            # The VM's kernel-mode counter now and then reads (nearly) zero for a whole run; a
            # proxy on loopback always spends more in the kernel than in user space, so such a
            # round is dropped and counted.
            awk -F, -v r="$row" -v p="$p" -v n="$reqs" -v bad="$TMP/dropped" '
                $3 == "instructions:u" { u = $1 } $3 == "instructions:k" { k = $1 }
                END {
                    if (n <= 0) exit
                    if (k < u / 2) { print r, p >>bad; exit }
                    printf "%s %s %.0f %.0f %.0f\n", r, p, u / n, k / n, (u + k) / n
                }
            ' "$out.perf" >>"$RESULTS"
        done
    done
done
if [[ -s $TMP/dropped ]]; then
    echo "dropped (kernel counter read ~0): $(sort "$TMP/dropped" | uniq -c | awk '{ printf "%s %s x%d; ", $2, $3, $1 }')"
    echo
fi
[[ -n ${KEEP:-} ]] && { mkdir -p "$KEEP"; cp -r "$TMP/out" "$RESULTS" "$KEEP/"; }

colm() { awk -v r="$1" -v p="$2" -v c="$3" '$1 == r && $2 == p { print $c }' "$RESULTS" | median; }
printf '| row |'
for p in $PROXIES; do printf ' %s user / kernel / total |' "$p"; done
for p in $PROXIES; do [[ $p == headwater ]] || printf ' headwater / %s |' "$p"; done
printf '\n|---|'
for p in $PROXIES; do printf -- '---:|'; done
for p in $PROXIES; do [[ $p == headwater ]] || printf -- '---:|'; done
printf '\n'
for row in $ROWS; do
    printf '| %s |' "$row"
    for p in $PROXIES; do printf ' %s / %s / **%s** |' "$(colm "$row" "$p" 3)" "$(colm "$row" "$p" 4)" "$(colm "$row" "$p" 5)"; done
    for p in $PROXIES; do
        [[ $p == headwater ]] || printf ' %s |' "$(ratio "$(colm "$row" headwater 5)" "$(colm "$row" "$p" 5)")"
    done
    printf '\n'
done
