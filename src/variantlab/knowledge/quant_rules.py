"""llama.cpp's per-tensor type choice for a file type, read from ``data/quant_rules.toml``.

A "Q4_K_M" file is not all Q4_K: the quantizer keeps the output matrix at Q6_K and raises
some attention-V and feed-forward-down layers. Predicting a file's size, or the bytes a
token reads, before the file exists means replaying those choices. The choices are data;
this module only evaluates them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from . import load_data
from .quants import quant_types

_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """What the rules look at besides a tensor's own name and shape."""

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_experts: int = 0
    tied_embeddings: bool = False

    @property
    def gqa(self) -> int:
        return self.n_heads // max(1, self.n_kv_heads)


@dataclass(frozen=True)
class _Context:
    shape: ModelShape
    file_type: str
    base: str
    layer: int
    row_length: int
    imatrix: bool


def layer_of(name: str) -> int | None:
    """The repeating block a tensor name belongs to (``blk.N.``), or None for the others."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


_CONDITIONS: dict[str, Callable[[_Context], bool]] = {
    "gqa_4": lambda c: c.shape.gqa >= 4,
    "experts_4": lambda c: c.shape.n_experts >= 4,
    "experts_8": lambda c: c.shape.n_experts == 8,
    "more_bits": lambda c: _use_more_bits(c.layer, c.shape.n_layers),
    "first_2": lambda c: c.layer < 2,
    "first_4": lambda c: c.layer < 4,
    "first_eighth": lambda c: c.layer < c.shape.n_layers // 8,
    "first_16th": lambda c: c.layer < c.shape.n_layers // 16,
    "middle": lambda c: c.shape.n_layers // 8 <= c.layer < 7 * c.shape.n_layers // 8,
    "imatrix": lambda c: c.imatrix,
    "no_imatrix": lambda c: not c.imatrix,
    "falcon": lambda c: c.shape.architecture == "falcon",
    "not_falcon": lambda c: c.shape.architecture != "falcon",
    "model_70b": lambda c: c.shape.architecture == "llama" and c.shape.n_layers == 80 and c.shape.gqa > 1,
    "row_indivisible": lambda c: c.row_length % quant_types()[c.base].block_size != 0,
    "base_not_q8_0": lambda c: c.base != "Q8_0",
}


@functools.cache
def _rules() -> dict[str, Any]:
    data = load_data("quant_rules.toml")
    for rule in data["rule"] + data["post"] + [r for era in data["era"] for r in era["rule"]]:
        unknown = [w for w in rule.get("when", []) if w not in _CONDITIONS]
        if unknown:
            raise ValueError(f"quant_rules.toml: unknown condition(s) {unknown}")
    return data


def eras() -> list[str]:
    """Names of the older recipes the rules know ("current" is always known)."""
    return ["current"] + [era["name"] for era in _rules()["era"]]


def _main_rules(era: str) -> list[dict[str, Any]]:
    if era == "current":
        return _rules()["rule"]
    for entry in _rules()["era"]:
        if entry["name"] == era:
            return entry["rule"] + _rules()["rule"]
    raise UsageError(f"unknown quantization recipe era {era!r}", hint=f"use one of {', '.join(eras())}")


def supported_file_types() -> list[str]:
    """File types whose recipe the rules describe."""
    return list(_rules()["base"])


def base_type(file_type: str) -> str:
    """The tensor type a file type starts every quantizable tensor at."""
    try:
        return _rules()["base"][file_type]
    except KeyError:
        raise UsageError(
            f"no recipe for file type {file_type!r}",
            hint=f"use one of {', '.join(supported_file_types())}",
        ) from None


def quantizable(name: str, n_dims: int) -> bool:
    """Whether llama.cpp's quantizer may change this tensor's type (tensor_allows_quantization)."""
    never = _rules()["never_quantize"]
    return (
        n_dims >= 2
        and name.endswith("weight")
        and name not in never["exact"]
        and not any(part in name for part in never["contains"])
    )


def role(name: str, tied_embeddings: bool) -> str:
    """The quantizer's category for a tensor name; a tied token embedding acts as the output."""
    for entry in _rules()["roles"]:
        if ("exact" in entry and name == entry["exact"]) or ("contains" in entry and entry["contains"] in name):
            found = entry["role"]
            return "output" if found == "token_embd" and tied_embeddings else found
    return "other"


def _matches(rule: dict[str, Any], ctx: _Context, tensor_role: str) -> bool:
    if rule["role"] not in ("*", tensor_role):
        return False
    if "file_types" in rule and ctx.file_type not in rule["file_types"]:
        return False
    if ctx.file_type in rule.get("except_file_types", ()):
        return False
    return all(_CONDITIONS[w](ctx) for w in rule.get("when", ()))


def _chosen(rule_type: str, ctx: _Context) -> str:
    return ctx.base if rule_type == "base" else rule_type


def _fallback(chosen: str, row_length: int) -> str:
    types = quant_types()
    if row_length % types[chosen].block_size == 0:
        return chosen
    replacement = _rules()["fallback"].get(chosen, chosen)
    return replacement if row_length % types[replacement].block_size == 0 else "F16"


def tensor_types(
    tensors: list[tuple[str, tuple[int, ...], str | None]], file_type: str, shape: ModelShape, *,
    imatrix: bool = False, era: str = "current",
) -> list[str]:
    """The type llama.cpp's quantizer gives each tensor, in file order.

    ``tensors`` are (name, dims as GGUF lists them with the row length first, source type or
    None); ``era`` picks an older recipe for files made by an older llama.cpp. Order matters:
    like llama.cpp, the n-th attention-V or feed-forward tensor of the file counts as layer n
    (files are often sorted blk.0, blk.1, blk.10, ...).
    """
    base = base_type(file_type)
    rules = _main_rules(era)
    seen: dict[str, int] = {}
    found = []
    for name, dims, source_type in tensors:
        if not quantizable(name, len(dims)):
            found.append(source_type or _source_type(name, dims))
            continue
        if base in ("F32", "F16", "BF16"):
            found.append(base)
            continue
        tensor_role = role(name, shape.tied_embeddings)
        index = seen.get(tensor_role, 0)
        seen[tensor_role] = index + 1
        named = layer_of(name)
        layer = named if shape.n_experts > 1 and named is not None else index
        found.append(_choose(rules, tensor_role, _Context(shape, file_type, base, layer, dims[0], imatrix)))
    return found


def _source_type(name: str, dims: tuple[int, ...]) -> str:
    """The type a converted (F16) file gives a tensor the quantizer leaves alone."""
    if len(dims) < 2 or any(part in name for part in _rules()["never_quantize"]["f32_source"]):
        return "F32"
    return "F16"


def _choose(rules: list[dict[str, Any]], tensor_role: str, ctx: _Context) -> str:
    chosen = ctx.base
    for rule in rules:
        if _matches(rule, ctx, tensor_role):
            chosen = _chosen(rule["type"], ctx)
            break
    for rule in _rules()["post"]:
        if _matches(rule, ctx, tensor_role) and chosen in rule.get("from", [chosen]):
            chosen = rule["type"]
    return _fallback(chosen, ctx.row_length)
