#!/usr/bin/env bash
# Headwater vs nginx as HTTP/1.1 reverse proxies, on the same core, in one run.
#
#   bench/run.sh                        # 5 runs x 10 s per proxy and path
#   RUNS=3 DURATION=5s bench/run.sh     # shorter
#
# Needs the Debian packages wrk and nginx (plus curl, taskset from util-linux, cargo):
#   apt-get install -y wrk nginx
#
# Layout (the machine this was written for has 2 cores):
#   core 0: the proxy under test (Headwater with workers = 1, or nginx with worker_processes 1)
#   core 1: wrk (1 thread, 64 connections) AND the upstream nginx (1 worker, fixed bodies)
# Every load run targets 127.0.0.1 only and is bounded by DURATION; everything started here is
# stopped on exit.
#
# Environment:
#   RUNS=5           measured runs per proxy and path (alternating H, N, H, N, ...)
#   DURATION=10s     length of each wrk run
#   CONNS=64         wrk connections
#   PATHS="/100b /4k"
#   WARMUP=2s        one unmeasured wrk run per target before measuring
#   PROXY_CORE=0 LOAD_CORE=1
#   NO_BUILD=1       skip `cargo build --release -p headwater-engine`
#   HEADWATER_BIN=P  benchmark this headwater binary instead of target/release/headwater
#   KEEP_RAW=DIR     keep every raw wrk output in DIR
#   QUIET_WAIT=120   before each measured run, wait up to this many seconds for other processes
#                    to use less than QUIET_PCT=5 % of a core over a 1 s sample (0: don't wait)

set -Eeuo pipefail
trap 'echo "run.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

RUNS=${RUNS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
PATHS=${PATHS:-"/100b /4k"}
WARMUP=${WARMUP:-2s}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
QUIET_WAIT=${QUIET_WAIT:-120}
QUIET_PCT=${QUIET_PCT:-5}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
HEADWATER_BIN=${HEADWATER_BIN:-"$ROOT/target/release/headwater"}

# ---------------------------------------------------------------- prerequisites
require_packages wrk nginx
require_cmds curl taskset cargo awk sort
warn_few_cores

build_headwater
[[ -x "$HEADWATER_BIN" ]] || { echo "no $HEADWATER_BIN" >&2; exit 1; }

# ---------------------------------------------------------------- processes
make_tmp_with_traps bench
make_nginx_prefix "$TMP"
mkdir -p "$TMP/raw"
cp "$HEADWATER_BIN" "$TMP/headwater" # a concurrent rebuild must not swap the binary under test
HEADWATER_BIN="$TMP/headwater"
body_len() { case "$1" in /100b) echo 100 ;; /4k) echo 4096 ;; *) wc -c <"$TMP/html/${1#/}" ;; esac; }

# upstream: core LOAD_CORE
start_nginx "$LOAD_CORE" "$TMP/" "$BENCH_DIR/nginx/upstream.conf" "$TMP/upstream.log"
PIDS+=($!)
UPSTREAM_PID=$!
# nginx proxy: core PROXY_CORE
start_nginx "$PROXY_CORE" "$TMP/" "$BENCH_DIR/nginx/proxy.conf" "$TMP/nginx-proxy.log"
PIDS+=($!)
NGINX_PID=$!
# Headwater: core PROXY_CORE (its one shard pins itself to the first allowed core)
taskset -c "$PROXY_CORE" "$HEADWATER_BIN" run -c "$BENCH_DIR/headwater/proxy.toml" \
    2>"$TMP/headwater.log" &
PIDS+=($!)
HEADWATER_PID=$!

wait_port $UPSTREAM_PORT "upstream nginx"
wait_port $NGINX_PORT "nginx proxy"
wait_port $HEADWATER_PORT "headwater"

# ---------------------------------------------------------------- machine summary
echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:  $(machine_summary)"
echo "nginx:    $(nginx_version)"
echo "wrk:      $(wrk_version)"
echo "headwater: $(grep -m1 'serving on' "$TMP/headwater.log" || cat "$TMP/headwater.log")"
echo "layout:   proxy on core $PROXY_CORE; wrk -t1 -c$CONNS and upstream nginx on core $LOAD_CORE"
echo "runs:     $RUNS x $DURATION per proxy and path (alternating), warm-up $WARMUP"
warn_other_load "during measurement"
echo

# ---------------------------------------------------------------- correctness check
declare -A PORT=([headwater]=$HEADWATER_PORT [nginx]=$NGINX_PORT [direct]=$UPSTREAM_PORT)
for path in $PATHS; do
    want=$(body_len "$path")
    for target in headwater nginx direct; do
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:${PORT[$target]}$path")
        if [[ "$got" != "200 $want" ]]; then
            echo "check failed: $target $path answered '$got', want '200 $want'" >&2
            exit 1
        fi
    done
