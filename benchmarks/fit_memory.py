"""Estimated vs measured memory: `variantlab fit` against the peak resident memory of real runs.

For each model and context, one engine child process (the engine every command uses) loads
the model without mmap, so every weight is resident once, processes a 512-token prompt and
generates 128 tokens; its peak RSS is compared with fit's total for the same settings.
Acceptance: |estimate - measured| <= max(5 %, 64 MiB).

A name that is not in the store but in the catalog (qwen3-coder:30b-instruct-q3_K_M) is
measured on its twin (twin.py: the variant's header and tensor table with random weights,
written before and deleted after), so architectures nobody can download here are checked
against a real llama.cpp load.

    .venv/bin/python benchmarks/fit_memory.py [--models NAME ...] [--ctx N ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from variantlab.engine.child import EngineProcess
from variantlab.engine.settings import EngineSettings
from variantlab.fit import FitRequest, Network, estimate, network_for
from variantlab.store import Store
from variantlab.twin import file_or_twin

MIB = 1 << 20
DEFAULT_MODELS = ["qwen2.5-coder-0.5b-instruct:q4_k_m", "qwen2.5-coder-1.5b-instruct:q4_k_m"]
DEFAULT_CTX = [2048, 8192, 32768]


def measure(path: str, ctx: int) -> int:
    settings = EngineSettings(n_ctx=ctx, load_mode="none")
    with EngineProcess(path, settings) as engine:
        engine.call("time_prompt", n_prompt=512, seed=1)
        engine.call("time_generation", n_gen=128)
        return int(engine.call("info")["peak_rss_bytes"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--ctx", nargs="+", type=int, default=DEFAULT_CTX)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    store = Store()
    rows = []
    for name in args.models:
        net = network_for(name, store)
        with file_or_twin(name, store=store) as (path, how):
            rows += _measure_model(name, how, net, str(path), args.ctx)
    _print(rows, args.json)
    return 0 if all(r["within_tolerance"] for r in rows) else 1


def _measure_model(name: str, how: str, net: Network, path: str, contexts: list[int]) -> list[dict]:
    rows = []
    for ctx in contexts:
        est = estimate(net, FitRequest(ctx=ctx, ram_bytes=1 << 40, vram_bytes=0))
        measured = measure(path, ctx)
        diff = est.total_bytes - measured
        allowed = max(0.05 * measured, 64 * MIB)
        rows.append({"model": name, "measured_on": how, "ctx": ctx, "cache_layers": est.kv_layers,
                     "estimated_bytes": est.total_bytes, "measured_peak_rss_bytes": measured,
                     "difference_bytes": diff, "difference": diff / measured, "within_tolerance": abs(diff) <= allowed,
                     "weights_bytes": est.weights_bytes, "kv_cache_bytes": est.kv_cache_bytes,
                     "compute_bytes": est.compute_bytes, "overhead_bytes": est.overhead_bytes})
        print(f"{name} ({how}) ctx {ctx}: estimated {est.total_bytes / MIB:.0f} MiB, measured {measured / MIB:.0f} MiB",
              file=sys.stderr, flush=True)
    return rows


def _print(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print("| model | measured on | cache layers | ctx | weights | KV cache | compute | overhead | estimated total "
              "| measured peak RSS | difference | within max(5 %, 64 MiB) |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            layers = ", ".join(f"{n} {k}" for k, n in r["cache_layers"].items())
            print(f"| {r['model']} | {r['measured_on']} | {layers} | {r['ctx']} | {r['weights_bytes'] / MIB:.0f} MiB | {r['kv_cache_bytes'] / MIB:.0f} MiB | "
                  f"{r['compute_bytes'] / MIB:.0f} MiB | {r['overhead_bytes'] / MIB:.0f} MiB | {r['estimated_bytes'] / MIB:.0f} MiB | "
                  f"{r['measured_peak_rss_bytes'] / MIB:.0f} MiB | {r['difference_bytes'] / MIB:+.0f} MiB ({r['difference']:+.1%}) | "
                  f"{'yes' if r['within_tolerance'] else 'NO'} |")


if __name__ == "__main__":
    sys.exit(main())
