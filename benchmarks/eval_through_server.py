"""eval in-process against eval through llama-server on the same file, task by task.

Starts llama-server (built from the llama.cpp the installed llama-cpp-python vendors) on the model
with 4 slots, then runs each suite in-process and through the server, and prints pass@1 (or exact
match), the tasks whose outcome differs and the wall time of each side.

    python benchmarks/eval_through_server.py [MODEL] [--repo PATH --holes N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.llama_cpp_tools import start_server as start_llama_server  # noqa: E402

from variantlab.eval import EvalPlan, evaluate, infill  # noqa: E402
from variantlab.lock.pins import resolve_for_use  # noqa: E402

PARALLEL = 4


def start_server(model_path: str, alias: str) -> tuple[subprocess.Popen[bytes], str]:
    process, url = start_llama_server(["-m", model_path, "-np", str(PARALLEL), "-c", str(PARALLEL * 4096),
                                       "--no-webui", "--alias", alias])
    return process, f"openai:{url}/v1"


def outcome(report: object) -> dict[str, bool]:
    if hasattr(report, "per_hole"):
        return {r["hole"]: bool(r["exact_match"]) for r in report.per_hole}
    return {t: bool(r["passed"]) for t, r in report.per_task.items()}  # type: ignore[attr-defined]


def score(report: object) -> float:
    if hasattr(report, "by_kind"):
        return float(report.by_kind["all"]["exact_match"])
    return float(report.pass_at_k["pass@1"])  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b-instruct:q4_k_m")
    parser.add_argument("--repo")
    parser.add_argument("--holes", type=int, default=20)
    args = parser.parse_args()
    path = str(resolve_for_use(args.model).path)
    infill_problems = next(n for n in range(1, 165) if len(infill.holes(n)) >= 20)
    plans = {"humaneval (quick subset)": EvalPlan(subset="quick", parallel=PARALLEL),
             f"infill ({len(infill.holes(infill_problems))} holes)": EvalPlan(suite="infill", limit=infill_problems,
                                                                               parallel=PARALLEL, max_tokens=128)}
    if args.repo:
        plans[f"repo ({args.holes} holes)"] = EvalPlan(suite=f"repo:{args.repo}", holes=args.holes, parallel=PARALLEL,
                                                       max_tokens=256)
    server, url = start_server(path, args.model.replace(":", "-"))
    try:
        print("| suite | engine | llama-server | tasks that differ | engine s | server s |")
        print("|---|---|---|---|---|---|")
        for name, plan in plans.items():
            t0 = time.perf_counter()
            local = evaluate(path, plan)
            t1 = time.perf_counter()
            remote = evaluate(url, plan)
            t2 = time.perf_counter()
            a, b = outcome(local), outcome(remote)
            differ = sorted(k for k in a if a[k] != b.get(k))
            print(f"| {name} | {score(local):.3f} | {score(remote):.3f} | {len(differ)} {differ} | {t1 - t0:.0f} | {t2 - t1:.0f} |",
                  flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
