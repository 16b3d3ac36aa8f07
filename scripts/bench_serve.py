#!/usr/bin/env python3
"""Load benchmark of `dermedge serve` on loopback: at each level, N concurrent clients post a
sample image to /api/v1/classify back to back (a 503 is answered at once and the client sends
again, the worst case) for --seconds, at most --requests requests; reports the throughput of
classified images, p50/p95 latency of the classified ones, the share of 503 (busy) answers and
the server's peak RSS. Traffic goes only to 127.0.0.1.

Usage: scripts/bench_serve.py BINARY MANIFEST IMAGE [--clients 1,2,4,8,16] [--requests 100000]
       [--seconds 10] [--workers 1] [--queue 4] [--threads 1]
"""
import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(args):
    cmd = [args.binary, "--ensemble", args.manifest, "--threads", str(args.threads), "serve",
           "--listen", "127.0.0.1:0", "--no-source", "--no-journal",
           "--workers", str(args.workers), "--queue", str(args.queue)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match:
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc, int(match.group(1))
    proc.kill()
    raise SystemExit("the server did not start")


def run_level(port, image, clients, requests, seconds):
    lock = threading.Lock()
    latencies, statuses = [], []
    sent = [0]
    stop_at = time.time() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if sent[0] >= requests or time.time() > stop_at:
                    break
                sent[0] += 1
            started = time.perf_counter()
            conn.request("POST", "/api/v1/classify", body=image,
                         headers={"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                statuses.append(response.status)
                if response.status == 200:
                    latencies.append(elapsed)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = statuses.count(200)
    busy = statuses.count(503)
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    return {
        "clients": clients,
        "requests": len(statuses),
        "ok": ok,
        "busy_share": busy / max(1, len(statuses)),
        "other": len(statuses) - ok - busy,
        "throughput_per_s": ok / wall,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": quantiles[18],
        "wall_s": wall,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("manifest")
    parser.add_argument("image")
    parser.add_argument("--clients", default="1,2,4,8,16")
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    image = open(args.image, "rb").read()
    proc, port = start_server(args)
    try:
        rows = []
        for clients in [int(c) for c in args.clients.split(",")]:
            rows.append(run_level(port, image, clients, args.requests, args.seconds))
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"workers {args.workers}, queue {args.queue}, tract threads {args.threads}, "
          f"peak RSS {rss:.1f} MiB")
    print("| clients | requests | 200 | 503 share | other | throughput /s | p50 ms | p95 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['busy_share']:.1%} | {r['other']} "
              f"| {r['throughput_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    print(json.dumps({"peak_rss_mib": rss, "levels": rows}))


if __name__ == "__main__":
    main()
