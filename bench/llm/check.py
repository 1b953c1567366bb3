#!/usr/bin/env python3
"""One request as bench/llm.sh's wrk sends it, and a check of the answer (standard library only).

    check.py URL BODY_FILE FORMAT STREAM [HEADER ...]

URL          e.g. http://127.0.0.1:18981/v1/chat/completions
BODY_FILE    bench/llm/openai.json or bench/llm/anthropic.json (sent as wrk sends it)
FORMAT       the answer expected: "openai" (chat.completion / chat.completion.chunk SSE) or
             "anthropic" (message / Messages SSE events)
STREAM       1: add "stream": true as bench/llm/wrk.lua does, and read an SSE stream; 0: not
HEADER       "Name: value", extra request headers

The answer must be 200 and carry, as the assistant's text, the mock provider's echo of the last
user message: "echo: " + that text (`headwater mock-llm`'s reply; whole, or the stream's deltas
concatenated). Prints one line, "id=... text=... [events=N]", and exits 0; on any mismatch prints
why on stderr and exits 1.
"""

import http.client
import json
import sys
from urllib.parse import urlsplit

PREFIX = "echo: "


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def last_user_text(body):
    for m in reversed(body["messages"]):
        if m["role"] == "user":
            c = m["content"]
            return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
    fail("the body has no user message")


def sse_events(raw):
    """(event name or None, data) pairs of an SSE body."""
    out = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((name, "\n".join(data)))
    return out


def main():
    if len(sys.argv) < 5:
        fail(__doc__)
    url, body_file, fmt, stream = sys.argv[1:5]
    headers = {"Content-Type": "application/json"}
    for h in sys.argv[5:]:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    raw_body = open(body_file, "rb").read().decode().rstrip()
    if stream == "1":
        raw_body = '{"stream":true,' + raw_body[1:]
    want = PREFIX + last_user_text(json.loads(raw_body))

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", u.path, body=raw_body.encode(), headers=headers)
    resp = conn.getresponse()
    data = resp.read().decode("utf-8", "replace")
    if resp.status != 200:
        fail(f"status {resp.status}: {data[:300]}")
    ctype = resp.getheader("content-type", "")

    if stream != "1":
        try:
            v = json.loads(data)
        except ValueError:
            fail(f"not JSON ({ctype}): {data[:300]}")
        if fmt == "openai":
            if v.get("object") != "chat.completion":
                fail(f"object is {v.get('object')!r}, want 'chat.completion': {data[:300]}")
            text = v["choices"][0]["message"]["content"]
        else:
            if v.get("type") != "message":
                fail(f"type is {v.get('type')!r}, want 'message': {data[:300]}")
            text = "".join(b.get("text", "") for b in v["content"] if b.get("type") == "text")
        if text != want:
            fail(f"text is {text!r}, want {want!r}")
        print(f"id={v.get('id')} text={text!r}")
        return

    if "text/event-stream" not in ctype:
        fail(f"content-type {ctype!r}, want text/event-stream: {data[:300]}")
    events = sse_events(data)
    text, ident = "", None
    if fmt == "openai":
        if not events or events[-1][1] != "[DONE]":
            fail(f"the stream does not end with [DONE]: {data[-300:]}")
        for _, d in events[:-1]:
            v = json.loads(d)
            if v.get("object") != "chat.completion.chunk":
                fail(f"chunk object is {v.get('object')!r}: {d[:300]}")
            ident = ident or v.get("id")
            for c in v.get("choices") or []:
                text += (c.get("delta") or {}).get("content") or ""
    else:
        names = [n for n, _ in events]
        if "message_stop" not in names:
            fail(f"no message_stop event: {data[-300:]}")
        for _, d in events:
            v = json.loads(d)
            if v.get("type") == "message_start":
                ident = v["message"].get("id")
            if v.get("type") == "content_block_delta" and v["delta"].get("type") == "text_delta":
                text += v["delta"]["text"]
    if text != want:
        fail(f"streamed text is {text!r}, want {want!r}")
    print(f"id={ident} text={text!r} events={len(events)}")


main()
