#!/usr/bin/env python3
"""Costs per request by function, from two callgrind outputs of perf/instructions.sh.

    cg_per_request.py SHORT.cg LONG.cg N [--top 30] [--groups]
    cg_per_request.py SHORT.cg LONG.cg N --callers REGEX [--sites]   # who calls them, from where
    cg_per_request.py SHORT.cg LONG.cg N --callees REGEX [--sites]   # what they call
    cg_per_request.py SHORT.cg LONG.cg N --inlined REGEX             # their self cost by source file

SHORT.cg served N requests and LONG.cg 2N (keep them with KEEP=DIR perf/instructions.sh;
e.g. DIR/headwater-epoll-3000.cg and DIR/headwater-epoll-6000.cg with N=3000). For every
function, (cost(LONG) - cost(SHORT)) / N is what one request adds: startup and shutdown cancel
out, as in the script's totals.

Prints the functions with the largest self cost per request, then those with the largest
inclusive cost (self plus everything they call; a direct recursive call is not counted twice), and with --groups the
self costs summed by category (allocation, memcpy, parsing, hashing, runtime, ...), which add up
to the total per request. Functions are identified by name (callgrind's demangled name without
the object file), so the monomorphizations of one generic function are summed together.

--callers/--callees list call edges (calls and inclusive cost per request); with --sites, one row
per call site (source file:line of the call, which for inlined code is the inlined function's
own line), e.g. to see which `.await` copies a future: --callers '^__memcpy' --sites.

Reads callgrind's format directly (name compression, relative positions, calls= lines) instead
of callgrind_annotate, whose "file:function" rows split a function over the files of everything
inlined into it. Standard library only.
"""

import argparse
import re
import signal
import sys
from collections import defaultdict


def parse(path):
    """Returns (total, self_cost, inclusive_cost, (edges, sites), by_file) by function name.
    edges maps (caller, callee) to [inclusive cost of the calls, number of calls]; sites maps
    (caller, callee, "file:line") the same way; by_file maps (function, source file) to self
    cost (the source file of inlined code is its own)."""
    names = {"fn": {}, "fl": {}}
    by_file = defaultdict(int)
    fl = fi = None
    self_cost = defaultdict(int)
    calls_cost = defaultdict(int)  # cost of calls to other functions
    edges = defaultdict(lambda: [0, 0])  # (caller, callee) -> [cost, calls]
    sites = defaultdict(lambda: [0, 0])  # (caller, callee, "file:line") -> [cost, calls]
    pos = 0
    total = None
    fn = None
    cfn = None
    pending_call = False
    name_re = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def resolve(value, kind="fn"):
        m = name_re.match(value)
        if not m:
            return value
        ident, name = m.group(1), m.group(2)
        if name is not None:
            names[kind][ident] = name
            return name
        return names[kind].get(ident, "(" + ident + ")")

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                p = parts[0]
                if p[0] in "+-":
                    pos += int(p)
                elif p != "*":
                    pos = int(p)
                cost = int(parts[1])
                if pending_call:
                    if cfn != fn:
                        calls_cost[fn] += cost
                        edge = edges[(fn, cfn)]
                        edge[0] += cost
                        edge[1] += ncalls
                        site = sites[(fn, cfn, f"{fi or fl}:{pos}")]
                        site[0] += cost
                        site[1] += ncalls
                    pending_call = False
                else:
                    self_cost[fn] += cost
                    by_file[(fn, fi or fl)] += cost
                continue
            if line.startswith("fn="):
                fn = resolve(line[3:])
                fi = None
            elif line.startswith("fl="):
                fl = resolve(line[3:], "fl")
                fi = None
            elif line.startswith("fi=") or line.startswith("fe="):
                fi = resolve(line[3:], "fl")
            elif line.startswith("cfi=") or line.startswith("cfl="):
                resolve(line[4:], "fl")
            elif line.startswith("cfn="):
                cfn = resolve(line[4:])
            elif line.startswith("calls="):
                pending_call = True
                ncalls = int(line[6:].split()[0])
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
            # fl= fi= fe= ob= cob= cfi= cfl= jump= jcnd= and headers: not needed
    inclusive = {k: self_cost.get(k, 0) + calls_cost.get(k, 0) for k in set(self_cost) | set(calls_cost)}
    return total, self_cost, inclusive, (edges, sites), by_file


# Categories for --groups, first match wins (on the function name).
GROUPS = [
    ("allocation (mimalloc, alloc::)", r"^_?mi_|mimalloc|^alloc::alloc|__rust_(alloc|dealloc|realloc)|__rdl_|RawVec|raw_vec|finish_grow|do_reserve_and_handle"),
    ("memcpy / memmove / memset (libc)", r"^__mem(cpy|move|set)|^mem(cpy|move|set)|^__memcmp|^__memchr"),
    ("hashing (SipHash, HashMap)", r"sip::|DefaultHasher|hash_one|hashbrown|::hash::|RandomState"),
    ("request/response head parsing (httparse, http1::head)", r"^httparse::|headwater_http1::head::|headwater_http1::syntax|memchr::"),
    ("head encoding (http1::encode)", r"headwater_http1::encode|headwater_http1::framing|headwater_http1::body|headwater_http1::chunked"),
    ("formatting (core::fmt, itoa)", r"core::fmt|^<core::fmt|itoa|fmt::Write|write_fmt|pad_integral|Display>::fmt|Debug>::fmt"),
    ("time (Instant::now, clock_gettime, monoio timers)", r"Timespec|Instant|clock_gettime|__vdso|vdso|monoio::time::"),
    ("monoio runtime and driver (tasks, ops, epoll/uring)", r"^monoio::|<monoio::|io_uring::|mio::|epoll|^__libc_(recv|send)|^recv|^send|^__GI___|syscall|^writev|^readv"),
    ("engine timed I/O (engine::io)", r"headwater_engine::io::|<headwater_engine::io::"),
    ("balancer pick / health cells / breakers", r"headwater_balancer|headwater_health|proxy::upstreams|health::|Balancer|fastrand"),
    ("metrics", r"metrics::"),
    ("bytes (BytesMut, Bytes)", r"^bytes::|<bytes::"),
    ("proxy state machine (proxy::conn, pool, route)", r"headwater_engine::proxy|headwater_engine::config|<headwater_engine::proxy"),
    ("http crate (Method, StatusCode, HeaderName)", r"^http::|<http::"),
]


