"""Where a small model's twin gets its speed: the pages it is read from, or the values in them.

Issue 17: SmolLM2-135M's twin generated 11 % faster than the real file on one VM (0.995 on
another, 1.34 on a third; within 0.4 % on an H200), with flush-to-zero, the token stream and
the generator ruled out. This VM's kernel (6.18, ext4) keeps file pages in large folios and can
map a 2 MiB one with a single page-table entry (``FilePmdMapped`` in smaps): a file written in
big sequential writes, as the twin is, may be mapped with far fewer TLB misses than one that
came into the page cache another way. Each round loads, in fresh processes and rotating order:

- ``real``: the store's file, as the bench reads it;
- ``copy``: the real bytes written afresh the way the twin writer writes (8 MiB writes, fsync);
- ``tiled``: that copy with every tensor rewritten as the twin tiles its pools, from the real
  file's own rows (the twin's layout, the real values);
- ``twin``: the twin.

and reports tg (128 one-token passes, greedy feed, best of ``--reps``) and how much of the
mapping is PMD-mapped. ``copy`` like ``twin`` and unlike ``real`` points at the pages; ``tiled``
like ``real`` and unlike ``twin`` points at the values.

``--paired TURNS`` measures the twin against the noise of the machine instead: each round is one
fresh process holding the real file and one other (``--against``: the twin, or the real file a
second time as the control), alternating the bench's own pp512 and tg tests between them TURNS
times, so drift hits both alike; rounds alternate twin and control, and every other cycle loads the
other file first. It reports the median of the processes' median ratios for each, the figure
docs/benchmarks.md compares with 0.97–1.03, and for pp512 also the ratio of each file's fastest
test in a process (a pp512 test lasts seconds, long enough for a burst to slow most of them).

    .venv/bin/python benchmarks/twin_pages.py [--rounds 4] [--reps 3] [MODEL]
    .venv/bin/python benchmarks/twin_pages.py --paired 6 --rounds 6 [--against twin,real] [--block 16] [--gen 0] [MODEL]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from variantlab.engine.llama import LlamaEngine, Sampling
from variantlab.engine.settings import EngineSettings
from variantlab.store import Store
from variantlab.twin import make_twin, pool_rows, remove_twin

_CHUNK = 8 << 20


def _mapping(path: str) -> dict[str, int]:
    """kB of ``path``'s mappings in this process: Rss and FilePmdMapped, from /proc/self/smaps."""
    found = {"Rss": 0, "FilePmdMapped": 0}
    target = os.path.realpath(path)
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(target)
        elif inside and line.split(":")[0] in found:
            found[line.split(":")[0]] += int(line.split()[1])
    return found


def _child(path: str, n_gen: int, reps: int, queue: multiprocessing.Queue) -> None:
    engine = LlamaEngine(path, EngineSettings(n_ctx=512, load_mode="mmap"))
    pages = _mapping(path)
    engine.time_generation(16)  # warm-up
    best = max(n_gen / engine.time_generation(n_gen) for _ in range(reps))
    queue.put({"tg": best, **pages})


def _paired_child(paths: dict[str, str], n_gen: int, turns: int, block: int, queue: multiprocessing.Queue) -> None:
    """Both files loaded in one process, the bench's own pp512 and tg tests alternated ``turns``
    times: drift in the machine hits both alike, so the ratio left is the files' (or their mappings').
    ``block``: tg alternates every ``block`` tokens instead (each block's speed is one sample)."""
    engines = {label: LlamaEngine(path, EngineSettings(n_ctx=1024, load_mode="mmap")) for label, path in paths.items()}
    speeds: dict[str, dict[str, list[float]]] = {"pp": {label: [] for label in paths}, "tg": {label: [] for label in paths}}
    for engine in engines.values():  # warm-up, as llama-bench
        engine.clear()
        engine.time_prompt(512, 0)
    for turn in range(turns):
        order = list(paths) if turn % 2 == 0 else list(paths)[::-1]
        for label in order:
            engines[label].clear()
            speeds["pp"][label].append(512 / engines[label].time_prompt(512, turn)[0])
            if n_gen and not block:
                engines[label].clear()
                speeds["tg"][label].append(n_gen / engines[label].time_generation(n_gen))
        if n_gen and block:
            for label, blocks in _tg_in_blocks({label: engines[label] for label in order}, n_gen, block).items():
                speeds["tg"][label] += [block / seconds for seconds in blocks]
    queue.put(speeds)


