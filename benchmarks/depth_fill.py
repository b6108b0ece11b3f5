"""A written depth against a decoded one: the same speed at depth, without decoding the depth.

For each model and each round, two fresh engine children at the same context: one decodes the
depth (llama-bench's ``-d``, as every real file is benched), one writes its cells as cache
state (engine/kv_state.py, as twins are benched); the order alternates between rounds. Each
child times pp and tg at that depth (``--reps`` each, best kept) and reports its peak RSS.
Reports per model the time to fill the depth, the written/decoded ratio of pp and tg tokens/s
per round and their medians, and the peaks.

    .venv/bin/python benchmarks/depth_fill.py [--depth 3584] [--rounds 3] [--reps 2] [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from variantlab.engine.child import EngineProcess
from variantlab.engine.settings import EngineSettings
from variantlab.store import Store

MODELS = ["qwen2.5-coder-0.5b-instruct:q4_k_m", "qwen2.5-coder-1.5b-instruct:q4_k_m"]
N_PROMPT, N_GEN = 512, 128


def one_run(path: str, depth: int, written: bool, reps: int) -> dict[str, float | str]:
    """One child: fill the depth (timed), then ``reps`` of pp and tg at it."""
    with EngineProcess(path, EngineSettings(n_ctx=depth + N_PROMPT + N_GEN, load_mode="none")) as engine:
        t0 = time.perf_counter()
        engine.call("time_generation", n_gen=1, depth=depth, synthetic_depth=written)  # fills, and warms up
        fill_s = time.perf_counter() - t0
        pp = min(engine.call("time_prompt", n_prompt=N_PROMPT, seed=r + 1, depth=depth, synthetic_depth=written)[0]
                 for r in range(reps))
        tg = min(engine.call("time_generation", n_gen=N_GEN, depth=depth, synthetic_depth=written) for _ in range(reps))
        info = engine.call("info")
    return {"fill_s": fill_s, "pp": N_PROMPT / pp, "tg": N_GEN / tg, "peak_mib": info["peak_rss_bytes"] / 2**20,
            "fill": info["depth_fill"]}


def one_model(name: str, depth: int, rounds: int, reps: int) -> dict[str, object]:
    path = str(Store().resolve(name).path)
    rows = []
    for r in range(rounds):
        order = [False, True] if r % 2 == 0 else [True, False]
        runs = {written: one_run(path, depth, written, reps) for written in order}
        rows.append({"decoded": runs[False], "written": runs[True]})
    med = lambda key: statistics.median(row["written"][key] / row["decoded"][key] for row in rows)  # noqa: E731
    return {"model": name, "depth": depth, "pp_ratio": med("pp"), "tg_ratio": med("tg"), "peak_ratio": med("peak_mib"),
            "fill_s_decoded": statistics.median(row["decoded"]["fill_s"] for row in rows),
            "fill_s_written": statistics.median(row["written"]["fill_s"] for row in rows), "rounds": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--depth", type=int, default=3584)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [one_model(m, args.depth, args.rounds, args.reps) for m in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"| model | depth | fill s decoded / written | pp{N_PROMPT} written/decoded | tg{N_GEN} written/decoded "
          "| peak RSS written/decoded | per-round pp / tg | fill used |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for r in results:
        per_round = ", ".join(f"{row['written']['pp'] / row['decoded']['pp']:.3f} / {row['written']['tg'] / row['decoded']['tg']:.3f}"
                              for row in r["rounds"])  # type: ignore[attr-defined]
        used = {row["written"]["fill"] for row in r["rounds"]}  # type: ignore[attr-defined]
        print(f"| {r['model']} | {r['depth']} | {r['fill_s_decoded']:.1f} / {r['fill_s_written']:.2f} | {r['pp_ratio']:.3f} | "
              f"{r['tg_ratio']:.3f} | {r['peak_ratio']:.3f} | {per_round} | {', '.join(sorted(used))} |")


if __name__ == "__main__":
    main()
