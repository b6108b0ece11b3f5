"""Speculative decoding, single stream: variantlab's engine beside llama-server, prompt by prompt.

The first N HumanEval prompts exactly as the chat suite builds them for the target (its chat
template, the reply begun with the code fence), each generated greedily with the suite's stop
strings and token limit by six generators, interleaved prompt by prompt so that machine noise
falls on all of them alike:

- variantlab's engine (one child process, target and draft loaded): plain, prompt lookup, draft model;
- llama-server (built from the vendored llama.cpp, one slot, the same threads), three servers
  idle but for the request at hand: plain, ``--spec-type ngram-simple``, ``--model-draft`` (draft-simple).

Prints tokens/s (tokens after the first ÷ the seconds after it; llama-server's own
``predicted_per_second``), the speed-up of each against its own plain run, guesses kept, tokens per
target pass, and whether every output is token for token the plain greedy one. Then the cost of a
k-token verification pass against a 1-token pass, measured on the target in the same context size.

    python benchmarks/speculative.py [--target MODEL] [--draft MODEL] [--prompts 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.llama_cpp_tools import start_server as start_llama_server  # noqa: E402

from variantlab.engine import EngineProcess, EngineSettings  # noqa: E402
from variantlab.eval import humaneval as he  # noqa: E402
from variantlab.eval.run import EvalPlan, _tokens, chat_tasks, prompt_style  # noqa: E402
from variantlab.lock.pins import resolve_for_use  # noqa: E402
from variantlab.modelfile import read_model_file  # noqa: E402

THREADS = 2
CTX = 4096


def start_server(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    return start_llama_server([*args, "-np", "1", "-c", str(CTX), "-t", str(THREADS), "--no-webui"])


def ask_server(url: str, prompt: list[int], stops: list[str], max_tokens: int) -> dict[str, float | list[int]]:
    body = {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "top_k": 1, "stop": stops,
            "cache_prompt": False, "return_tokens": True, "samplers": ["top_k"]}
    r = httpx.post(f"{url}/completion", json=body, timeout=600).json()
    t = r["timings"]
    return {"tokens": r["tokens"], "tps": t["predicted_per_second"], "drafted": t.get("draft_n", 0),
            "accepted": t.get("draft_n_accepted", 0), "n": t["predicted_n"]}


def ask_engine(engine: EngineProcess, prompt: list[int], stops: list[str], max_tokens: int, speculate: str) -> dict:
    g = engine.call("generate", prompt=prompt, max_tokens=max_tokens, stop=stops, sampling={"speculate": speculate})
    return {"tokens": g["tokens"], "tps": (len(g["tokens"]) - 1) / g["gen_s"] if g["gen_s"] else 0.0,
            "drafted": g["drafted"], "accepted": g["accepted"], "passes": g["passes"], "n": len(g["tokens"])}


def pass_costs(engine_path: str) -> dict[int, float]:
    """Seconds of one target pass of k tokens (k = 1 … 16) after a 200-token prompt, best of 3 × 5."""
    import llama_cpp as L

    from variantlab.engine.llama import LlamaEngine  # in this process: a measurement, not a variantlab run

    e = LlamaEngine(engine_path, EngineSettings(n_ctx=CTX, n_threads=THREADS))
    try:
        e.decode_prompt(e.random_tokens(200, 1))
        memory = L.llama_get_memory(e.ctx)
        found: dict[int, list[float]] = {}
        for _ in range(3):
            for k in (1, 2, 3, 4, 5, 6, 8, 12, 16):
                t0 = time.perf_counter()
                for _ in range(5):
                    e._decode([(100 + j, 200 + j, 0, True) for j in range(k)])
                    L.llama_synchronize(e.ctx)
                    L.llama_memory_seq_rm(memory, 0, 200, -1)
                found.setdefault(k, []).append((time.perf_counter() - t0) / 5)
        return {k: min(v) for k, v in found.items()}
    finally:
        e.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct:q4_k_m")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b-instruct:q4_k_m")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--out", default="/tmp/speculative.json")
    args = parser.parse_args()
    target, draft = str(resolve_for_use(args.target).path), str(resolve_for_use(args.draft).path)
    plan = EvalPlan(limit=args.prompts)
    info = read_model_file(target)
    style = prompt_style(args.target, info)
    servers = {name: start_server(cmd) for name, cmd in {
        "server plain": ["-m", target],
        "server lookup": ["-m", target, "--spec-type", "ngram-simple"],
        "server draft": ["-m", target, "--model-draft", draft, "--spec-type", "draft-simple", "-td", str(THREADS)],
    }.items()}
    rows: dict[str, list[dict]] = {k: [] for k in ("engine plain", "engine lookup", "engine draft", *servers)}
    try:
        with EngineProcess(target, EngineSettings(n_ctx=CTX, n_threads=THREADS, draft_model=draft)) as engine:
            specials = engine.call("special_tokens")
            tasks = chat_tasks(he.select(plan.limit), style, info, specials["bos"], specials["eos"])
            prompts = [_tokens(engine, t, add_special=style != "chat") for t in tasks]
            ask_engine(engine, prompts[0], list(tasks[0].stops), 16, "")  # warm-up
            for i, (task, prompt) in enumerate(zip(tasks, prompts)):
                stops = list(task.stops)
                for mode in ("plain", "lookup", "draft"):
                    rows[f"engine {mode}"].append(ask_engine(engine, prompt, stops, plan.max_tokens, "" if mode == "plain" else mode))
                for name, (_, url) in servers.items():
                    rows[name].append(ask_server(url, prompt, stops, plan.max_tokens))
                print(f"{i + 1}/{len(tasks)} {task.task_id}: " + ", ".join(f"{k} {v[-1]['tps']:.1f}" for k, v in rows.items()),
                      flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
    report(rows)
    costs = pass_costs(target)
    print("\npass cost of the target (k tokens in one pass ÷ 1 token):",
          ", ".join(f"{k}: {v * 1000:.0f} ms ×{v / costs[1]:.2f}" for k, v in costs.items()))
    Path(args.out).write_text(json.dumps({"rows": rows, "pass_costs": costs}))


def report(rows: dict[str, list[dict]]) -> None:
    print("\n| generator | tokens/s (median) | speed-up vs its plain (median of per-prompt ratios) | tokens/s (total) |"
          " guesses kept | tokens per target pass | outputs identical to its plain |")
    print("|---|---|---|---|---|---|---|")
    for name, got in rows.items():
        plain = rows[name.split()[0] + " plain"]
        ratios = [g["tps"] / p["tps"] for g, p in zip(got, plain) if p["tps"]]
        same = sum(g["tokens"] == p["tokens"] for g, p in zip(got, plain))
        same_as_engine = sum(g["tokens"] == p["tokens"] for g, p in zip(got, rows["engine plain"]))
        drafted, accepted = sum(g["drafted"] for g in got), sum(g["accepted"] for g in got)
        passes = sum(g.get("passes", 0) for g in got)
        tokens = sum(g["n"] for g in got)
        total_tps = tokens / sum(g["n"] / g["tps"] for g in got if g["tps"])
        kept = f"{accepted} / {drafted} ({accepted / drafted:.0%})" if drafted else "none"
        per_pass = f"{(tokens - len(got)) / passes:.2f}" if passes else ("-" if name.startswith("server") else "1.00")
        print(f"| {name} | {statistics.median(g['tps'] for g in got):.1f} | ×{statistics.median(ratios):.2f} | {total_tps:.1f} | "
              f"{kept} | {per_pass} | {same} / {len(got)} (as the engine's plain: {same_as_engine}) |")


if __name__ == "__main__":
    main()
