"""Which tokens a tg test feeds, real file against its twin: where a twin's generation speed departs.

Issue 17 found the 0.5B's twin generating 7 % slower than the real file on this CPU in every
round (bytes, layout, flush-to-zero ruled out). A generation test can feed the model three kinds
of token: the model's own greedy choice (variantlab's tg), a random token each step
(llama-bench's tg), or one token over and over. Each round loads the real file and the twin in
fresh processes (order alternating) and times tg128 with each feed, so the table says whether the
gap follows the weights (it stays under every feed) or the token stream (it goes with the feed).

    .venv/bin/python benchmarks/tg_tokens.py [--rounds 3] [--reps 3] [--gen 128] [--pool-bytes N] [--ftz] [MODEL]

``--pool-bytes``: how many bytes of random rows each of the twin's pools holds (variantlab.twin's
``_POOL_BYTES``; at least 16 rows), to see whether the twin's repetition itself is what the CPU
reads more slowly. ``--pool-bytes 0`` gives the first generator's 16-row pools. ``--ftz``: each
child sets flush-to-zero and denormals-are-zero (MXCSR) before llama.cpp starts its threads, which
inherit it, so a gap that comes from subnormal floats in the real model's activations goes away.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import variantlab.twin
from variantlab.engine.llama import LlamaEngine, Sampling
from variantlab.engine.settings import EngineSettings
from variantlab.store import Store
from variantlab.twin import make_twin, remove_twin

FEEDS = ("greedy", "random", "repeat")


def _time_feed(engine: LlamaEngine, feed: str, n_gen: int, seed: int) -> tuple[float, list[int]]:
    """Seconds for ``n_gen`` one-token passes (each followed by a greedy sample, as tg does),
    and the tokens fed."""
    rng = random.Random(seed)
    engine.clear()
    bos = engine.bos()
    token = bos if bos is not None else 0
    fed = []
    with engine.sampler(Sampling()) as sampler:
        t0 = time.perf_counter()
        for pos in range(n_gen):
            engine.decode_one(token, pos)
            fed.append(token)
            chosen = engine.sample(sampler)
            token = {"greedy": chosen, "random": rng.randrange(engine.n_vocab), "repeat": fed[0]}[feed]
        return time.perf_counter() - t0, fed


_FTZ_C = "#include <xmmintrin.h>\nvoid ftz_daz(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }\n"


def _set_ftz_daz() -> None:
    """Set MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) in this thread; threads it
    starts later inherit them (POSIX: a new thread gets its creator's floating-point environment)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, library = Path(tmp) / "ftz.c", Path(tmp) / "ftz.so"
        source.write_text(_FTZ_C)
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True)
        ctypes.CDLL(str(library)).ftz_daz()


def _child(path: str, n_gen: int, reps: int, queue: multiprocessing.Queue, ftz: bool = False) -> None:
    """One fresh process per file: warm up, then the best of ``reps`` for each feed, interleaved."""
    if ftz:
        _set_ftz_daz()
    engine = LlamaEngine(path, EngineSettings(n_ctx=512, load_mode="auto"))
    _time_feed(engine, "greedy", 8, 0)  # warm-up
    best = {feed: float("inf") for feed in FEEDS}
    tokens: list[int] = []
    for rep in range(reps):
        for feed in FEEDS:
            seconds, fed = _time_feed(engine, feed, n_gen, rep)
            best[feed] = min(best[feed], seconds)
            tokens = fed if feed == "greedy" else tokens
    queue.put({"tg": {feed: n_gen / s for feed, s in best.items()}, "greedy_tokens": tokens[:12],
               "distinct_greedy": len(set(tokens))})


def _run(path: str, n_gen: int, reps: int, ftz: bool) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(path, n_gen, reps, queue, ftz))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b-instruct:q4_k_m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--pool-bytes", type=int, default=variantlab.twin._POOL_BYTES)
    parser.add_argument("--ftz", action="store_true", help="flush-to-zero and denormals-are-zero in both children")
    args = parser.parse_args()
    variantlab.twin._POOL_BYTES = args.pool_bytes
    store = Store()
    real = str(store.resolve(args.model).path)
    twin = make_twin(args.model, store)
    if twin.reused:  # reused: one written by another pool size would not answer the question
        remove_twin(twin, store)
        twin = make_twin(args.model, store)
    try:
        twin_path = str(store.resolve(twin.name).path)
        rounds = []
        for r in range(args.rounds):
            order = [("real", real), ("twin", twin_path)] if r % 2 == 0 else [("twin", twin_path), ("real", real)]
            found = {label: _run(path, args.gen, args.reps, args.ftz) for label, path in order}
            rounds.append(found)
            print(f"round {r + 1} ({order[0][0]} first): " + ", ".join(
                f"{feed} real {found['real']['tg'][feed]:.1f} twin {found['twin']['tg'][feed]:.1f} "
                f"(x{found['twin']['tg'][feed] / found['real']['tg'][feed]:.3f})" for feed in FEEDS), flush=True)
    finally:
        remove_twin(twin, store)
    print("\n| feed | real tg tokens/s (median) | twin tg tokens/s (median) | twin/real (median of rounds) | per round |")
    print("|---|---:|---:|---:|---|")
    for feed in FEEDS:
        ratios = [f["twin"]["tg"][feed] / f["real"]["tg"][feed] for f in rounds]
        print(f"| {feed} | {statistics.median(f['real']['tg'][feed] for f in rounds):.1f} | "
              f"{statistics.median(f['twin']['tg'][feed] for f in rounds):.1f} | {statistics.median(ratios):.3f} | "
              + ", ".join(f"{x:.3f}" for x in ratios) + " |")
    for label in ("real", "twin"):
        last = rounds[-1][label]
        print(f"{label}: greedy tokens {last['greedy_tokens']} ... ({last['distinct_greedy']} distinct of {args.gen})")


if __name__ == "__main__":
    main()
