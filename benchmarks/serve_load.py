"""Load on `variantlab serve`: many concurrent clients, a bounded number of requests.

For each --parallel setting a fresh server is started on loopback with the default model;
``--clients`` clients then send ``--requests`` completions in all (``--max-tokens`` each,
greedy, each prompt different) and the script reports aggregate generation throughput
(completion tokens ÷ wall time), latency percentiles and errors. No request may be lost: every
one must come back 200 with its usage block.

    .venv/bin/python benchmarks/serve_load.py [--parallel 1,4] [--clients 8] [--requests 32] [--max-tokens 64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from variantlab.store import default_model_name

VARIANTLAB = str(Path(sys.executable).with_name("variantlab"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(parallel: int, ctx: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([VARIANTLAB, "serve", default_model_name(), "--port", str(port), "--parallel", str(parallel),
                             "--ctx", str(ctx)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "VARIANTLAB_API_KEY": ""})
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.2)
    raise SystemExit("the server did not answer within 120 s")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def load(base: str, clients: int, requests: int, max_tokens: int) -> dict[str, float | int]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    latencies: list[float] = []
    tokens = [0]
    errors: list[str] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {"prompt": f"# Python function number {i}: compute the {i}th triangular number\ndef triangular_{i}(n):\n",
                    "max_tokens": max_tokens, "temperature": 0}
            started = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/completions", json=body)
                if r.status_code != 200 or not r.json().get("usage"):
                    errors.append(f"{r.status_code}: {r.text[:100]}")
                    continue
                tokens[0] += r.json()["usage"]["completion_tokens"]
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))

    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"requests": requests, "ok": len(latencies), "errors": len(errors), "completion_tokens": tokens[0],
            "wall_s": wall, "throughput_tokens_per_s": tokens[0] / wall,
            "latency_p50_s": percentile(latencies, 50) if latencies else None,
            "latency_p90_s": percentile(latencies, 90) if latencies else None,
            "latency_p99_s": percentile(latencies, 99) if latencies else None,
            "latency_mean_s": statistics.fmean(latencies) if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", default="1,4")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for parallel in [int(p) for p in args.parallel.split(",")]:
        proc, base = start_server(parallel, args.ctx)
        try:
            asyncio.run(load(base, 2, 4, 8))  # warm-up, not counted
            rows.append({"parallel": parallel, **asyncio.run(load(base, args.clients, args.requests, args.max_tokens))})
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    base_tps = rows[0]["throughput_tokens_per_s"]
    for r in rows:
        r["throughput_ratio"] = r["throughput_tokens_per_s"] / base_tps
    if args.json:
        print(json.dumps({"clients": args.clients, "max_tokens": args.max_tokens, "rows": rows}, indent=2))
        return
    print(f"{args.clients} clients, {args.requests} requests of {args.max_tokens} tokens, default model")
    print(f"{'parallel':>8} {'ok':>4} {'errors':>6} {'tokens/s':>9} {'ratio':>6} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7}")
    for r in rows:
        print(f"{r['parallel']:>8} {r['ok']:>4} {r['errors']:>6} {r['throughput_tokens_per_s']:9.1f} {r['throughput_ratio']:6.2f} "
              f"{r['latency_p50_s']:7.2f} {r['latency_p90_s']:7.2f} {r['latency_p99_s']:7.2f}")


if __name__ == "__main__":
    main()
