#!/usr/bin/env python3
"""Prints the codec benches' medians from criterion's saved estimates as a Markdown table:
time per iteration, heads (or bodies) per second and bytes per second, and the ratio of our
parser to httparse alone for each head.

Usage: python3 perf/codec_table.py [CRITERION_DIR]   (default: target/criterion)
Run after `cargo bench -p headwater-bench --bench codec`.
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
rows = {}
for dirpath, _dirs, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        est = json.load(f)
    median_ns = est["median"]["point_estimate"]
    lo = est["median"]["confidence_interval"]["lower_bound"]
    hi = est["median"]["confidence_interval"]["upper_bound"]
    nbytes = (bench.get("throughput") or {}).get("Bytes")
    rows[(bench["group_id"], bench["function_id"])] = (median_ns, lo, hi, nbytes)


def fmt_rate(x, unit):
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


print("| bench | bytes/iter | median time | per second (1/time) | bytes/s (MB/s = 1e6) | vs httparse |")
print("|---|---:|---:|---:|---:|---:|")
for (group, func), (ns, lo, hi, nbytes) in sorted(rows.items()):
    per_s = 1e9 / ns
    bps = f"{nbytes * per_s / 1e6:.0f} MB/s" if nbytes else "-"
    base = rows.get((group, "httparse"))
    ratio = f"{ns / base[0]:.2f}x" if base and func != "httparse" else ""
    print(
        f"| {group}/{func} | {nbytes or '-'} | {ns:.1f} ns [{lo:.1f}, {hi:.1f}] "
        f"| {fmt_rate(per_s, '/s')} | {bps} | {ratio} |"
    )
