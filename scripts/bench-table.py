#!/usr/bin/env python3
"""Turns the JSON lines of scripts/bench.sh into the Markdown tables of docs/BENCHMARKS.md.

    python3 scripts/bench-table.py docs/benchmarks/2026-11-23.jsonl
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(n):
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def main(path):
    rows = load(path)
    print("### Throughput (records/s, MB/s)\n")
    print("| system | record | partitions | fsync | producers x window | produce | consume |")
    print("|---|---|---|---|---|---|---|")
    i = 0
    while i < len(rows):
        r = rows[i]
        if r.get("scenario") == "produce" and i + 1 < len(rows) and rows[i + 1].get("scenario") == "consume":
            c = rows[i + 1]
            if r.get("transport") == "kafka-wire":
                who, parts, fsync = f'{r["peer"]} (Kafka protocol, librdkafka)', r["partitions"], "-"
                prod = f'1 x librdkafka, acks={r["acks"]}'
            elif r["peer"] == "weir":
                who, parts, fsync = "weir (in-process)", r["partitions"], r["fsync"]
                prod = f'{r["producers"]} x {r["window"]}'
            else:
                who, parts, fsync, prod = f'{r["peer"]} ({r.get("note", "")})', 1, "-", f'1 x {r["window"]}'
            print(f'| {who} | {r["size"]} B | {parts} | {fsync} | {prod} | '
                  f'{fmt(r["records_per_s"])} ({r["mb_per_s"]:.0f} MB/s) | {fmt(c["records_per_s"])} ({c["mb_per_s"]:.0f} MB/s) |')
            i += 2
            continue
        i += 1
    print("\n### Produce-ack latency at 10,000 records/s, 100 B (microseconds, open loop)\n")
    print("| system | fsync | p50 | p99 | p99.9 | max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r.get("scenario") == "latency":
            if r.get("transport") == "kafka-wire":
                who = f'{r["peer"]} (Kafka protocol, librdkafka, acks={r["acks"]}, linger.ms=0)'
            elif r["peer"] == "weir":
                who = "weir (in-process)"
            else:
                who = f'{r["peer"]} ({r.get("note", "")})'
            print(f'| {who} | {r.get("fsync", "-")} | {r["p50_us"]} | {r["p99_us"]} | {r["p999_us"]} | {r["max_us"]} |')
    cpu = [r for r in rows if r.get("scenario") == "server_cpu"]
    if cpu:
        print("\n### Server CPU per run (produce then consume, one librdkafka client each)\n")
        print("| server | record | partitions | records moved | server CPU seconds | records per CPU second |")
        print("|---|---|---|---|---|---|")
        for r in cpu:
            print(f'| {r["peer"]} | {r["size"]} B | {r["partitions"]} | {r["records"]:,} | {r["cpu_seconds"]:.2f} | '
                  f'{fmt(r["records"] / max(r["cpu_seconds"], 0.01))} |')
    http = [r for r in rows if r.get("scenario") == "http_produce"]
    if http:
        print("\n### HTTP produce (wrk, REST Proxy v2 binary format, 100-byte records)\n")
        print("| records per request | requests/s | records/s | p50 µs | p99 µs | errors |")
        print("|---|---|---|---|---|---|")
        for r in http:
            print(f'| {r["records_per_request"]} | {fmt(r["requests_per_s"])} | {fmt(r["records_per_s"])} | '
                  f'{r["p50_us"]} | {r["p99_us"]} | {r["errors"]} |')
    rt = [r for r in rows if r.get("scenario") in ("handler-at-least-once", "handler-exactly-once", "outbox-relay")]
    if rt:
        print("\n### Processing runtime (trivial handler, 100-byte records, 4 partitions)\n")
        print("| scenario | store | records | batch | records/s |")
        print("|---|---|---|---|---|")
        for r in rt:
            print(f'| {r["scenario"]} | {r["store"]} | {r["count"]:,} | {r["batch"]} | {fmt(r["records_per_s"])} |')
    for r in rows:
        if r.get("scenario") == "memory":
            steps = ", ".join(f"{s / 2**20:.1f}" for s in r["rss_after_each_fifth"])
            print(f'\n### Resident memory\n\nLog of {r["log_bytes"] / 2**30:.2f} GiB ({r["count"]} x {r["size"]} B): '
                  f'RSS after each fifth written {steps} MiB; peak {r["peak_rss_write"] / 2**20:.1f} MiB writing, '
                  f'{r["peak_rss_read"] / 2**20:.1f} MiB reading it all back.')

    repair(rows)


def repair(rows):
    """The repair shop's lines (`scripts/bench.sh repair`): the median of each setup's runs."""
    runs = [r for r in rows if r.get("bench") == "repair" and "tickets_per_second" in r]
    if not runs:
        return
    setups = {}
    for r in runs:
        setups.setdefault((r["mode"], r["engine"], r["instances"], r["workers"]), []).append(r)
    print("\n### The car repair shop end to end (medians over each setup's runs)\n")
    print("| setup | runs | tickets closed/s | close p50 / p99 | stuck | duplicates |")
    print("|---|---:|---:|---:|---:|---:|")
    for (mode, engine, instances, workers), rs in setups.items():
        def median(key):
            values = sorted(r[key] for r in rs)
            return values[len(values) // 2]
        who = f"{mode}, {engine}, {instances} instance{'s' if instances > 1 else ''}, {workers} worker{'s' if workers > 1 else ''}"
        print(f"| {who} | {len(rs)} | {median('tickets_per_second'):,.0f} | "
              f"{median('close_p50_ms') / 1000:.2f} / {median('close_p99_ms') / 1000:.2f} s | "
              f"{sum(r['stuck'] for r in rs)} | {sum(r['duplicates'] for r in rs)} |")


if __name__ == "__main__":
    main(sys.argv[1])
