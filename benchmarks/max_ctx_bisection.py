"""`fit --max-ctx` against a bisection over measured runs: the largest context whose real
run stays within the memory budget, found by loading the model (no mmap, as fit counts),
filling the context with a prompt and generating, and reading the child's peak RSS.

The context is filled (prompt = context − 32 tokens) because that is what "fits at this
context" means: the attention mask of a full context is touched only when the context is.
Acceptance: the two answers within one step of 256 tokens.

    .venv/bin/python benchmarks/max_ctx_bisection.py [--model NAME] [--mem GiB ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from variantlab.engine.child import EngineProcess
from variantlab.engine.settings import EngineSettings
from variantlab.fit import FitRequest, max_context, network_for
from variantlab.store import Store, default_model_name

MIB = 1 << 20
STEP = 256


def peak_at(path: str, ctx: int) -> int:
    """Peak RSS of a run at ``ctx`` with the context filled."""
    settings = EngineSettings(n_ctx=ctx, load_mode="none")
    with EngineProcess(path, settings) as engine:
        engine.call("time_prompt", n_prompt=max(ctx - 32, 16), seed=1)
        engine.call("time_generation", n_gen=16)
        return int(engine.call("info")["peak_rss_bytes"])


def measured_max(path: str, budget: int, guess: int, limit: int) -> tuple[int, list[tuple[int, int]]]:
    """The largest multiple of 256 whose measured peak fits ``budget``, bracketed from ``guess``."""
    seen: dict[int, int] = {}

    def fits(k: int) -> bool:
        if k * STEP not in seen:  # each context is measured once
            seen[k * STEP] = peak_at(path, k * STEP)
            print(f"  ctx {k * STEP}: peak {seen[k * STEP] / MIB:.1f} MiB", file=sys.stderr, flush=True)
        return seen[k * STEP] <= budget

    lo, hi = guess // STEP, guess // STEP + 1
    width = 1
    while lo > 1 and not fits(lo):  # widen downwards until something fits
        hi, lo, width = lo, max(1, lo - width), width * 2
    width = 1
    while hi <= limit // STEP and fits(hi):  # widen upwards until something does not
        lo, hi, width = hi, hi + width, width * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo * STEP, sorted(seen.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model_name())
    parser.add_argument("--mem", nargs="+", type=float, default=[0.70, 0.85])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    store = Store()
    net = network_for(args.model, store)
    path = str(store.resolve(args.model).path)
    rows = []
    for gib in args.mem:
        budget = int(gib * (1 << 30))
        est = max_context(net, FitRequest(ram_bytes=budget, vram_bytes=0))
        print(f"{args.model} at {gib} GiB: fit --max-ctx says {est.ctx}", file=sys.stderr, flush=True)
        found, seen = measured_max(path, budget, est.ctx, net.max_ctx or est.ctx)
        rows.append({"model": args.model, "budget_gib": gib, "fit_max_ctx": est.ctx, "measured_max_ctx": found,
                     "steps_apart": (est.ctx - found) // STEP, "runs": seen})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| model | budget | fit --max-ctx | measured (bisection) | steps of 256 apart | runs (ctx: peak RSS) |")
        print("|---|---:|---:|---:|---:|---|")
        for r in rows:
            runs = ", ".join(f"{c}: {p / MIB:.0f} MiB" for c, p in r["runs"])
            print(f"| {r['model']} | {r['budget_gib']} GiB | {r['fit_max_ctx']} | {r['measured_max_ctx']} | {r['steps_apart']:+d} | {runs} |")
    return 0 if all(abs(r["steps_apart"]) <= 1 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
