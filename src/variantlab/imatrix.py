"""Importance matrices for quantization, read from llama-imatrix's GGUF files with ``gguf``.

The values handed to ``llama_model_quantize`` are the ones llama.cpp's own llama-quantize
computes from the file (``load_imatrix`` in tools/quantize): each tensor's sums of squared
activations divided by its token count per expert (1 where the count is 0), so a file
quantized here with a matrix is byte-identical to llama-quantize's with the same matrix.
Only the GGUF format is read; llama-imatrix converts an old ``.dat`` file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingFileError, ModelFileError, UsageError
from .files import sha256_file
from .modelfile import open_reader

SUMS, COUNTS = ".in_sum2", ".counts"


@dataclass(frozen=True)
class Imatrix:
    """One importance matrix: where it came from and, per weight tensor, the values llama.cpp uses."""

    path: Path
    sha256: str
    datasets: list[str]
    chunk_count: int
    chunk_size: int
    entries: dict[str, np.ndarray] = field(repr=False)

    def describe(self) -> dict[str, object]:
        """What a quantized file's lineage records of the matrix."""
        return {"sha256": self.sha256, "file": str(self.path), "datasets": self.datasets,
                "chunks": self.chunk_count, "chunk_size": self.chunk_size, "entries": len(self.entries)}


def read_imatrix(path: Path) -> Imatrix:
    """Read and check an imatrix GGUF; a bad file fails here, before any quantization starts."""
    try:
        reader = open_reader(path)  # the project's one GGUF reader: bounded, every corruption a ModelFileError
    except (ModelFileError, MissingFileError) as exc:
        raise UsageError(f"--imatrix {path}: {exc.problem}",
                         hint="give the .gguf file that llama-imatrix wrote; an old .dat matrix converts with "
                              "`llama-imatrix --in-file OLD.dat -o NEW.gguf`") from None
    meta = {name: reader.fields[name].contents() for name in
            ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size") if name in reader.fields}
    if len(meta) < 3:
        raise UsageError(f"--imatrix {path} has no imatrix metadata (datasets, chunk count and size)",
                         hint="use a matrix written by llama-imatrix")
    tensors = {t.name: t for t in reader.tensors}
    entries = {}
    names = {n[: -len(suffix)] for n in tensors for suffix in (SUMS, COUNTS) if n.endswith(suffix)}
    for name in sorted(names):  # a half without its other half is refused, as llama.cpp's loader does
        entries[name] = _normalized(path, name, tensors.get(name + SUMS), tensors.get(name + COUNTS))
    if not entries:
        raise UsageError(f"--imatrix {path} holds no importance data", hint="use a matrix written by llama-imatrix")
    return Imatrix(path, sha256_file(path), [str(d) for d in meta["imatrix.datasets"]],
                   int(meta["imatrix.chunk_count"]), int(meta["imatrix.chunk_size"]), entries)


def _normalized(path: Path, name: str, sums: Any, counts: Any) -> np.ndarray:
    """Sums divided by the per-expert token count, in float32 as llama-quantize divides them."""
    import gguf

    if sums is None or counts is None:
        raise UsageError(f"--imatrix {path}: {name} has sums without counts or counts without sums",
                         hint="the file is damaged; compute it again with llama-imatrix")
    if {sums.tensor_type, counts.tensor_type} != {gguf.GGMLQuantizationType.F32}:
        raise UsageError(f"--imatrix {path}: {name} is not stored as F32", hint="use a matrix written by llama-imatrix")
    values = np.asarray(sums.data, dtype=np.float32).reshape(-1)
    n = np.floor(np.asarray(counts.data, dtype=np.float64).reshape(-1) + 0.5).astype(np.float32)  # lround
    if n.size == 0 or values.size % n.size:
        raise UsageError(f"--imatrix {path}: {name} has {values.size} sums for {n.size} counts",
                         hint="the file is damaged; compute it again with llama-imatrix")
    rows = values.reshape(n.size, -1)
    out = np.ones_like(rows)
    seen = n > 0
    out[seen] = rows[seen] / n[seen, None]
    return np.ascontiguousarray(out.reshape(-1))
