#!/usr/bin/env bash
# Memory per idle keep-alive client connection: Headwater vs nginx.
#
#   bench/idle_conns.sh                 # N=10000 connections, 3 rounds per proxy
#   N=2000 ROUNDS=1 bench/idle_conns.sh
#
# For each proxy (a fresh process each round, alternating Headwater / nginx): start it pinned to
# core 0 in front of the upstream nginx (core 1), send one request through it, then
# bench/idle_conns.py opens N keep-alive connections, sends one GET /100b on each, reads the
# response, leaves all N idle, and reads the proxy's VmRSS (nginx: master + worker) before, with
# all N idle, and after closing them. Reports KiB per idle connection.
#
# Needs the Debian package nginx (and python3, curl, taskset, cargo):  apt-get install -y nginx
# Everything is on 127.0.0.1, bounded by TIMEOUT seconds per round, and stopped on exit.
#
# Environment: N=10000  ROUNDS=3  IN_FLIGHT=256  TIMEOUT=120  PROXY_CORE=0  LOAD_CORE=1  NO_BUILD=1

set -Eeuo pipefail

N=${N:-10000}
ROUNDS=${ROUNDS:-3}
IN_FLIGHT=${IN_FLIGHT:-256}
TIMEOUT=${TIMEOUT:-120}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

STOP_WAIT=10 # seconds a proxy gets to exit on SIGTERM (see lib.sh's stop_pids)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
HEADWATER_BIN="$ROOT/target/release/headwater"

require_packages nginx
require_cmds python3 curl taskset cargo

# file descriptors: N client sockets here, N accepted sockets in the proxy (+ upstream, listeners)
want_fds=$((N + 1024))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < want_fds)); then
    echo "the hard open-files limit ($hard) is below $want_fds; lower N or raise it" >&2
    exit 1
fi
ulimit -n "$want_fds"

build_headwater

make_tmp_with_traps idle
make_nginx_prefix "$TMP"

start_nginx "$LOAD_CORE" "$TMP/" "$BENCH_DIR/nginx/upstream.conf" "$TMP/upstream.log"
PIDS+=($!)
wait_port $UPSTREAM_PORT "upstream nginx"

echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:  $(machine_summary)"
echo "test:     $N idle keep-alive connections, one GET /100b each, $ROUNDS rounds per proxy"
warn_other_load
echo

RESULTS="$TMP/results"
: >"$RESULTS"
status=0
for round in $(seq "$ROUNDS"); do
    for proxy in headwater nginx; do
        if [[ $proxy == headwater ]]; then
            taskset -c "$PROXY_CORE" "$HEADWATER_BIN" run -c "$BENCH_DIR/headwater/proxy.toml" \
                2>"$TMP/headwater.log" &
            pid=$!
            port=$HEADWATER_PORT
        else
            start_nginx "$PROXY_CORE" "$TMP/" "$BENCH_DIR/nginx/proxy.conf" "$TMP/nginx-proxy.log"
            pid=$!
            port=$NGINX_PORT
        fi
        PIDS+=("$pid")
        wait_port "$port" "$proxy"
        pids=$pid
        if [[ $proxy == nginx ]]; then
            for w in $(pgrep -P "$pid"); do pids+=",$w"; done
        elif ((round == 1)); then
            echo "headwater: $(grep -m1 'serving on' "$TMP/headwater.log" || true)"
        fi
        line=$(timeout $((TIMEOUT + 30)) taskset -c "$LOAD_CORE" python3 "$BENCH_DIR/idle_conns.py" --port "$port" --pids "$pids" \
            -n "$N" --in-flight "$IN_FLIGHT" --timeout "$TIMEOUT") || status=1
        echo "$proxy round $round: $line"
        echo "$proxy $line" >>"$RESULTS"
        stop_tracked "$pid"
    done
done

echo
echo "| proxy | idle conns | RSS before (KiB) | RSS with N idle (KiB) | RSS after close (KiB) | KiB per idle conn | failures |"
echo "|---|---:|---:|---:|---:|---:|---|"
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    proxy, _, js = line.partition(" ")
    try:
        rows.setdefault(proxy, []).append(json.loads(js))
    except ValueError:
        pass
for proxy, rs in rows.items():
    for r in rs:
        fails = dict(r["failures"])
        if r["closed_by_server_while_idle"]:
            fails["closed while idle"] = r["closed_by_server_while_idle"]
        print(f"| {proxy} | {r['idle']} | {r['rss_before_kib']} | {r['rss_idle_kib']} | "
              f"{r['rss_after_close_kib']} | {r['kib_per_idle_conn']} | {fails or 'none'} |")
print()
print("| proxy | median KiB per idle conn |")
print("|---|---:|")
for proxy, rs in rows.items():
    v = [r["kib_per_idle_conn"] for r in rs if r["kib_per_idle_conn"] is not None]
    if v:
        print(f"| {proxy} | {statistics.median(v):.2f} |")
EOF
exit $status
