"""The catalog of code model families (``data/catalog.toml``) and the files they come as.

A catalog *variant* is a model plus a file type: ``codellama:13b-instruct-q4_K_M``, or the
published file name ``codellama-13b-instruct.Q4_K_M.gguf``. Both are parsed by the same
name reader ``explain`` uses, so every spelling variantlab understands works here.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownModelError
from . import load_data
from .layers import recurrent_layers
from .names import VariantName, explain_name
from .quant_rules import ModelShape, supported_file_types
from .quants import FileType, file_type, ladder


@dataclass(frozen=True)
class CatalogModel:
    """One published model (not yet a file): its network, context, abilities and score."""

    family: str
    size: str
    flavor: str
    version: str | None
    architecture: str
    n_layers: int
    n_embd: int
    n_heads: int
    n_kv_heads: int
    n_ff: int
    n_vocab: int
    tokenizer: str
    output_tensor: bool
    trained_ctx: int
    max_ctx: int
    fim: bool
    prompt_format: str
    license: str
    humaneval: float | None
    humaneval_source: str | None
    gguf_repo: str
    gguf_file: str
    strengths: str
    sources: tuple[str, ...]
    based_on: str | None = None
    recipe: str = "current"
    fim_style: str | None = None
    # GGUF keys beyond the common shape (experts, sliding window, latent-attention widths),
    # written as the converter writes them, ARCH. prefix stripped
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def fim_tokens(self) -> dict[str, str]:
        """prefix/suffix/middle spellings when the model infills, else empty."""
        if not (self.fim and self.fim_style):
            return {}
        style = next(s for s in load_data("fim_tokens.toml")["style"] if s["name"] == self.fim_style)
        return {role: style[role] for role in ("prefix", "suffix", "middle")}

    @property
    def prompt_template(self) -> str:
        return load_data("prompt_formats.toml")[self.prompt_format]["template"]

    @property
    def tag(self) -> str:
        """Ollama-style name: ``family:size-flavor`` (lower case)."""
        parts = [self.size]
        if self.version:
            parts.append(self.version)
        parts.append(self.flavor)
        return f"{self.family.lower().replace(' ', '-')}:{'-'.join(parts)}"

    @property
    def size_b(self) -> float:
        return float(self.size[:-1]) / (1000 if self.size.endswith("m") else 1)

    @property
    def head_dim(self) -> int:
        """Per-head width of Q and K: the header's key_length where it differs from n_embd / n_heads."""
        return int(dict(self.extra).get("attention.key_length", self.n_embd // self.n_heads))

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.architecture, self.n_layers, self.n_heads, self.n_kv_heads,
                          n_experts=int(dict(self.extra).get("expert_count", 0)), tied_embeddings=not self.output_tensor)

    def hparams(self) -> dict[str, Any]:
        """The ``ARCH.*`` keys a GGUF of this model carries (prefix stripped): what a twin's
        header writes and what the memory layout is read from, as from a file."""
        hp: dict[str, Any] = {
            "context_length": self.trained_ctx, "embedding_length": self.n_embd, "block_count": self.n_layers,
            "feed_forward_length": self.n_ff, "attention.head_count": self.n_heads,
            "attention.head_count_kv": self.n_kv_heads, "rope.dimension_count": self.head_dim,
        }
        hp.update(load_data("architectures.toml")[self.architecture].get("metadata", {}))
        hp.update(dict(self.extra))
        return hp

    def dimensions(self) -> dict[str, int]:
        """The named dimensions architectures.toml uses in tensor shapes."""
        hp = self.hparams()
        n_embd_q = self.n_heads * self.head_dim
        n_embd_kv = self.n_kv_heads * self.head_dim
        n_rot = int(hp.get("rope.dimension_count", self.head_dim))
        lora_kv = int(hp.get("attention.kv_lora_rank", 0))
        k_mla, v_mla = int(hp.get("attention.key_length_mla", 0)), int(hp.get("attention.value_length_mla", 0))
        n_ff_exp = int(hp.get("expert_feed_forward_length", 0))
        return {
            "n_embd": self.n_embd, "n_ff": self.n_ff, "n_vocab": self.n_vocab, "n_ctx_train": self.trained_ctx,
            "n_embd_q": n_embd_q, "n_embd_kv": n_embd_kv, "n_qkv": n_embd_q + 2 * n_embd_kv, "head_dim": self.head_dim,
            "n_expert": int(hp.get("expert_count", 0)), "n_ff_exp": n_ff_exp,
            "n_ff_shexp": int(hp.get("expert_shared_feed_forward_length", n_ff_exp * int(hp.get("expert_shared_count", 0)))),
            "n_lora_kv": lora_kv, "n_kv_a": lora_kv + n_rot, "n_qk_nope": k_mla - n_rot,
            "n_embd_q_mla": self.n_heads * k_mla, "n_embd_v_mla": v_mla, "n_embd_o_mla": self.n_heads * v_mla,
            "n_heads": self.n_heads, "n_embd_q_gated": 2 * n_embd_q,
            # a gated delta net's projections (Qwen3-Next's recurrent layers)
            "ssm_kernel": int(hp.get("ssm.conv_kernel", 0)), "ssm_state": int(hp.get("ssm.state_size", 0)),
            "ssm_inner": int(hp.get("ssm.inner_size", 0)), "ssm_dt_rank": int(hp.get("ssm.time_step_rank", 0)),
            "ssm_ba": 2 * int(hp.get("ssm.time_step_rank", 0)),
            "ssm_conv_dim": 2 * int(hp.get("ssm.group_count", 0)) * int(hp.get("ssm.state_size", 0)) + int(hp.get("ssm.inner_size", 0)),
        }

    def _layer_kinds(self) -> list[set[str]]:
        """Per block, the kinds architectures.toml's ``layers`` filters name: the feed-forward
        ("dense"; "dense_lead" and "moe" in a mixture of experts) and the mixer ("attention" or
        "recurrent")."""
        hp = self.hparams()
        lead = int(hp.get("leading_dense_block_count", 0))
        recurrent = recurrent_layers(self.architecture, hp, self.n_layers, self.tag)
        moe = bool(hp.get("expert_count"))
        return [{("dense_lead" if i < lead else "moe") if moe else "dense", "recurrent" if recurrent[i] else "attention"}
                for i in range(self.n_layers)]

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """The tensors a GGUF of this model holds (name, dims), in llama.cpp's quantizer order."""
        layout = load_data("architectures.toml")[self.architecture]
        dims = self.dimensions()

        def expand(entries: list[dict[str, Any]], prefix: str, kinds: set[str]) -> list[tuple[str, tuple[int, ...]]]:
            return [
                (prefix + e["name"], tuple(dims[d] for d in e["dims"]))
                for e in entries
                if not (e.get("unless_tied") and not self.output_tensor) and ("layers" not in e or kinds & set(e["layers"]))
            ]

        found = [t for t in expand(layout["globals"], "", set()) if t[0] == "token_embd.weight"]
        for i, kinds in enumerate(self._layer_kinds()):
            found += expand(layout["layer"], f"blk.{i}.", kinds)
        return found + [t for t in expand(layout["globals"], "", set()) if t[0] != "token_embd.weight"]


@dataclass(frozen=True)
class CatalogVariant:
    """A catalog model as a file of one file type."""

    model: CatalogModel
    file_type: FileType

    @property
    def tag(self) -> str:
        name = self.file_type.name
        return f"{self.model.tag}-{name[0].lower() + name[1:] if name.startswith('Q') else name.lower()}"

    @property
    def file_name(self) -> str:
        return self.model.gguf_file.format(QUANT=self.file_type.name, quant=self.file_type.name.lower())


@functools.cache
def models() -> tuple[CatalogModel, ...]:
    """Every model in the catalog."""
    data = load_data("catalog.toml")
    found = []
    for family, fam in data["families"].items():
        for entry in fam["models"]:
            shape = {**data["shapes"][entry["shape"]], **{k: v for k, v in entry.items() if k in _SHAPE_FIELDS}}
            found.append(CatalogModel(
                family=family, size=entry["size"], flavor=entry["flavor"], version=entry.get("version"),
                architecture=shape["architecture"], n_layers=shape["n_layers"], n_embd=shape["n_embd"],
                n_heads=shape["n_heads"], n_kv_heads=shape["n_kv_heads"], n_ff=shape["n_ff"],
                n_vocab=shape["n_vocab"], tokenizer=shape["tokenizer"], output_tensor=shape.get("output_tensor", True),
                trained_ctx=entry.get("trained_ctx", fam["trained_ctx"]), max_ctx=entry.get("max_ctx", fam["max_ctx"]),
                fim=entry["fim"], prompt_format=entry.get("prompt_format", fam["prompt_formats"][entry["flavor"]]),
                license=fam["license"], humaneval=entry.get("humaneval"), humaneval_source=entry.get("humaneval_source"),
                gguf_repo=entry["gguf_repo"], gguf_file=entry["gguf_file"], strengths=fam["strengths"],
                sources=tuple(fam["sources"]), based_on=fam.get("based_on"), recipe=entry.get("recipe", "current"), fim_style=fam.get("fim_style"),
                extra=tuple(sorted({**shape.get("hparams", {}), **entry.get("hparams", {})}.items())),
            ))
    return tuple(found)


_SHAPE_FIELDS = {"architecture", "n_layers", "n_embd", "n_heads", "n_kv_heads", "n_ff", "n_vocab", "tokenizer", "output_tensor"}


def variants(file_types: list[str] | None = None) -> list[CatalogVariant]:
    """Every model at every file type in ``file_types`` (default: the ladder's rungs)."""
    types = [file_type(t) for t in file_types] if file_types else ladder()
    return [CatalogVariant(m, ft) for m in models() for ft in types]


def find_model(ref: str) -> CatalogModel | None:
    """The catalog model a name (any spelling explain reads, quantization or not) denotes, if any."""
    return _model_for(_parse(ref))


def find_variant(ref: str) -> CatalogVariant:
    """The catalog variant a name denotes, or UnknownModelError with the nearest names."""
    name = _parse(ref)
    model = _model_for(name)
    if model is None or name.quant is None:
        raise _unknown(ref, "no catalog variant of that name" if model is None else "the name gives no quantization")
    if name.quant not in supported_file_types():
        raise _unknown(ref, f"no recipe for quantization {name.quant}")
    return CatalogVariant(model, file_type(name.quant))


def _parse(ref: str) -> VariantName:
    return explain_name(ref)


def _model_for(name: VariantName) -> CatalogModel | None:
    return _match_model(name.fine_tune or name.family, name.size_b, name.flavor, name.tuned_for)


def _match_model(family: str | None, size_b: float | None, flavor: str | None, tuned_for: str | None) -> CatalogModel | None:
    in_family = [m for m in models() if family and m.family.lower() == family.lower()]
    if size_b is None and len({m.size for m in in_family}) == 1:
        size_b = in_family[0].size_b  # a family published at one size names it without one (DeepSeek-Coder-V2-Lite, Devstral-Small)
    candidates = [m for m in in_family if m.size_b == size_b]
    if len(candidates) == 1 and candidates[0].family in ("Phind", "WizardCoder", "Command R"):
        return candidates[0]
    wanted = {"code": "base", None: "base"}.get(flavor, flavor)
    if tuned_for == "python" and wanted != "instruct":
        wanted = "python"
    return next((m for m in candidates if m.flavor == wanted), None)


def _unknown(ref: str, why: str) -> UnknownModelError:
    names = [f"{m.tag}-q4_K_M" for m in models()]
    close = difflib.get_close_matches(ref.lower(), [n.lower() for n in names], n=3, cutoff=0.4)
    by_lower = {n.lower(): n for n in names}
    return UnknownModelError(ref, [by_lower[c] for c in close], why=why, hint="run `variantlab catalog` to see the catalog")