def strip_prefix(path):
    """A source path without the registry / toolchain prefix."""
    path = re.sub(r"^.*/registry/src/[^/]+/", "", path)
    path = re.sub(r"^/rustc/[0-9a-f]+/library/", "std:", path)
    return re.sub(r"^/work/[^/]+/", "", path)


def group_of(name):
    for label, pattern in GROUPS:
        if re.search(pattern, name):
            return label
    return "other"


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("short")
    ap.add_argument("long")
    ap.add_argument("n", type=int, help="requests of the short run (the long one served 2N)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--groups", action="store_true", help="also sum self costs by category")
    ap.add_argument("--callers", metavar="REGEX", help="only: who calls the functions matching REGEX, per request")
    ap.add_argument("--callees", metavar="REGEX", help="only: what the functions matching REGEX call, per request")
    ap.add_argument("--sites", action="store_true", help="with --callers/--callees: one row per call site (source file:line, inlined code at its own place)")
    ap.add_argument("--inlined", metavar="REGEX", help="only: the self cost of the functions matching REGEX by source file (what was inlined into them)")
    args = ap.parse_args()
    t1, s1, i1, e1, f1 = parse(args.short)
    t2, s2, i2, e2, f2 = parse(args.long)
    if t1 is None or t2 is None:
        sys.exit("no totals in one of the files (did the run end normally?)")
    n = args.n
    total = (t2 - t1) / n
    print(f"total: {total:.0f} instructions per request ((Ir {t2} - Ir {t1}) / {n})")
    print()
    if args.inlined:
        pattern = re.compile(args.inlined)
        rows = []
        for key in set(f1) | set(f2):
            if pattern.search(key[0]):
                v = (f2.get(key, 0) - f1.get(key, 0)) / n
                if abs(v) >= 0.5:
                    rows.append((v, key))
        rows.sort(key=lambda r: -r[0])
        print("| function | source file of the instructions | instr / request |")
        print("|---|---|---:|")
        for v, (func, path) in rows[: args.top]:
            print(f"| `{func[:80]}` | `{strip_prefix(path)}` | {v:.0f} |")
        return
    if args.callers or args.callees:
        pattern = re.compile(args.callers or args.callees)
        side = 1 if args.callers else 0  # which end of the edge must match
        e1, e2 = (e1[1], e2[1]) if args.sites else (e1[0], e2[0])
        rows = []
        for key in set(e1) | set(e2):
            if not pattern.search(key[side]):
                continue
            a, b = e1.get(key, [0, 0]), e2.get(key, [0, 0])
            cost, calls = (b[0] - a[0]) / n, (b[1] - a[1]) / n
            if abs(cost) >= 0.5 or abs(calls) >= 0.005:
                rows.append((cost, calls, key))
        rows.sort(key=lambda r: -r[0])
        site_head = " call site |" if args.sites else ""
        print(f"| caller | callee |{site_head} calls / request | instr / request (inclusive) |")
        print("|---|---|" + ("---|" if args.sites else "") + "---:|---:|")
        for cost, calls, key in rows[: args.top]:
            site = f" `{strip_prefix(key[2])}` |" if args.sites else ""
            print(f"| `{key[0][:90]}` | `{key[1][:90]}` |{site} {calls:.2f} | {cost:.0f} |")
        return

    def table(title, a, b):
        rows = [(name, (b.get(name, 0) - a.get(name, 0)) / n) for name in set(a) | set(b)]
        rows.sort(key=lambda r: -r[1])
        print(f"| {title} | instr / request | % of total |")
        print("|---|---:|---:|")
        for name, v in rows[: args.top]:
            shown = name if len(name) <= 140 else name[:137] + "..."
            shown = shown.replace("|", "\\|")
            print(f"| `{shown}` | {v:.0f} | {100 * v / total:.1f} |")
        print()

    table("self cost: function", s1, s2)
    table("inclusive cost: function", i1, i2)
    if args.groups:
        sums = defaultdict(float)
        members = defaultdict(list)
        for name in set(s1) | set(s2):
            v = (s2.get(name, 0) - s1.get(name, 0)) / n
            g = group_of(name)
            sums[g] += v
            members[g].append((v, name))
        print("| category (self costs summed) | instr / request | % of total | largest members |")
        print("|---|---:|---:|---|")
        for g, v in sorted(sums.items(), key=lambda kv: -kv[1]):
            top = sorted(members[g], reverse=True)[:3]
            names = "; ".join(f"{m[1][:60]} {m[0]:.0f}" for m in top if m[0] >= 1).replace("|", "\\|")
            print(f"| {g} | {v:.0f} | {100 * v / total:.1f} | {names} |")
        print()


if __name__ == "__main__":
    main()
