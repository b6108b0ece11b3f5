"""How a model is loaded and run: one settings object shared by every command and recorded with results."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from ..errors import UsageError

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
# llama.cpp's load modes; "auto" lets it choose (mmap on CPU).
LOAD_MODES = {"auto": -1, "none": 0, "mmap": 1, "mlock": 2, "mmap+mlock": 3}


def default_threads() -> int:
    """Physical cores, as llama-bench and llama-cli default to."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@dataclass(frozen=True)
class EngineSettings:
    """Load and run parameters. The defaults are llama-bench's, so measurements compare."""

    n_ctx: int = 4096
    n_threads: int | None = None  # None: default_threads()
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_gpu_layers: int = -1  # all layers that fit; no effect without a GPU build
    flash_attn: str = "auto"
    load_mode: str = "auto"
    seed: int = 1234
    # False: each sequence has its own KV stream of n_ctx / n_seq_max cells and attends over its
    # own cells only (fast batches); True: one pool, as llama-server's --kv-unified
    kv_unified: bool = False
    # a smaller model with the same vocabulary, loaded beside this one to guess its next tokens
    # (speculative decoding, engine/speculative.py); its context is made like this one's
    draft_model: str | None = None

    def resolved(self) -> EngineSettings:
        """These settings with defaults filled in and every value checked."""
        threads = default_threads() if self.n_threads is None else self.n_threads
        if not 1 <= threads <= 1024:
            raise UsageError(f"--threads {self.n_threads} is out of range", hint="use 1 to 1024 threads, or leave it out for one per physical core")
        if not 16 <= self.n_ctx <= 1 << 22:
            raise UsageError(f"context {self.n_ctx} is out of range", hint="use between 16 and 4194304 tokens")
        if self.n_batch < 1 or self.n_ubatch < 1 or self.n_seq_max < 1:
            raise UsageError("batch sizes and sequence count must be positive")
        if self.flash_attn not in FLASH_ATTN:
            raise UsageError(f"flash attention {self.flash_attn!r} is not one of {', '.join(FLASH_ATTN)}")
        if self.load_mode not in LOAD_MODES:
            raise UsageError(f"load mode {self.load_mode!r} is not one of {', '.join(LOAD_MODES)}")
        return EngineSettings(**{**asdict(self), "n_threads": threads})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
