"""What fit does not count yet: the engine child's resident memory at each stage of a run
against fit's components, so a missing term shows as a residual and its growth with the context.

For each context, one engine child loads the model without mmap, fills the context with a
prompt (context − 32 tokens) and generates 16 tokens; VmRSS and VmHWM are read from
/proc/<child>/status after each stage. Residuals (MiB): after load, against weights + KV cache
+ overhead; at the end, against fit's total.

    .venv/bin/python benchmarks/fit_residuals.py [--model NAME] [--ctx N ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from variantlab.engine.child import EngineProcess
from variantlab.engine.settings import EngineSettings
from variantlab.fit import FitRequest, estimate, network_for
from variantlab.store import Store, default_model_name

MIB = 1 << 20


def memory_of(pid: int) -> dict[str, float]:
    """Current and peak resident memory of process ``pid``, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024 / MIB
    return out


def residuals(model: str, ctx: int, store: Store) -> dict[str, float]:
    """One run at ``ctx``: fit's components and what the child held after each stage."""
    est = estimate(network_for(model, store), FitRequest(ctx=ctx, ram_bytes=1 << 40, vram_bytes=0))
    at_load = (est.weights_bytes + est.kv_cache_bytes + est.overhead_bytes) / MIB
    with EngineProcess(str(store.resolve(model).path), EngineSettings(n_ctx=ctx, load_mode="none")) as engine:
        pid = engine._proc.pid
        loaded = memory_of(pid)
        engine.call("time_prompt", n_prompt=max(ctx - 32, 16), seed=1)
        engine.call("time_generation", n_gen=16)
        end = memory_of(pid)
    return {"ctx": ctx, "fit_total": est.total_bytes / MIB, "fit_compute": est.compute_bytes / MIB,
            "fit_overhead": est.overhead_bytes / MIB, "rss_after_load": loaded["VmRSS"], "peak": end["VmHWM"],
            "residual_after_load": loaded["VmHWM"] - at_load, "residual_at_peak": end["VmHWM"] - est.total_bytes / MIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model_name())
    parser.add_argument("--ctx", nargs="+", type=int, default=[1024, 4096, 8192])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    store = Store()
    rows = []
    for ctx in args.ctx:
        rows.append(residuals(args.model, ctx, store))
        print(f"  ctx {ctx}: residual at peak {rows[-1]['residual_at_peak']:+.1f} MiB", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.model}\n\n| ctx | fit total MiB | peak MiB | residual after load | residual at peak |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['ctx']} | {r['fit_total']:.1f} | {r['peak']:.1f} | {r['residual_after_load']:+.1f} | {r['residual_at_peak']:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
