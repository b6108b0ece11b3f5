"""A twin's generation speed by the size of its random-row pools, for any variant (a catalog one too).

The first twin generator tiled 16 random rows per (type, row length), every tensor alike; the
second tiles about 2 MiB of rows, each tensor from its own row (variantlab.twin). This benches
tg (and pp, if asked) of one twin of each, in fresh engine children, in the order given, with
the model loaded as the ladder loads it (no mmap) or as llama-bench does (mmap).

    .venv/bin/python benchmarks/twin_pools.py codellama:13b-instruct-q4_K_M [--gen 64] [--prompt 0] \
        [--reps 2] [--runs 16:none,2097152:none,16:auto]
"""

from __future__ import annotations

import argparse

import variantlab.twin
from variantlab.bench import BenchPlan, bench_models
from variantlab.engine.settings import EngineSettings
from variantlab.store import Store
from variantlab.twin import make_twin, remove_twin


def one(variant: str, pool_bytes: int, load_mode: str, plan: BenchPlan) -> str:
    variantlab.twin._POOL_BYTES = pool_bytes
    store = Store()
    twin = make_twin(variant, store)
    if twin.reused:  # one made with the other pool size: write this one
        remove_twin(twin, store)
        twin = make_twin(variant, store)
    try:
        mode_plan = BenchPlan(n_prompt=plan.n_prompt, n_gen=plan.n_gen, reps=plan.reps,
                              settings=EngineSettings(n_ctx=max(256, plan.n_prompt + plan.n_gen + 16), load_mode=load_mode))
        result = bench_models([twin.name], mode_plan, store=store)[0]
    finally:
        remove_twin(twin, store)
    pp = f"{result.prompt_tokens_per_s:.2f}" if plan.n_prompt else "-"
    return (f"| {variant} | {pool_bytes} | {load_mode} | {twin.write_s:.1f} | {result.load_s:.1f} | {pp} | "
            f"{result.gen_tokens_per_s:.3f} | {result.peak_rss_bytes / 2**30:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--runs", default="16:none,2097152:none,16:auto,2097152:auto",
                        help="pool bytes:load mode, comma-separated (0 or 16: the first generator's 16 rows)")
    args = parser.parse_args()
    plan = BenchPlan(n_prompt=args.prompt, n_gen=args.gen, reps=args.reps)
    print("| variant | pool bytes | load mode | twin write s | load s | pp tokens/s | tg tokens/s | peak RSS GiB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for run in args.runs.split(","):
        pool, mode = run.split(":")
        print(one(args.variant, int(pool), mode, plan), flush=True)


if __name__ == "__main__":
    main()
