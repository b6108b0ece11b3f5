"""Twin fidelity: each real model against its twin, benched in alternating order, in one run.

For every model: the twin is written once (kept for the run, removed at the end), then each
round benches the real file, the twin and the real file again in fresh engine processes
(llama-bench's pp and tg, ``--reps`` each), the twin's place alternating between rounds.
Reports file bytes, the twin/real ratio of pp and tg tokens/s per round and their medians,
peak RSS and load time, and as a control the real/real ratio of the same rounds: how far two
benches of the very same file differ on this machine, the floor under any twin/real figure.

    .venv/bin/python benchmarks/twin_fidelity.py [--rounds 3] [--reps 2] [--json] [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
import statistics

from variantlab.bench import BenchPlan, bench_models
from variantlab.store import Store
from variantlab.twin import make_twin, remove_twin

MODELS = ["qwen2.5-coder-0.5b-instruct:q4_k_m", "qwen2.5-coder-1.5b-instruct:q4_k_m", "smollm2-135m-instruct:q4_1"]


def one_model(name: str, rounds: int, plan: BenchPlan) -> dict[str, object]:
    store = Store()
    real_path = store.resolve(name).path
    twin = make_twin(name, store)
    try:
        rows = []
        for r in range(rounds):
            # real, twin, real (or twin, real, real): the twin is compared with the real bench beside
            # it, the two real benches with each other
            order = [name, twin.name, name] if r % 2 == 0 else [twin.name, name, name]
            results = bench_models(order, plan, store=store)
            copy = next(res for res in results if res.model == twin.name)
            real, again = [res for res in results if res.model == name]
            rows.append({
                "round": r + 1, "order": "real, twin, real" if r % 2 == 0 else "twin, real, real",
                "pp_real": real.prompt_tokens_per_s, "pp_twin": copy.prompt_tokens_per_s, "pp_again": again.prompt_tokens_per_s,
                "tg_real": real.gen_tokens_per_s, "tg_twin": copy.gen_tokens_per_s, "tg_again": again.gen_tokens_per_s,
                "rss_real": real.peak_rss_bytes, "rss_twin": copy.peak_rss_bytes,
                "load_real": real.load_s, "load_twin": copy.load_s,
            })
    finally:
        remove_twin(twin, store)
    ratio = lambda key, of="twin": statistics.median(row[f"{key}_{of}"] / row[f"{key}_real"] for row in rows)  # noqa: E731
    return {"model": name, "bytes_real": real_path.stat().st_size, "bytes_twin": twin.file_bytes,
            "twin_write_s": twin.write_s, "pp_ratio": ratio("pp"), "tg_ratio": ratio("tg"), "rss_ratio": ratio("rss"),
            "pp_control": ratio("pp", "again"), "tg_control": ratio("tg", "again"),
            "load_real_s": statistics.median(row["load_real"] for row in rows),
            "load_twin_s": statistics.median(row["load_twin"] for row in rows), "rounds": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    plan = BenchPlan(n_prompt=512, n_gen=128, reps=args.reps)
    results = [one_model(m, args.rounds, plan) for m in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("| model | bytes real | bytes twin | pp512 twin/real | tg128 twin/real | control pp / tg real/real "
          "| peak RSS twin/real | load s real / twin | per-round tg twin/real |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        per_round = ", ".join(f"{row['tg_twin'] / row['tg_real']:.3f}" for row in r["rounds"])  # type: ignore[union-attr]
        print(f"| {r['model']} | {r['bytes_real']:,} | {r['bytes_twin']:,} | {r['pp_ratio']:.3f} | {r['tg_ratio']:.3f} | "
              f"{r['pp_control']:.3f} / {r['tg_control']:.3f} | "
              f"{r['rss_ratio']:.3f} | {r['load_real_s']:.2f} / {r['load_twin_s']:.2f} | {per_round} |")


if __name__ == "__main__":
    main()
