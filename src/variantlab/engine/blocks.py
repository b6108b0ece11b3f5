"""Valid random blocks of any ggml type, made by ggml's own quantizer in a child job.

A twin's weights must be blocks llama.cpp accepts (finite scales, in-range quants) of each
tensor's own type. For each (type, row length) a pool of random rows is quantized with
``ggml_quantize_chunk`` (the function llama-quantize uses), checked with
``ggml_validate_row_data``, and written to a file; the twin writer tiles the pool. No F16 copy
of the model is ever made. Types that need an importance matrix (IQ2_XXS …) get a flat one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EngineError
from .jobs import read_job, run_job, say

_STD = 0.02  # the spread of a freshly initialized transformer's weights: activations stay finite


def _ggml() -> Any:
    import llama_cpp._ggml as G

    lib = G.libggml
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def _pool(lib: Any, type_id: int, type_name: str, n_per_row: int, n_rows: int, seed: int) -> bytes:
    import numpy as np

    block = lib.ggml_blck_size(type_id)
    row_bytes = lib.ggml_row_size(type_id, n_per_row) if block > 0 else 0
    if block <= 0 or row_bytes == 0:
        raise EngineError(f"tensor type {type_name} is not one this llama.cpp can make (no block size)")
    if n_per_row % block:
        raise EngineError(f"rows of {n_per_row} values are not whole blocks of {type_name} ({block} values)")
    rng = np.random.default_rng(seed)
    source = (rng.standard_normal((n_rows, n_per_row)) * _STD).astype(np.float32)
    out = np.zeros(row_bytes * n_rows, dtype=np.uint8)
    weights = np.ones(n_per_row, dtype=np.float32) if lib.ggml_quantize_requires_imatrix(type_id) else None
    written = lib.ggml_quantize_chunk(type_id, source.ctypes.data, out.ctypes.data, 0, n_rows, n_per_row,
                                      weights.ctypes.data if weights is not None else None)
    if written != out.nbytes or not lib.ggml_validate_row_data(type_id, out.ctypes.data, out.nbytes):
        raise EngineError(f"llama.cpp's quantizer made no valid {type_name} blocks for rows of {n_per_row}")
    return out.tobytes()


def _child_main() -> None:
    """The child: quantize each pool into its file (ggml's quantizer releases the GIL, so pools are
    made on every core), reporting each one done."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import gguf

    job = read_job()
    lib = _ggml()

    def one(i: int) -> int:
        type_name, n_per_row, n_rows = job["pools"][i]
        type_id = int(gguf.GGMLQuantizationType[type_name])
        Path(job["out"], f"{i}.bin").write_bytes(_pool(lib, type_id, type_name, n_per_row, n_rows, job["seed"] + i))
        return i

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as workers:
            for done, _ in enumerate(workers.map(one, range(len(job["pools"])))):
                say({"progress": [done + 1, len(job["pools"])]})
    except EngineError as exc:
        say({"done": True, "error": exc.message})
        return
    say({"done": True})


def random_rows(pools: list[tuple[str, int, int]], out_dir: Path, *, seed: int = 0,
                on_progress: Callable[[int, int], None] | None = None) -> list[bytes]:
    """For each (ggml type name, row length, rows): that many valid random rows of that type, as bytes."""
    job = {"pools": [list(p) for p in pools], "out": str(out_dir), "seed": seed}
    outcome = run_job(__name__, job, lambda m: on_progress(*m["progress"]) if on_progress else None,
                      "making random blocks")
    if outcome.get("error"):
        raise EngineError(outcome["error"])
    return [Path(out_dir, f"{i}.bin").read_bytes() for i in range(len(pools))]


if __name__ == "__main__":
    _child_main()
