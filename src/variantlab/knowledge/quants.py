"""The quant-type table (per tensor) and the file-type table (per file), in one place.

Tensor types and their block sizes come from ``gguf.GGML_QUANT_SIZES`` (llama.cpp's own
table); file types, their nominal sizes and the ladder order from ``data/file_types.toml``.
Every size estimate in variantlab is computed from these two tables.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

import gguf

from ..errors import UsageError
from . import load_data


@dataclass(frozen=True)
class QuantType:
    """A ggml tensor type: how many weights a block holds and how many bytes it takes."""

    name: str
    id: int
    block_size: int
    type_size: int

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    def bytes_for(self, n_elements: int) -> int:
        """Bytes a tensor of ``n_elements`` of this type occupies (whole blocks)."""
        blocks = -(-n_elements // self.block_size)
        return blocks * self.type_size


@dataclass(frozen=True)
class FileType:
    """A llama.cpp file type (``general.file_type``): the recipe a whole file was made with."""

    name: str
    id: int
    scheme: str
    level_bits: int
    mix: str | None
    note: str
    typical_bpw: float
    ladder_rank: int | None


@functools.cache
def quant_types() -> dict[str, QuantType]:
    """All ggml tensor types gguf knows, by name."""
    return {
        t.name: QuantType(t.name, int(t.value), block, size)
        for t, (block, size) in gguf.GGML_QUANT_SIZES.items()
    }


def quant_type_by_id(type_id: int) -> QuantType | None:
    for qt in quant_types().values():
        if qt.id == type_id:
            return qt
    return None


@functools.cache
def file_types() -> dict[str, FileType]:
    """All llama.cpp file types in the data table, by name."""
    data = load_data("file_types.toml")
    ladder = data["ladder"]
    return {
        row["name"]: FileType(
            name=row["name"],
            id=row["id"],
            scheme=row["scheme"],
            level_bits=row["level_bits"],
            mix=row.get("mix"),
            note=row["note"],
            typical_bpw=row["typical_bpw"],
            ladder_rank=ladder.index(row["name"]) if row["name"] in ladder else None,
        )
        for row in data["file_type"]
    }


def file_type_by_id(type_id: int) -> FileType | None:
    for ft in file_types().values():
        if ft.id == type_id:
            return ft
    return None


def file_type(name: str) -> FileType:
    """Look a file type up by name, case-insensitively; suggest the closest on a miss."""
    by_upper = {n.upper(): ft for n, ft in file_types().items()}
    found = by_upper.get(name.strip().upper())
    if found is not None:
        return found
    close = difflib.get_close_matches(name.upper(), list(by_upper), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `variantlab explain --types`"
    raise UsageError(f"unknown quantization type {name!r}", hint=hint)


def ladder() -> list[FileType]:
    """The default ladder rungs, lowest precision first."""
    rungs = [ft for ft in file_types().values() if ft.ladder_rank is not None]
    return sorted(rungs, key=lambda ft: ft.ladder_rank or 0)


def quick_ladder() -> list[FileType]:
    """The rungs of a quick ladder: one per precision level, lowest first."""
    return [file_type(name) for name in load_data("file_types.toml")["ladder_quick"]]
