#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into seeds/<target>/.

Every input is 6 control bytes (see src/lib.rs: split point u16 LE, flags, limit A, limit B,
piece seed) followed by the message. Each message is written with a few control prefixes so
that the default limits, the small limits and different splits are all represented.

Run from anywhere:  python3 http1/fuzz/seeds/make_seeds.py
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

CHROME = (
    b"GET /search?q=headwater&sourceid=chrome HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"Connection: keep-alive\r\n"
    b"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    b"sec-ch-ua-mobile: ?0\r\n"
    b"sec-ch-ua-platform: \"Linux\"\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-User: ?1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: session=abc123; theme=dark\r\n"
    b"\r\n"
)

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    CHROME,
    b"\r\nGET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\nGET /next HTTP/1.1\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
    b"Content-Length: 17\r\nExpect: 100-continue\r\n\r\n{\"model\":\"gpt\"}\r\n",
    b"PUT /upload HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: gzip, chunked\r\nTE: trailers\r\n"
    b"Trailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET http://example.com/path?q HTTP/1.1\r\nHost: other\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: 5\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: h\r\nVia: 1.1 edge\r\nX-Forwarded-For: 10.0.0.1\r\n"
    b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello",
    # Invalid ones, so the error paths start covered.
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: nginx\r\n"
    b"Content-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
    b"Cache-Control: no-cache\r\nVary: Accept-Encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nUpgrade: h2c\r\nX-Hop: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 599 \r\nVia: 1.1 a\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
]

CHUNKED = [
    b"0\r\n\r\n",
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"1a;name=value;q=\"quoted \\\" str\"\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n",
    b"4\r\nWiki\r\n0\r\nExpires: never\r\nX-Checksum: abc\r\n\r\nGET /next HTTP/1.1\r\n",
    b"0000000000000003\r\nabc\r\nA\r\n0123456789\r\n0;last\r\n\r\n",
    b"400\r\n" + bytes(range(256)) * 4 + b"\r\n0\r\n\r\n",
    # Invalid ones.
    b"5\r\nhello\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"0\r\nBad Field: x\r\n\r\n",
]

# (split point, flags, limit A, limit B, piece seed)
PREFIXES = [
    (0, 0, 0, 0, 0),
    (7, 0, 0, 0, 3),
    (40, 2, 24, 20, 9),
    (1000, 3, 5, 40, 17),
    # Per-target flags (byte 2 >> 2). response_head: bits 0-1 method, 2 HTTP/1.0 client,
    # 3-4 connection (3 = upgrade), 5 Via; request_head: bit 0 IPv6, bit 1 XFF replace.
    (3, 0xE0, 0, 0, 5),
    (11, 0x54, 0, 0, 23),
]


def write(target, messages):
    out = os.path.join(HERE, target)
    os.makedirs(out, exist_ok=True)
    for msg in messages:
        for split, flags, a, b, seed in PREFIXES:
            data = struct.pack("<HBBBB", split, flags, a, b, seed) + msg
            name = hashlib.sha1(data).hexdigest()[:16]
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)


write("request_head", REQUESTS)
write("response_head", RESPONSES)
write("chunked", CHUNKED)
