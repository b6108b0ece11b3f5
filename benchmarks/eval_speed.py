"""A greedy HumanEval run: variantlab eval against a plain loop over Llama.create_completion.

Both see the same prompts (the chat template of the file, the same instruction, the reply
begun with a code fence), the same stop sequence, max_tokens, threads and greedy decoding.
The loop is what a harness written directly on llama-cpp-python does: one problem after the
other through the high-level completion call (which keeps the previous prompt's KV cache
when prompts share a prefix). Times cover generation only; model load is left out of both.
Also checks that both give the same pass@1 within a few problems (batched decoding can change
the last bits of a logit, so a greedy choice between two near-equal tokens may differ).

    .venv/bin/python benchmarks/eval_speed.py [MODEL] [--limit N] [--parallel 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from variantlab.engine import EngineSettings, default_threads
from variantlab.eval import EvalPlan, evaluate
from variantlab.eval import humaneval as he
from variantlab.eval.run import chat_tasks, prompt_style
from variantlab.eval.sandbox import run_programs
from variantlab.modelfile import read_model_file
from variantlab.results import ResultsDB
from variantlab.store import Store, default_model_name


def plain_loop(path: str, tasks: list, max_tokens: int, threads: int) -> tuple[float, list[str], int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                          n_batch=2048, n_ubatch=512, verbose=False)
    outs, tokens = [], 0
    t0 = time.perf_counter()
    for t in tasks:
        r = llm.create_completion(t.prompt_text, max_tokens=max_tokens, temperature=0.0, stop=list(t.stops))
        outs.append(r["choices"][0]["text"])
        tokens += r["usage"]["completion_tokens"]
    return time.perf_counter() - t0, outs, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=default_model_name())
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    resolved = Store().resolve(args.model)
    info = read_model_file(resolved.path)
    problems = he.select(args.limit)
    style = prompt_style(resolved.label, info)

    import llama_cpp

    vocab_llm = llama_cpp.Llama(model_path=str(resolved.path), vocab_only=True, verbose=False)
    bos = vocab_llm.detokenize([vocab_llm.token_bos()], special=True).decode()
    eos = vocab_llm.detokenize([vocab_llm.token_eos()], special=True).decode()
    tasks = chat_tasks(problems, style, info, bos, eos)
    del vocab_llm

    loop_s, loop_outs, loop_tokens = plain_loop(str(resolved.path), tasks, args.max_tokens, args.threads)
    loop_outcomes = run_programs([t.to_program(t.to_completion(o)) for t, o in zip(tasks, loop_outs)])
    loop_pass = sum(o.passed for o in loop_outcomes) / len(tasks)

    plan = EvalPlan(limit=args.limit, max_tokens=args.max_tokens, parallel=args.parallel,
                    settings=replace(EngineSettings(), n_threads=args.threads))
    with ResultsDB() as db:
        t0 = time.perf_counter()
        report = evaluate(args.model, plan, db=db)
        ours_total = time.perf_counter() - t0
    result = {
        "model": resolved.label, "problems": len(tasks), "threads": args.threads, "parallel": args.parallel,
        "create_completion_s": loop_s, "create_completion_tokens": loop_tokens, "create_completion_pass@1": loop_pass,
        "variantlab_generation_s": report.generation_s, "variantlab_tokens": report.generated_tokens,
        "variantlab_pass@1": report.pass_at_1, "variantlab_total_s": ours_total,
        "ratio": report.generation_s / loop_s,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")


if __name__ == "__main__":
    main()
