#!/usr/bin/env python3
"""Deterministic keep-alive load for perf/instructions.sh: exactly N requests, then exit.

    client.py PORT N [--conns C] [--path /budget] [--body-len 128]

Opens C keep-alive connections to 127.0.0.1:PORT and sends N GET requests in all, N // C per
connection (the first N % C connections send one more). Each connection has one request in
flight at a time (no pipelining, like wrk): it sends the next request only after the previous
response was read whole. Every response must be `HTTP/1.1 200` with a Content-Length body of
exactly --body-len bytes of the upstream's fixed body ("h" x (len - 1) and a newline);
anything else (another status, a closed connection, chunked framing) exits 1 with a message.
On success it prints one line: "ok N requests on C connections" and exits 0.

Standard library only. Its own speed does not matter: the proxy's instructions are counted,
not the client's, and the count does not depend on how fast requests come (apart from how many
events one wait of the proxy returns, which is why C is small).
"""

import argparse
import selectors
import socket
import sys

HEAD_END = b"\r\n\r\n"


def fail(msg):
    print(f"client.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Conn:
    def __init__(self, port, request, todo, body):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.request = request
        self.todo = todo  # requests still to send, including the one in flight
        self.body = body
        self.buf = b""
        self.done = 0

    def send(self):
        # The request is small: one send on a fresh keep-alive socket takes it whole.
        n = self.sock.send(self.request)
        if n != len(self.request):
            fail(f"short send ({n} of {len(self.request)} bytes)")

    def on_readable(self):
        """Reads what is there; returns True when this connection has sent all its requests
        and read all the responses."""
        data = self.sock.recv(65536)
        if not data:
            fail(f"connection closed by the proxy after {self.done} responses")
        self.buf += data
        while True:
            end = self.buf.find(HEAD_END)
            if end < 0:
                return False
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            if not lines[0].startswith("HTTP/1.1 200 "):
                fail(f"unexpected status line {lines[0]!r}")
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding":
                    fail(f"unexpected Transfer-Encoding: {value.strip()}")
                elif name == "connection" and value.strip().lower() == "close":
                    fail("the proxy closes the connection (Connection: close)")
            if length is None:
                fail("response without Content-Length")
            total = end + len(HEAD_END) + length
            if len(self.buf) < total:
                return False
            body = self.buf[end + len(HEAD_END) : total]
            if body != self.body:
                fail(f"unexpected body ({len(body)} bytes): {body[:40]!r}...")
            self.buf = self.buf[total:]
            if self.buf:
                fail("bytes after a response that nobody asked for")
            self.done += 1
            self.todo -= 1
            if self.todo == 0:
                return True
            self.send()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int, help="requests in all")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--path", default="/budget")
    ap.add_argument("--body-len", type=int, default=128)
    args = ap.parse_args()
    if args.n < 1 or args.conns < 1:
        fail("N and --conns must be at least 1")
    conns_n = min(args.conns, args.n)
    request = (
        f"GET {args.path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{args.port}\r\n"
        "User-Agent: headwater-budget\r\n"
        "Accept: */*\r\n"
        "\r\n"
    ).encode()
    body = b"h" * (args.body_len - 1) + b"\n"
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(conns_n):
        todo = args.n // conns_n + (1 if i < args.n % conns_n else 0)
        c = Conn(args.port, request, todo, body)
        conns.append(c)
        sel.register(c.sock, selectors.EVENT_READ, c)
    for c in conns:
        c.send()
    open_conns = len(conns)
    while open_conns:
        events = sel.select(timeout=600)
        if not events:
            fail("no response for 600 s")
        for key, _ in events:
            c = key.data
            if c.on_readable():
                sel.unregister(c.sock)
                open_conns -= 1
    done = sum(c.done for c in conns)
    for c in conns:
        c.sock.close()
    if done != args.n:
        fail(f"{done} responses, expected {args.n}")
    print(f"ok {done} requests on {conns_n} connections")


if __name__ == "__main__":
    main()
