#!/usr/bin/env python3
"""Connection-level checks of bench/suite.sh, run once per proxy before measuring.

    http_check.py close PORT PATH      GET with `Connection: close`: the response must be 200 and
                                       say `Connection: close`, and the server must then close
                                       (EOF within 3 s), which is what wrk needs to reconnect
                                       without counting an error
    http_check.py keepalive PORT PATH  two GETs on one connection, both 200, the first not
                                       saying close
    http_check.py chunked PORT PATH    GET; prints how the body was framed (chunked with N chunks,
                                       or content-length) and the decoded body length

Prints one line (key=value ...) and exits 0 if the check passed, 1 if not. Loopback only:
127.0.0.1:PORT. Standard library only.
"""

import http.client
import socket
import sys


def read_until_eof(sock, limit=4 << 20):
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            return data, True
        data += chunk
    return data, False


def split_head(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, body


def dechunk(body):
    """Returns (decoded length, number of data chunks) or raises ValueError."""
    n = total = 0
    pos = 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return total, n
        total += size
        n += 1
        pos += size
        if body[pos:pos + 2] != b"\r\n":
            raise ValueError("bad chunk terminator")
        pos += 2


def request(port, path, close):
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    conn_hdr = "Connection: close\r\n" if close else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{conn_hdr}\r\n".encode())
    return sock


def check_close(port, path):
    sock = request(port, path, close=True)
    try:
        raw, eof = read_until_eof(sock)
    except socket.timeout:
        raw, eof = b"", False
    finally:
        sock.close()
    status, headers, _ = split_head(raw) if raw else (0, {}, b"")
    says_close = any(v.lower() == "close" for v in headers.get("connection", []))
    ok = status == 200 and says_close and eof
    print(f"status={status} connection_header={','.join(headers.get('connection', [])) or '-'} "
          f"server_closed={'yes' if eof else 'no (timeout)'}")
    return ok


def check_keepalive(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    conn.request("GET", path)
    r1 = conn.getresponse()
    r1.read()
    first_sock = conn.sock
    conn.request("GET", path)
    r2 = conn.getresponse()
    r2.read()
    same = conn.sock is first_sock and first_sock is not None
    conn.close()
    print(f"status={r1.status},{r2.status} first_will_close={r1.will_close} same_connection={same}")
    return r1.status == 200 and r2.status == 200 and not r1.will_close and same


def check_chunked(port, path):
    sock = request(port, path, close=True)
    try:
        raw, _ = read_until_eof(sock)
    finally:
        sock.close()
    status, headers, body = split_head(raw)
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if "chunked" in te:
        try:
            length, chunks = dechunk(body)
        except (ValueError, IndexError) as e:
            print(f"status={status} framing=chunked error={e}")
            return False
        print(f"status={status} framing=chunked chunks={chunks} body_bytes={length}")
    else:
        length = len(body)
        cl = ",".join(headers.get("content-length", [])) or "-"
        print(f"status={status} framing=content-length:{cl} body_bytes={length}")
    return status == 200


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("close", "keepalive", "chunked"):
        print(__doc__, file=sys.stderr)
        return 2
    check = {"close": check_close, "keepalive": check_keepalive, "chunked": check_chunked}[sys.argv[1]]
    try:
        return 0 if check(int(sys.argv[2]), sys.argv[3]) else 1
    except OSError as e:
        print(f"error={e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
