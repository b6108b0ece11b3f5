"""eval with and without prompt-lookup speculation, task by task (issue 20, acceptance 2).

Runs the full greedy HumanEval (or --limit N) of MODEL twice through `evaluate`, the batched way
(--parallel 16, as the eval defaults), first plain and then with --lookup, and prints pass@1 of
each, the tasks whose outcome differs, the generation time of each and the speculation counts.

    python benchmarks/eval_lookup.py [MODEL] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variantlab.eval import EvalPlan, evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b-instruct:q4_k_m")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    reports = {name: evaluate(args.model, EvalPlan(limit=args.limit, lookup=lookup))
               for name, lookup in (("plain", False), ("lookup", True))}
    outcome = {name: {t: r["passed"] for t, r in rep.per_task.items()} for name, rep in reports.items()}  # type: ignore[union-attr]
    differ = sorted(t for t in outcome["plain"] if outcome["plain"][t] != outcome["lookup"].get(t))
    print("| run | pass@1 | generation s | tokens | guesses kept | tokens per pass | results run |")
    print("|---|---|---|---|---|---|---|")
    for name, rep in reports.items():
        kept = f"{rep.accepted_tokens} / {rep.drafted_tokens}" if rep.drafted_tokens else "none"  # type: ignore[union-attr]
        per_pass = f"{rep.generated_tokens / rep.decode_passes:.2f}" if rep.decode_passes else "-"  # type: ignore[union-attr]
        print(f"| {name} | {rep.pass_at_k['pass@1']:.3f} | {rep.generation_s:.0f} | {rep.generated_tokens} | "  # type: ignore[union-attr]
              f"{kept} | {per_pass} | {rep.run_id} |")
    print(f"\ntasks whose outcome differs: {len(differ)} {differ}")


if __name__ == "__main__":
    main()