done
echo "check:    every target answers 200 with the right body length on: $PATHS"
echo

# ---------------------------------------------------------------- measuring
# parse one wrk --latency output -> "rps p50_ms p99_ms non2xx sockerr requests"
parse_wrk() {
    awk "$AWK_WRK_MS"'
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /requests in/ { reqs = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ {
        gsub(/,/, ""); err = $4 + $6 + $8 + $10
    }
    END { printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, non2xx, err, reqs }
    ' "$1"
}

run_wrk() { # target path duration outfile
    taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"$3" --latency \
        "http://127.0.0.1:${PORT[$1]}$2" >"$4" 2>&1
}

# CPU accounting per run (clock ticks): the proxy's own CPU time; CPU time used by processes that
# are not part of the benchmark ("other": utime+stime+cutime+cstime of every other process, so
# short-lived ones reaped by a long-lived parent, e.g. rustc under cargo, count too); and steal
# time (this may be a VM), so a run disturbed by other load shows up.
TICK=$(getconf CLK_TCK)
NGINX_PIDS=$(pid_tree "$NGINX_PID")
UPSTREAM_PIDS=$(pid_tree "$UPSTREAM_PID")
others_snapshot() { # file: "pid ticks" of every process but ours (and this shell's children)
    snapshot_other_cpu "$1" "$$ $BASHPID $HEADWATER_PID $NGINX_PIDS $UPSTREAM_PIDS"
}
steal_ticks() { awk '$1 == "cpu" { print $9 }' /proc/stat; }
wait_quiet() { # waits until other processes are (nearly) idle; prints how long it waited
    wait_quiet_others "$QUIET_WAIT" "$QUIET_PCT" "$$ $BASHPID $HEADWATER_PID $NGINX_PIDS $UPSTREAM_PIDS" "$TMP"
}
declare -A PROXY_PIDS=([headwater]="$HEADWATER_PID" [nginx]="$NGINX_PIDS" [direct]="")

RESULTS="$TMP/results"
: >"$RESULTS"
for path in $PATHS; do
    for target in headwater nginx direct; do
        run_wrk "$target" "$path" "$WARMUP" "$TMP/raw/warmup" || true
    done
    for r in $(seq "$RUNS"); do
        # alternate which proxy goes first so drift hits both; the baseline goes last
        if ((r % 2)); then order="headwater nginx direct"; else order="nginx headwater direct"; fi
        for target in $order; do
            out="$TMP/raw/${target}${path//\//_}_$r.txt"
            waited=$(wait_quiet)
            ((waited > 0)) && echo "      (waited ${waited}s for other processes to go quiet)"
            # shellcheck disable=SC2086
            {
                others_snapshot "$TMP/others0"
                p0=$(proc_cpu_ticks ${PROXY_PIDS[$target]}) st0=$(steal_ticks) t0=$(date +%s%N)
                run_wrk "$target" "$path" "$DURATION" "$out"
                t1=$(date +%s%N) st1=$(steal_ticks) p1=$(proc_cpu_ticks ${PROXY_PIDS[$target]})
                others_snapshot "$TMP/others1"
            }
            read -r proxy_pct other_pct steal_pct < <(awk -v p=$((p1 - p0)) \
                -v o="$(other_cpu_ticks "$TMP/others0" "$TMP/others1")" -v st=$((st1 - st0)) \
                -v ns=$((t1 - t0)) -v tick="$TICK" \
                'BEGIN { d = ns / 1e9 * tick; printf "%.1f %.1f %.1f\n", 100 * p / d, 100 * o / d, 100 * st / d }')
            read -r rps p50 p99 non2xx err reqs < <(parse_wrk "$out")
            per_cpu=$(awk -v r="$reqs" -v p=$((p1 - p0)) -v tick="$TICK" 'BEGIN { print (p > 0 ? r / (p / tick) : 0) }')
            printf '%-5s %-9s run %d: %7.0f req/s  p50 %6.3f ms  p99 %6.3f ms  non-2xx %d  sock err %d  proxy CPU %5.1f%%  other %4.1f%%  steal %4.1f%%\n' \
                "$path" "$target" "$r" "$rps" "$p50" "$p99" "$non2xx" "$err" "$proxy_pct" "$other_pct" "$steal_pct"
            echo "$path $target $r $rps $p50 $p99 $non2xx $err $reqs $proxy_pct $per_cpu $other_pct $steal_pct" >>"$RESULTS"
        done
    done
done
if [[ -n "${KEEP_RAW:-}" ]]; then
    mkdir -p "$KEEP_RAW" && cp "$TMP"/raw/*.txt "$KEEP_RAW"/
fi

# ---------------------------------------------------------------- table
# (median, col PATH TARGET COLUMN and sum are lib.sh's)
echo
echo "| path | proxy | median req/s | median p50 (ms) | median p99 (ms) | best req/s | best p99 (ms) | non-2xx | socket errors | proxy CPU (% of core 0) | req per proxy CPU-s | max other CPU % | max steal % |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for path in $PATHS; do
    for target in headwater nginx direct; do
        label=$target
        [[ $target == direct ]] && label="direct (no proxy)"
        rps=$(col "$path" "$target" 4 | median)
        p50=$(col "$path" "$target" 5 | median)
        p99=$(col "$path" "$target" 6 | median)
        best_rps=$(col "$path" "$target" 4 | sort -g | tail -1)
        best_p99=$(col "$path" "$target" 6 | sort -g | head -1)
        non2xx=$(col "$path" "$target" 7 | sum)
        err=$(col "$path" "$target" 8 | sum)
        other=$(col "$path" "$target" 12 | sort -g | tail -1)
        steal=$(col "$path" "$target" 13 | sort -g | tail -1)
        if [[ $target == direct ]]; then
            cpu="-" eff="-"
        else
            cpu=$(col "$path" "$target" 10 | median)
            eff=$(printf '%.0f' "$(col "$path" "$target" 11 | median)")
        fi
        printf '| %s | %s | %.0f | %.3f | %.3f | %.0f | %.3f | %d | %d | %s | %s | %s | %s |\n' "$path" "$label" \
            "$rps" "$p50" "$p99" "$best_rps" "$best_p99" "$non2xx" "$err" "$cpu" "$eff" "$other" "$steal"
    done
done
echo
echo "| path | H/N median req/s | H/N median p99 | H/N best req/s | H/N best p99 | H/N req per proxy CPU-s | paired H/N req/s: median (min-max) | paired H/N p99: median (min-max) | rounds H faster / p99 no worse |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for path in $PATHS; do
    printf '%s' "$(awk -v hr="$(col "$path" headwater 4 | median)" -v nr="$(col "$path" nginx 4 | median)" \
        -v hp="$(col "$path" headwater 6 | median)" -v np="$(col "$path" nginx 6 | median)" \
        -v he="$(col "$path" headwater 11 | median)" -v ne="$(col "$path" nginx 11 | median)" -v path="$path" \
        -v hb="$(col "$path" headwater 4 | sort -g | tail -1)" -v nb="$(col "$path" nginx 4 | sort -g | tail -1)" \
        -v hq="$(col "$path" headwater 6 | sort -g | head -1)" -v nq="$(col "$path" nginx 6 | sort -g | head -1)" \
        'BEGIN { printf "| %s | %.3f | %.3f | %.3f | %.3f | %.3f |", path, hr / nr, hp / np, hb / nb, hq / nq, he / ne }')"
    # paired: Headwater and nginx of the same round ran back to back
    awk -v p="$path" '$1 == p && $2 == "headwater" { hr[$3] = $4; hp[$3] = $6 }
                      $1 == p && $2 == "nginx"     { nr[$3] = $4; np[$3] = $6 }
        END { for (r in hr) { n++; a[n] = hr[r] / nr[r]; b[n] = hp[r] / np[r]; w += hr[r] >= nr[r]; q += hp[r] <= np[r] }
              for (i = 1; i <= n; i++) print a[i], b[i], n, w, q }' "$RESULTS" >"$TMP/pairs"
    read -r n w q < <(awk 'NR == 1 { print $3, $4, $5 }' "$TMP/pairs")
    printf ' %.3f (%.3f-%.3f) | %.3f (%.3f-%.3f) | %d / %d of %d |\n' \
        "$(cut -d' ' -f1 "$TMP/pairs" | median)" "$(cut -d' ' -f1 "$TMP/pairs" | sort -g | head -1)" "$(cut -d' ' -f1 "$TMP/pairs" | sort -g | tail -1)" \
        "$(cut -d' ' -f2 "$TMP/pairs" | median)" "$(cut -d' ' -f2 "$TMP/pairs" | sort -g | head -1)" "$(cut -d' ' -f2 "$TMP/pairs" | sort -g | tail -1)" \
        "$w" "$q" "$n"
done
echo
echo "H/N = Headwater / nginx. The target is req/s ratio >= 1 and p99 ratio <= 1. When a proxy's"
echo "req/s equals the direct baseline, the load core (wrk + upstream), not the proxy, is the limit;"
echo "req per proxy CPU-second then compares the proxies' efficiency. \"best\" is the fastest run"
echo "(highest req/s, lowest p99): on a machine whose noise only ever slows runs down, it is the"
echo "least disturbed measurement."
