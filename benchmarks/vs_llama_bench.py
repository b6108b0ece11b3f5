"""variantlab bench side by side with llama-bench, same llama.cpp source, same file, same settings.

Rounds are interleaved (llama-bench, then variantlab, for each test) so drift on a noisy
machine hits both. Both use llama-bench's defaults: n_batch 2048, n_ubatch 512, flash
attention auto, context = prompt + generated tokens, one warm-up; threads = physical cores.
Ratios are variantlab / llama-bench on the medians of all per-repetition samples.

    .venv/bin/python benchmarks/vs_llama_bench.py [MODEL] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_tools import ensure_tools  # noqa: E402
from variantlab.bench import BenchPlan, bench_models  # noqa: E402
from variantlab.engine import EngineSettings, default_threads  # noqa: E402
from variantlab.results import ResultsDB  # noqa: E402
from variantlab.store import Store, default_model_name  # noqa: E402

# (label, n_prompt, n_gen, reps)
TESTS = [("pp512", 512, 0, 5), ("tg128", 0, 128, 5), ("tg1024", 0, 1024, 2)]


def llama_bench(binary: Path, model: str, n_prompt: int, n_gen: int, reps: int, threads: int) -> list[float]:
    cmd = [str(binary), "-m", model, "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps), "-t", str(threads), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    (row,) = json.loads(out)
    return [float(x) for x in row["samples_ts"]]


def ours(model: str, n_prompt: int, n_gen: int, reps: int, threads: int, db: ResultsDB) -> list[float]:
    plan = BenchPlan(n_prompt=n_prompt, n_gen=n_gen, reps=reps, settings=EngineSettings(n_threads=threads))
    (result,) = bench_models([model], plan, db=db)
    if not result.ok or result.run_id is None:
        raise SystemExit(f"variantlab bench failed: {result.error}")
    run = db.get(result.run_id)
    key = "prompt_tokens_per_s" if n_prompt else "gen_tokens_per_s"
    return list(run.metrics[key].samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=default_model_name())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    path = str(Store().resolve(args.model).path)
    binary = ensure_tools() / "llama-bench"
    samples: dict[str, dict[str, list[float]]] = {t[0]: {"llama-bench": [], "variantlab": []} for t in TESTS}
    with tempfile.TemporaryDirectory() as tmp, ResultsDB(Path(tmp) / "results.sqlite") as db:
        for rnd in range(args.rounds):
            for label, n_prompt, n_gen, reps in TESTS:
                print(f"round {rnd + 1}/{args.rounds} {label}", file=sys.stderr, flush=True)
                samples[label]["llama-bench"] += llama_bench(binary, path, n_prompt, n_gen, reps, args.threads)
                samples[label]["variantlab"] += ours(args.model, n_prompt, n_gen, reps, args.threads, db)
    rows = []
    for label, _, _, _ in TESTS:
        lb = statistics.median(samples[label]["llama-bench"])
        vl = statistics.median(samples[label]["variantlab"])
        rows.append({"test": label, "llama_bench_tokens_per_s": lb, "variantlab_tokens_per_s": vl, "ratio": vl / lb,
                     "n_llama_bench": len(samples[label]["llama-bench"]), "n_variantlab": len(samples[label]["variantlab"])})
    tg128 = next(r for r in rows if r["test"] == "tg128")["variantlab_tokens_per_s"]
    tg1024 = next(r for r in rows if r["test"] == "tg1024")["variantlab_tokens_per_s"]
    report = {"model": args.model, "threads": args.threads, "rounds": args.rounds, "tests": rows,
              "variantlab_tg1024_over_tg128": tg1024 / tg128}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model {args.model}, {args.threads} threads, {args.rounds} interleaved rounds\n")
    print("| test | llama-bench t/s | variantlab t/s | ratio | samples (lb / vl) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['test']} | {r['llama_bench_tokens_per_s']:.2f} | {r['variantlab_tokens_per_s']:.2f} | "
              f"{r['ratio']:.3f} | {r['n_llama_bench']} / {r['n_variantlab']} |")
    print(f"\nvariantlab tg1024 / tg128 = {report['variantlab_tg1024_over_tg128']:.3f}")


if __name__ == "__main__":
    main()
