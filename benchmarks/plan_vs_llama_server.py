"""`fit --flags llama-server` against llama-server itself: start the command fit prints (the
binary built from the llama.cpp that llama-cpp-python vendors, see llama_cpp_tools.py), read
the buffers llama.cpp reports in its load log, and compare them with fit's components.

Weights and KV cache must agree (both are allocations, not estimates of use); the compute
buffer llama.cpp *reserves* is larger than the activations fit counts for a CPU run (it holds
a micro-batch of logits that a run asking for one row never touches: memory.toml), so it is
reported beside fit's figure, not compared. A name the store does not hold but the catalog
does is run on its twin.

    .venv/bin/python benchmarks/plan_vs_llama_server.py [--models NAME ...] [--ctx N ...] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_tools import ensure_tools  # noqa: E402
from variantlab.fit import FitRequest, command_line, estimate, network_for  # noqa: E402
from variantlab.store import Store  # noqa: E402
from variantlab.twin import file_or_twin  # noqa: E402

MIB = 1 << 20
BUFFER = re.compile(r"(?P<device>[\w_]+)\s+(?P<kind>KV|RS|model|compute|output) buffer size =\s+(?P<mib>[\d.]+) MiB")
DEFAULT_MODELS = ["qwen2.5-coder-0.5b-instruct:q4_k_m", "gemma-3-270m:q4_k_m", "deepseek-coder-v2:16b-instruct-q4_K_M"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_server(argv: list[str], timeout_s: float = 600) -> dict[str, float]:
    """Start llama-server, wait until it listens, return the MiB of each buffer kind it reported."""
    proc = subprocess.Popen(argv + ["--host", "127.0.0.1", "--port", str(_free_port()), "-lv", "4"],  # -lv 4: the load log
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: dict[str, float] = {}
    log: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            for m in BUFFER.finditer(line):
                found[m["kind"]] = found.get(m["kind"], 0.0) + float(m["mib"])
            if "listening on http" in line:
                return found
            if time.monotonic() > deadline:
                break
        raise RuntimeError("llama-server did not come up:\n" + "".join(log[-30:]))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--ctx", nargs="+", type=int, default=[4096, 32768])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = str(ensure_tools() / "llama-server")
    store = Store()
    rows = []
    for name in args.models:
        net = network_for(name, store)
        with file_or_twin(name, store=store) as (path, how):
            for ctx in args.ctx:
                est = estimate(net, FitRequest(ctx=ctx, ram_bytes=1 << 40, vram_bytes=0))
                argv = shlex.split(command_line(est, str(path), "llama-server"))
                reported = run_server([server, *argv[1:]])
                kv = reported.get("KV", 0.0) + reported.get("RS", 0.0)
                rows.append({
                    "model": name, "run_on": how, "ctx": ctx, "command": " ".join(["llama-server", *argv[1:]]),
                    "fit_weights_mib": est.weights_bytes / MIB, "server_model_mib": reported.get("model", 0.0),
                    "fit_kv_mib": est.kv_cache_bytes / MIB, "server_kv_mib": kv,
                    "fit_compute_mib": est.compute_bytes / MIB, "server_compute_reserved_mib": reported.get("compute", 0.0),
                    "server_output_mib": reported.get("output", 0.0),
                })
                print(f"{name} ({how}) ctx {ctx}: {reported}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| model | run on | ctx | weights: fit / llama-server | KV cache: fit / llama-server | compute: fit (touched) / llama-server (reserved) |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['model']} | {r['run_on']} | {r['ctx']} | {r['fit_weights_mib']:.1f} / {r['server_model_mib']:.1f} MiB "
                  f"| {r['fit_kv_mib']:.1f} / {r['server_kv_mib']:.1f} MiB "
                  f"| {r['fit_compute_mib']:.1f} / {r['server_compute_reserved_mib']:.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
