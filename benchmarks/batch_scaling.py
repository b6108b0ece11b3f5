"""How much decoding several sequences together gains on this machine: llama.cpp's own
llama-batched-bench against variantlab's engine, same file, same threads, same sizes.

For each batch size B (llama-batched-bench, then variantlab, interleaved), B sequences of a
``--prompt``-token prompt each generate ``--gen`` tokens together, one token per sequence per
llama_decode call. llama-batched-bench feeds fixed tokens; variantlab samples each token
(greedy) and detokenizes it, as eval and serve do. Its prompts are counting sequences
("17, 18, 19, ...") that the model continues without ever ending, so every batch keeps B
sequences to the last token, as llama-batched-bench's does. The figure is aggregate generation tokens/s and its ratio to B = 1: the most that
`serve --parallel B` or `eval --parallel B` can gain over one sequence at a time.

    .venv/bin/python benchmarks/batch_scaling.py [MODEL] [--batches 1,2,4,8,16] [--prompt 32] [--gen 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_tools import ensure_tools  # noqa: E402
from variantlab.engine import EngineProcess, EngineSettings, default_threads  # noqa: E402
from variantlab.store import Store, default_model_name  # noqa: E402


def batched_bench(binary: Path, model: str, b: int, n_prompt: int, n_gen: int, threads: int) -> float:
    cmd = [str(binary), "-m", model, "-c", str(b * (n_prompt + n_gen)), "-b", "2048", "-ub", "512", "-npp", str(n_prompt),
           "-ntg", str(n_gen), "-npl", str(b), "-t", str(threads), "--output-format", "jsonl"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    (row,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return float(row["speed_tg"])


def engine_rate(model: str, b: int, n_prompt: int, n_gen: int, threads: int) -> float:
    settings = EngineSettings(n_ctx=b * (n_prompt + n_gen), n_seq_max=b, n_threads=threads)
    with EngineProcess(model, settings) as engine:
        prompts = [engine.call("tokenize", text=", ".join(str(k) for k in range(17 * i, 17 * i + n_prompt)))[:n_prompt]
                   for i in range(b)]
        engine.call("generate_batch", prompts=prompts[:1], max_tokens=4)  # warm-up
        gens = engine.call("generate_batch", prompts=prompts, max_tokens=n_gen)
    if any(len(g["tokens"]) < n_gen for g in gens):
        raise SystemExit("a sequence ended early; the batch would not stay full")
    return sum(len(g["tokens"]) - 1 for g in gens) / gens[0]["gen_s"]  # the first token comes with the prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=default_model_name())
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    path = str(Store().resolve(args.model).path)
    binary = ensure_tools() / "llama-batched-bench"
    lb, vl = {}, {}
    for b in batches:
        print(f"batch {b}", file=sys.stderr, flush=True)
        lb[b] = batched_bench(binary, path, b, args.prompt, args.gen, args.threads)
        vl[b] = engine_rate(path, b, args.prompt, args.gen, args.threads)
    rows = [{"batch": b, "llama_batched_bench_tg_tokens_per_s": lb[b], "llama_batched_bench_gain": lb[b] / lb[batches[0]],
             "variantlab_tg_tokens_per_s": vl[b], "variantlab_gain": vl[b] / vl[batches[0]]} for b in batches]
    if args.json:
        print(json.dumps({"model": args.model, "threads": args.threads, "prompt": args.prompt, "gen": args.gen, "rows": rows}, indent=2))
        return
    print(f"model {args.model}, {args.threads} threads, prompt {args.prompt}, {args.gen} generated tokens per sequence\n")
    print(f"| sequences | llama-batched-bench t/s | gain over {batches[0]} | variantlab t/s | gain over {batches[0]} |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['llama_batched_bench_tg_tokens_per_s']:.1f} | {r['llama_batched_bench_gain']:.2f} | "
              f"{r['variantlab_tg_tokens_per_s']:.1f} | {r['variantlab_gain']:.2f} |")


if __name__ == "__main__":
    main()
