"""`explain`: what a variant name claims, and where a file's header contradicts it.

The name grammar is ``knowledge.names`` (the catalog resolves names with it too); this module
adds the comparison with a model file.
"""

from __future__ import annotations

from dataclasses import dataclass

from .knowledge import load_data
from .knowledge.names import VariantName, explain_name
from .modelfile import ModelFile

__all__ = ["Disagreement", "VariantName", "compare_with_file", "explain_name"]


@dataclass(frozen=True)
class Disagreement:
    """A claim of the name that the file's header contradicts."""

    part: str
    name_says: str
    file_says: str


def compare_with_file(claims: VariantName, info: ModelFile) -> list[Disagreement]:
    """What the name claims that the GGUF header contradicts (quant, size, family)."""
    found: list[Disagreement] = []
    if claims.quant and info.file_type and claims.quant != info.file_type:
        found.append(Disagreement("quant", claims.quant, info.file_type))
    if claims.size_b and info.parameters:
        actual_b = info.parameters / 1e9
        # Published sizes are rounded and leave out embeddings or not: accept ±35 %.
        if not 0.65 <= actual_b / claims.size_b <= 1.35:
            found.append(Disagreement("size", f"{claims.size_b:g}B", f"{actual_b:.2f}B parameters"))
    if claims.family:
        fam = next(f for f in load_data("names.toml")["family"] if f["name"] == claims.family)
        if info.architecture not in fam["architectures"]:
            found.append(Disagreement("family", f"{claims.family} ({'/'.join(fam['architectures'])})", f"architecture {info.architecture}"))
    return found
