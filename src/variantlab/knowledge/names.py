"""Decoding a variant name (file name or Ollama tag) into what it claims, part by part.

The vocabulary is data (data/names.toml, file_types.toml, schemes.toml). A part the
vocabulary does not know is reported in ``unknown_parts``, never guessed. The grammar sits in
the knowledge layer because the catalog resolves names with it; ``explain`` adds the checks
against a file's header.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from ..text import clean_text
from . import load_data
from .quants import FileType, file_types

_QUANT_ALIASES = {"FP16": "F16", "FP32": "F32", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M"}
_SIZE = re.compile(r"(?<![a-z0-9.])(?:(?P<experts>\d+)x)?(?P<num>\d+(?:\.\d+)?)(?P<unit>[bm])(?![a-z0-9])")
_ACTIVE = re.compile(r"(?<![a-z0-9])a(?P<num>\d+(?:\.\d+)?)b(?![a-z0-9])")  # "30b-a3b": 3 B active per token
_VERSION = re.compile(r"(?<![a-z0-9])v\d+(?:\.\d+)*(?![a-z0-9])")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


@dataclass
class VariantName:
    """What a variant name claims. ``None`` means the name does not say."""

    name: str
    style: str
    family: str | None = None
    size_b: float | None = None
    experts: int | None = None
    active_b: float | None = None
    flavor: str | None = None
    flavor_from: str | None = None
    fine_tune: str | None = None
    tuned_for: str | None = None
    version: str | None = None
    quant: str | None = None
    level_bits: int | None = None
    scheme: str | None = None
    mix: str | None = None
    typical_bpw: float | None = None
    format: str | None = None
    unknown_parts: list[str] = field(default_factory=list)
    explanations: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain_name(raw: str) -> VariantName:
    """Decode ``raw`` (a file name, a path or an Ollama ``family:tag``) part by part."""
    raw = clean_text(raw).strip()
    text, style, fmt = _normalise(raw)
    result = VariantName(name=raw, style=style, format=fmt)
    spans: list[tuple[int, int]] = []
    _take_quant(text, result, spans)
    _take_family(text, result, spans)
    _take_size(text, result, spans)
    _take_version(text, result, spans)
    _take_flavor(text, result, spans)
    result.unknown_parts = _leftovers(text, spans)
    result.explanations = _explanations(result)
    return result


def _normalise(raw: str) -> tuple[str, str, str | None]:
    """Lower-case, drop directory, extension and shard suffix; say which naming style it is."""
    base = PurePath(raw).name
    if base.lower().endswith(".gguf"):
        stem = _SHARD.sub("", base[: -len(".gguf")])
        return stem.lower().replace(" ", "-"), "file", "GGUF"
    if ":" in base and "/" not in raw:
        # Ollama tags are family:size-flavor-quant and always name GGUF models
        return base.lower().replace(":", "-"), "ollama", "GGUF"
    return base.lower().replace(" ", "-"), "name", None


def _boundary_search(alias: str, text: str) -> re.Match[str] | None:
    pattern = "[-_ ]".join(re.escape(word) for word in re.split(r"[-_ ]", alias.lower()))
    return re.search(rf"(?<![a-z0-9]){pattern}(?![a-z0-9])", text)


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(span[0] < b and a < span[1] for a, b in spans)


@functools.cache
def _quant_names() -> list[str]:
    names = list(file_types()) + list(_QUANT_ALIASES)
    return sorted(names, key=len, reverse=True)


def _take_quant(text: str, result: VariantName, spans: list[tuple[int, int]]) -> None:
    best: re.Match[str] | None = None
    best_name = ""
    for name in _quant_names():
        for m in re.finditer(rf"(?<![a-z0-9]){re.escape(name.lower())}(?![a-z0-9])", text):
            if best is None or m.start() > best.start():  # the last quant in the name wins
                best, best_name = m, name
    if best is None:
        return
    spans.append(best.span())
    ft: FileType = file_types()[_QUANT_ALIASES.get(best_name, best_name)]
    result.quant, result.level_bits, result.scheme = ft.name, ft.level_bits, ft.scheme
    result.mix, result.typical_bpw = ft.mix, ft.typical_bpw


def _take_family(text: str, result: VariantName, spans: list[tuple[int, int]]) -> None:
    names = load_data("names.toml")
    candidates = [(a, fam) for fam in names["family"] for a in fam["aliases"]]
    for alias, fam in sorted(candidates, key=lambda c: len(c[0]), reverse=True):
        m = _boundary_search(alias, text)
        if m and not _overlaps(m.span(), spans):
            spans.append(m.span())
            result.family = fam["name"]
            break
    for tune in names["fine_tune"]:
        for alias in tune["aliases"]:
            m = _boundary_search(alias, text)
            if m and not _overlaps(m.span(), spans):
                spans.append(m.span())
                result.fine_tune = tune["name"]
                result.flavor, result.flavor_from = tune["name"].lower(), "fine-tune name"
                result.tuned_for = tune["purpose"]
                if result.family is None:
                    python = _boundary_search("python", text) is not None
                    result.family = tune.get("python_family") if python and "python_family" in tune else tune["family"]
                return


def _take_size(text: str, result: VariantName, spans: list[tuple[int, int]]) -> None:
    for m in _SIZE.finditer(text):
        if _overlaps(m.span(), spans):
            continue
        spans.append(m.span())
        value = float(m["num"]) / (1000 if m["unit"] == "m" else 1)
        result.size_b = round(value, 3)
        result.experts = int(m["experts"]) if m["experts"] else None
        break
    for m in _ACTIVE.finditer(text):
        if not _overlaps(m.span(), spans):
            spans.append(m.span())
            result.active_b = float(m["num"])
            return


def _take_version(text: str, result: VariantName, spans: list[tuple[int, int]]) -> None:
    for m in _VERSION.finditer(text):
        if not _overlaps(m.span(), spans):
            spans.append(m.span())
            result.version = m.group(0)
            return


def _take_flavor(text: str, result: VariantName, spans: list[tuple[int, int]]) -> None:
    flavors: dict[str, Any] = load_data("names.toml")["flavor"]
    for flavor, spec in flavors.items():
        for alias in spec["aliases"]:
            m = _boundary_search(alias, text)
            if m and not _overlaps(m.span(), spans):
                spans.append(m.span())
                if result.fine_tune:
                    result.tuned_for = flavor  # "WizardCoder-Python": the fine-tune, tuned for Python
                else:
                    result.flavor, result.flavor_from = flavor, "name"
    if result.flavor is None and result.family is not None:
        fam = next(f for f in load_data("names.toml")["family"] if f["name"] == result.family)
        if "unsuffixed_flavor" in fam:
            result.flavor = fam["unsuffixed_flavor"]
            result.flavor_from = f"{result.family} names its {fam['unsuffixed_flavor']} model without a suffix"


def _leftovers(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """The words of ``text`` outside every recognised span (and the 'gguf' marker)."""
    chars = list(text)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    words = re.split(r"[-_.\s]+", "".join(chars))
    return [w for w in words if w and w not in ("gguf",)]


def _explanations(v: VariantName) -> dict[str, str]:
    schemes = load_data("schemes.toml")
    names = load_data("names.toml")
    out: dict[str, str] = {}
    if v.family:
        fam = next(f for f in names["family"] if f["name"] == v.family)
        out["family"] = f"{v.family}, a model family by {fam['maker']}"
    if v.size_b is not None:
        out["size"] = f"about {v.size_b:g} billion parameters" + (f" in {v.experts} experts" if v.experts else "")
        if v.active_b is not None:
            out["size"] += f", about {v.active_b:g} billion of them read per token (a mixture of experts)"
    if v.fine_tune:
        tune = next(t for t in names["fine_tune"] if t["name"] == v.fine_tune)
        out["flavor"] = tune["text"]
    elif v.flavor:
        out["flavor"] = names["flavor"][v.flavor]["text"]
    if v.level_bits is not None:
        level = schemes["level"]
        out["level"] = level["text"].format(bits=v.level_bits, judgement=level["judgement"].get(str(v.level_bits), "unusual"))
    if v.scheme:
        out["scheme"] = schemes["scheme"][v.scheme]
    if v.mix:
        out["mix"] = schemes["mix"][v.mix]
    if v.quant:
        out["bits_per_weight"] = f"{v.quant} files average about {v.typical_bpw:g} bits per weight (llama-quantize: {file_types()[v.quant].note.strip()})"
    if v.format:
        out["format"] = schemes["format"][v.format]
    return out
