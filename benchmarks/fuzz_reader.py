"""Byte-flip and truncation fuzzing of the one GGUF reader (``modelfile``): every input must read, or
fail with ModelFileError, in under a second; nothing else (no traceback, no hang, no crash).

A tiny well-formed model (tests/tiny_gguf.py) is mutated in its header, metadata and tensor table
(1-8 random bytes set, or the file cut short), from a fixed seed. Each input is read by a fresh
call of the uncached reader in this process.

    .venv/bin/python benchmarks/fuzz_reader.py [--inputs 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tiny_gguf import write_tiny_model  # noqa: E402

from variantlab.errors import ModelFileError  # noqa: E402
from variantlab.modelfile import _read_model_file, open_reader  # noqa: E402


def header_length(path: Path) -> int:
    reader = open_reader(path)
    return int(min(t.data_offset for t in reader.tensors))


def mutate(data: bytes, header: int, rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return data[: rng.randrange(0, header + 64)]
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(0, header)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(out)


def read_one(path: Path) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        _read_model_file(path)
        outcome = "read"
    except ModelFileError:
        outcome = "refused"
    return outcome, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        original = write_tiny_model(Path(tmp) / "tiny.gguf")
        data, header = original.read_bytes(), header_length(original)
        target = Path(tmp) / "fuzzed.gguf"
        counts = {"read": 0, "refused": 0}
        slowest = 0.0
        t0 = time.perf_counter()
        for i in range(args.inputs):
            target.write_bytes(mutate(data, header, rng))
            outcome, seconds = read_one(target)  # any other exception ends the run with its traceback
            counts[outcome] += 1
            slowest = max(slowest, seconds)
            if seconds > 1.0:
                raise SystemExit(f"input {i} took {seconds:.2f} s")
    print(f"{args.inputs} inputs (seed {args.seed}, header {header} bytes): {counts['read']} read, "
          f"{counts['refused']} refused with one line, 0 other errors; slowest {slowest * 1000:.1f} ms; "
          f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