def _tg_in_blocks(engines: dict[str, LlamaEngine], n_gen: int, block: int) -> dict[str, list[float]]:
    """The tg test of each engine (greedy, from BOS, as ``time_generation``), taken ``block`` tokens at
    a time from each in turn: seconds per block, so drift longer than a block hits both alike."""
    seconds: dict[str, list[float]] = {label: [] for label in engines}
    with contextlib.ExitStack() as stack:
        samplers = {label: stack.enter_context(engine.sampler(Sampling())) for label, engine in engines.items()}
        tokens = {}
        for label, engine in engines.items():
            engine.clear()
            bos = engine.bos()
            tokens[label] = bos if bos is not None else 0
        for start in range(0, n_gen - block + 1, block):
            for label, engine in engines.items():
                t0 = time.perf_counter()
                for pos in range(start, start + block):
                    engine.decode_one(tokens[label], pos)
                    tokens[label] = engine.sample(samplers[label])
                seconds[label].append(time.perf_counter() - t0)
    return seconds


def _in_child(target: Callable[..., None], *args: object) -> dict:
    """Run ``target(*args, queue)`` in a fresh process (a fresh mapping of every file) and return what it puts."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _write_copy(real: Path, out: Path) -> None:
    """The real bytes, written as the twin writer writes: big sequential writes, then fsync."""
    with real.open("rb") as source, out.open("wb") as handle:
        while chunk := source.read(_CHUNK):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())


def _tile_real(copy: Path, out: Path) -> None:
    """``copy`` with each tensor's rows replaced as write_twin tiles: one pool per (type, row length),
    here the first rows of the real file's tensors of that key, each tensor starting at its own row."""
    reader = gguf.GGUFReader(copy)
    raw = np.memmap(copy, mode="r", dtype=np.uint8)
    rows_of: dict[tuple[str, int], list[np.ndarray]] = {}
    for t in reader.tensors:
        rows_of.setdefault(_key(t), []).append(_rows(raw, t))
    pools = {}
    for key, tensors in rows_of.items():
        flat = np.concatenate(tensors)
        pools[key] = flat[: min(pool_rows(*key), len(flat))].copy()
    shutil.copyfile(copy, out)
    data = np.memmap(out, mode="r+", dtype=np.uint8)
    for index, t in enumerate(reader.tensors):
        pool = pools[_key(t)]
        rows = _rows(data, t)
        rows[:] = pool[(index * 7919 % len(pool) + np.arange(len(rows))) % len(pool)]
    data.flush()
    del data
    with out.open("rb+") as handle:
        os.fsync(handle.fileno())


def _key(t: gguf.ReaderTensor) -> tuple[str, int]:
    """The twin's pool key: (type name, row length in elements)."""
    return t.tensor_type.name, int(t.shape[0])


