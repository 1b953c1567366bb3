#!/usr/bin/env python3
"""Idle keep-alive connection memory of a proxy.

Opens N keep-alive connections to 127.0.0.1:PORT; on each, sends one `GET PATH` and reads the
whole response, then leaves the connection idle. Measures the resident memory (VmRSS from
/proc/PID/status, summed over --pids) before, once all N are idle, and after closing them.
Prints one JSON object on stdout. Bounded by --timeout; closes everything at the end.

Standard library only (socket + selectors). Used by bench/idle_conns.sh.
"""

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def tcp_mem_pages():
    # kernel TCP buffer memory (both ends of every loopback connection), for information
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0


class Conn:
    __slots__ = ("sock", "buf", "state")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.state = "connecting"


def response_complete(buf):
    """Return (status, done) for an HTTP/1.1 response with Content-Length in buf."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, False
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            # chunked: wait for the terminating chunk (good enough for the fixed bodies here)
            return status, buf.endswith(b"0\r\n\r\n")
    return status, len(buf) >= end + 4 + length


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pids", required=True, help="comma-separated pids whose RSS is summed")
    ap.add_argument("-n", "--conns", type=int, default=10000)
    ap.add_argument("--path", default="/100b")
    ap.add_argument("--in-flight", type=int, default=256,
                    help="most connections connecting or waiting for their response at once")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait once all are idle before measuring")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after this long")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.conns + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        soft = min(need, hard)
    if soft < need:
        sys.exit(f"RLIMIT_NOFILE {soft} is too low for {args.conns} connections")

    pids = [int(p) for p in args.pids.split(",") if p]
    request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               "User-Agent: headwater-idle-bench\r\n\r\n").encode()
    deadline = time.monotonic() + args.timeout

    time.sleep(0.5)
    rss_before = rss_kib(pids)
    tcp_before = tcp_mem_pages()

    sel = selectors.DefaultSelector()
    idle = []
    started = 0
    active = 0
    failures = {}
    statuses = {}
    t0 = time.monotonic()

    def fail(conn, why):
        nonlocal active
        failures[why] = failures.get(why, 0) + 1
        sel.unregister(conn.sock)
        conn.sock.close()
        active -= 1

    while len(idle) + sum(failures.values()) < args.conns:
        if time.monotonic() > deadline:
            failures["timeout"] = args.conns - len(idle) - sum(failures.values())
            break
        while started < args.conns and active < args.in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = s.connect_ex(("127.0.0.1", args.port))
            started += 1
            active += 1
            c = Conn(s)
            if rc not in (0, errno.EINPROGRESS):
                failures[f"connect {errno.errorcode.get(rc, rc)}"] = \
                    failures.get(f"connect {errno.errorcode.get(rc, rc)}", 0) + 1
                s.close()
                active -= 1
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, f"connect {errno.errorcode.get(err, err)}")
                    continue
                try:
                    c.sock.send(request)  # small: goes out whole on a fresh socket
                except OSError as e:
                    fail(c, f"send {e.errno}")
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
            else:
                try:
                    data = c.sock.recv(65536)
                except OSError as e:
                    fail(c, f"recv {e.errno}")
                    continue
                if not data:
                    fail(c, "closed before response")
                    continue
                c.buf += data
                status, done = response_complete(c.buf)
                if done:
                    statuses[status] = statuses.get(status, 0) + 1
                    sel.unregister(c.sock)
                    c.buf = b""
                    c.state = "idle"
                    idle.append(c)
                    active -= 1
    open_secs = time.monotonic() - t0

    time.sleep(args.settle)
    rss_idle = rss_kib(pids)
    tcp_idle = tcp_mem_pages()

    # every idle connection must still be open: readable now means the server closed it
    probe = selectors.DefaultSelector()
    for c in idle:
        probe.register(c.sock, selectors.EVENT_READ, c)
    closed_by_server = len(probe.select(timeout=0))
    probe.close()

    for c in idle:
        c.sock.close()
    sel.close()
    time.sleep(args.settle)
    rss_after_close = rss_kib(pids)

    n_idle = len(idle)
    result = {
        "port": args.port,
        "pids": pids,
        "requested": args.conns,
        "idle": n_idle,
        "statuses": statuses,
        "failures": failures,
        "closed_by_server_while_idle": closed_by_server,
        "open_seconds": round(open_secs, 2),
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "rss_after_close_kib": rss_after_close,
        "kib_per_idle_conn": round((rss_idle - rss_before) / n_idle, 2) if n_idle else None,
        "kernel_tcp_mem_kib_delta_both_ends": (tcp_idle - tcp_before) * 4,
    }
    print(json.dumps(result))
    ok = n_idle == args.conns and closed_by_server == 0 and set(statuses) == {200}
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
