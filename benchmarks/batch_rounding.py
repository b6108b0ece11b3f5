"""Does a multi-row pass give a sequence the same logits as one-row passes? (issue 20, acceptance 2)

Speculative verification decodes k guessed tokens of one sequence in one pass; plain greedy
decodes them one pass each. Greedy output under speculation is the plain output only if both
give bit-identical logits. This decodes a 300-token random prompt, then 8 more tokens one at a
time (the reference), and compares bit for bit:

- the same 8 tokens in one pass of k rows (k = 2..8), as a verification pass does;
- the 8 tokens one at a time, each beside n - 1 one-row neighbours (other sequences), as a
  batched eval does;

for each setting llama.cpp's public API offers that touches the CPU kernels' batch shape: weight
repacking (``use_extra_bufts``) on or off, flash attention on or off.

    .venv/bin/python benchmarks/batch_rounding.py [MODEL]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from variantlab.store import Store

PROMPT, CONT, SEQS = 300, 8, 8


def run(path: str, repack: bool, flash_attn: bool) -> str:
    import llama_cpp as L

    params = L.llama_model_default_params()
    params.use_extra_bufts = repack
    model = L.llama_model_load_from_file(path.encode(), params)
    cparams = L.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = 8192, 512, 512, SEQS
    cparams.n_threads = cparams.n_threads_batch = 2
    cparams.flash_attn_type = 1 if flash_attn else 0
    cparams.kv_unified = False
    ctx = L.llama_init_from_model(model, cparams)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    rng = np.random.default_rng(0)
    prompt = [int(x) for x in rng.integers(100, 20000, PROMPT)]
    cont = [int(x) for x in rng.integers(100, 20000, CONT)]
    memory = L.llama_get_memory(ctx)

    def decode(entries: list[tuple[int, int, int, bool]]) -> Any:
        batch = L.llama_batch_init(len(entries), 0, 1)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(entries)
        assert L.llama_decode(ctx, batch) == 0
        L.llama_batch_free(batch)
        return np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(sum(e[3] for e in entries), n_vocab)).copy()

    def reset() -> None:
        for s in range(SEQS):
            L.llama_memory_seq_rm(memory, s, PROMPT, -1)

    for s in range(SEQS):
        decode([(t, i, s, False) for i, t in enumerate(prompt)])
    one = np.array([decode([(t, PROMPT + j, 0, True)])[0] for j, t in enumerate(cont)])
    same = []
    for k in range(2, CONT + 1):
        reset()
        same.append(np.array_equal(decode([(t, PROMPT + j, 0, True) for j, t in enumerate(cont[:k])]), one[:k]))
    beside = []
    for n in (2, 4, 5, 8):
        reset()
        rows = [decode([(t, PROMPT + j, 0, True)] + [(cont[0], PROMPT + j, s, True) for s in range(1, n)])[0]
                for j, t in enumerate(cont)]
        beside.append((n, np.array_equal(np.array(rows), one)))
    L.llama_free(ctx)
    L.llama_model_free(model)
    verdict = lambda ok: "same" if ok else "differ"  # noqa: E731
    return (f"| {'on' if repack else 'off'} | {'on' if flash_attn else 'off'} | "
            + ", ".join(f"{k}: {verdict(ok)}" for k, ok in zip(range(2, CONT + 1), same, strict=True)) + " | "
            + ", ".join(f"{n}: {verdict(ok)}" for n, ok in beside) + " |")


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b-instruct:q4_k_m"
    path = str(Store().resolve(name).path)
    print(f"{name}: logits bit-identical to one-row passes?\n")
    print("| repack | flash attention | k rows of one sequence in one pass | one row beside n - 1 neighbours |")
    print("|---|---|---|---|")
    for repack in (True, False):
        for flash_attn in (True, False):
            print(run(path, repack, flash_attn), flush=True)


if __name__ == "__main__":
    main()