def _rows(data: np.ndarray, t: gguf.ReaderTensor) -> np.ndarray:
    """``t``'s bytes in ``data`` (the whole file), one row of ``t.shape[0]`` elements a line."""
    n_rows = int(t.n_elements) // int(t.shape[0])
    start = int(t.data_offset)
    return data[start:start + int(t.n_bytes)].reshape(n_rows, int(t.n_bytes) // n_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m-instruct:q4_1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--gen", type=int, default=128, help="tg tokens (with --paired, 0: pp512 only)")
    parser.add_argument("--paired", type=int, default=0, metavar="TURNS",
                        help="load real and twin in one process per round and alternate their tg TURNS times")
    parser.add_argument("--block", type=int, default=0, metavar="TOKENS",
                        help="with --paired: alternate tg every TOKENS tokens and take each block as a sample "
                             "(0: whole tg128 tests, as bench runs them)")
    parser.add_argument("--against", default="twin,real",
                        help="with --paired: the files alternated with the real one, a comma list of twin, copy, tiled, "
                             "real (real: the same file twice, the control); they take turns round by round")
    args = parser.parse_args()
    if args.paired % 2:
        # turns alternate which file runs pp512 first; an odd count gives one file that place once more
        parser.error(f"--paired {args.paired}: give an even number of turns (the order alternates turn by turn)")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least one round")
    if (args.gen != 0 or not args.paired) and args.gen < max(1, args.block):
        # a tg test shorter than one block (or, outside --paired, none at all) leaves no sample to take a median of
        parser.error(f"--gen {args.gen}: give at least {max(1, args.block)} tokens (--block {args.block}), "
                     "or 0 with --paired for pp512 only")
    store = Store()
    real = store.resolve(args.model).path
    twin = make_twin(args.model, store)
    scratch = store.tmp_dir / "twin_pages"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        copy, tiled = scratch / "copy.gguf", scratch / "tiled.gguf"
        _write_copy(real, copy)
        _tile_real(copy, tiled)
        paths = {"real": str(real), "copy": str(copy), "tiled": str(tiled), "twin": str(store.resolve(twin.name).path)}
        if args.paired:
            _paired(paths, args)
        else:
            _separate(paths, args)
    finally:
        remove_twin(twin, store)
        shutil.rmtree(scratch, ignore_errors=True)


def _separate(paths: dict[str, str], args: argparse.Namespace) -> None:
    """Each file in its own fresh process, rotating order, ``--rounds`` times."""
    labels = list(paths)
    rounds = []
    for r in range(args.rounds):
        order = labels[r % len(labels):] + labels[: r % len(labels)]
        found = {label: _in_child(_child, paths[label], args.gen, args.reps) for label in order}
        rounds.append(found)
        print(f"round {r + 1} ({', '.join(order)}): " + ", ".join(
            f"{label} {found[label]['tg']:.1f} tok/s, PMD {found[label]['FilePmdMapped'] / 1024:.0f}"
            f"/{found[label]['Rss'] / 1024:.0f} MiB" for label in labels), flush=True)
    print("\n| file | tg tokens/s (median) | /real (median of rounds) | per round /real | PMD-mapped MiB of mapped (last round) |")
    print("|---|---:|---:|---|---:|")
    for label in labels:
        ratios = [f[label]["tg"] / f["real"]["tg"] for f in rounds]
        last = rounds[-1][label]
        print(f"| {label} | {statistics.median(f[label]['tg'] for f in rounds):.1f} | {statistics.median(ratios):.3f} | "
              + ", ".join(f"{x:.3f}" for x in ratios)
              + f" | {last['FilePmdMapped'] / 1024:.0f} / {last['Rss'] / 1024:.0f} |")


def _paired(paths: dict[str, str], args: argparse.Namespace) -> None:
    """Real and another file in one process per round, pp512 and tg alternated ``--paired`` times: the
    ratio within a process (machine drift cancelled) against its scatter between processes (each a
    fresh mapping). Several ``--against`` files take turns round by round, so they are interleaved."""
    against = args.against.split(",")
    tests = ("pp", "tg") if args.gen else ("pp",)
    found: dict[str, dict[str, list[float]]] = {name: {"pp": [], "tg": [], "pp_best": [], "pp_turns": []} for name in against}
    print("| process | file | pp512 file/real (median of turns) | pp512 best/best | tg file/real (median of turns or blocks) "
          "| tg lowest–highest | real pp / tg tokens/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in range(args.rounds * len(against)):
        name = against[r % len(against)]
        # against "real": the control, the same file loaded twice (two mappings of the same pages)
        # every other cycle the other file is loaded first: the engine made second runs pp512 ~3 % faster
        pair = {"real": paths["real"], "other": paths[name]}
        if (r // len(against)) % 2:
            pair = dict(reversed(pair.items()))
        speeds = _in_child(_paired_child, pair, args.gen, args.paired, args.block)
        ratios = {test: [o / r_ for o, r_ in zip(speeds[test]["other"], speeds[test]["real"])] for test in tests}
        for test in tests:
            found[name][test].append(statistics.median(ratios[test]))
        found[name]["pp_turns"] += ratios["pp"]
        # bursts on this VM only ever slow a test down: each file's fastest pp512 is its least disturbed
        found[name]["pp_best"].append(max(speeds["pp"]["other"]) / max(speeds["pp"]["real"]))
        label = name + (" (loaded first)" if list(pair)[0] == "other" else "")
        tg = (f"{statistics.median(ratios['tg']):.3f} | {min(ratios['tg']):.3f}–{max(ratios['tg']):.3f}"
              if args.gen else "not run | ")
        real_tg = f"{statistics.median(speeds['tg']['real']):.1f}" if args.gen else "-"
        print(f"| {r + 1} | {label} | {statistics.median(ratios['pp']):.3f} | {found[name]['pp_best'][-1]:.3f} | {tg} | "
              f"{statistics.median(speeds['pp']['real']):.0f} / {real_tg} |", flush=True)
    print("\n| file | pp512 file/real: median of the processes' medians (range) | pp512 best/best: median (range) "
          "| pp512 file/real: median of all turns (range) | tg file/real: median of the processes' medians (range) |")
    print("|---|---:|---:|---:|---:|")
    for name, medians in found.items():
        cells = [_median_range(medians[key]) for key in ("pp", "pp_best", "pp_turns")]
        cells.append(_median_range(medians["tg"]) if args.gen else "not run (--gen 0)")
        print(f"| {name} | " + " | ".join(cells) + " |")


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"

if __name__ == "__main__":
    main()
