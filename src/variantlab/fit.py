"""Will it fit? Memory for a model at a context length, on this machine, before loading it.

The estimate is the sum of what llama.cpp allocates, term by term:

- weights: every tensor's bytes, from the file's tensor table, or for a catalog variant
  from the architecture (architectures.toml) and llama.cpp's per-tensor recipe for the
  file type (quant_rules.toml);
- KV cache: layers × padded context × (K + V width) × element size of the cache type;
- compute: the activations of one micro-batch (what a CPU run touches), or on a GPU the
  buffer llama.cpp reserves, which includes a micro-batch of logits;
- overhead: the runtime, the loaded vocabulary and the output buffer (memory.toml).

The figures are for weights resident once (``--no-mmap``, or mmap with every page
touched), which is what must fit. ``docs/benchmarks.md`` compares them with measured peaks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingFileError, ModelFileError, StoreError, UnknownModelError, UsageError
from .hardware import gpus, ram_available_bytes
from .knowledge import load_data
from .knowledge.catalog import CatalogVariant, find_variant
from .knowledge.quant_rules import supported_file_types, tensor_types
from .knowledge.quants import file_types, quant_types
from .modelfile import TensorEntry, bytes_read_per_token, read_model_file
from .store import Store

KV_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
MAX_CTX = 1 << 22
GGUF_ALIGNMENT = 32


def gguf_file_bytes(header_bytes: int, tensor_bytes: Iterable[int]) -> int:
    """A GGUF file's size: the header, then each tensor's data padded to the file's alignment."""
    return header_bytes + sum(-(-n // GGUF_ALIGNMENT) * GGUF_ALIGNMENT for n in tensor_bytes)


@dataclass(frozen=True)
class Network:
    """What the estimate needs to know about a model, from a file or from the catalog."""

    label: str
    source: str  # "file" or "catalog"
    file_type: str | None
    n_layers: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_embd_kv: int
    max_ctx: int | None
    header_bytes: int
    tensors: list[TensorEntry] = field(repr=False)
    catalog: CatalogVariant | None = field(default=None, repr=False)

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def file_bytes(self) -> int:
        return gguf_file_bytes(self.header_bytes, (t.n_bytes for t in self.tensors))

    @property
    def bytes_read_per_token(self) -> int:
        return bytes_read_per_token(self.tensors)


@dataclass(frozen=True)
class FitRequest:
    """The question: this context, this KV cache type, this memory."""

    ctx: int = 4096
    kv_type: str = "f16"
    gpu_layers: str | int = "auto"
    n_ubatch: int = 512
    n_seq: int = 1
    ram_bytes: int | None = None  # None: the RAM available now
    vram_bytes: int | None = None  # None: the free VRAM of the first GPU, if any

    def checked(self) -> FitRequest:
        if not 1 <= self.ctx <= MAX_CTX:
            raise UsageError(f"context {self.ctx} is out of range", hint=f"use between 1 and {MAX_CTX} tokens")
        if self.kv_type not in KV_TYPES:
            raise UsageError(f"KV cache type {self.kv_type!r} is not one of {', '.join(KV_TYPES)}")
        if self.gpu_layers != "auto" and (not isinstance(self.gpu_layers, int) or self.gpu_layers < 0):
            raise UsageError(f"--gpu-layers {self.gpu_layers!r} is not 'auto' or a whole number ≥ 0")
        if self.ram_bytes is not None and not 0 < self.ram_bytes <= 1 << 50:
            raise UsageError(f"memory budget {self.ram_bytes} bytes is not a positive size", hint="give --mem in GiB, e.g. --mem 8")
        return self


@dataclass(frozen=True)
class Estimate:
    """The answer, term by term, with the verdict and the numbers behind it."""

    variant: str
    source: str
    file_type: str | None
    ctx: int
    kv_type: str
    file_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    total_bytes: int
    bytes_read_per_token: int
    gpu_layers: int
    n_layers: int
    gpu_bytes: int
    cpu_bytes: int
    ram_budget_bytes: int
    vram_budget_bytes: int
    fits: bool
    verdict: str
    headroom_bytes: int
    max_ctx: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- building the network description ---------------------------------------------------


def network_for(ref: str, store: Store | None = None) -> Network:
    """A store name, a GGUF path or a catalog variant → its network description."""
    store = store or Store()
    try:
        resolved = store.resolve(ref)
    except (UnknownModelError, StoreError, ModelFileError, MissingFileError) as exc:
        if isinstance(exc, ModelFileError) and Path(ref).expanduser().exists():
            raise  # a real file that is not a usable GGUF: say so, do not guess a catalog entry
        try:
            return network_from_catalog(find_variant(ref))
        except UnknownModelError as catalog_miss:
            suggestions = list(dict.fromkeys(catalog_miss.suggestions + getattr(exc, "suggestions", [])))[:4]
            raise UnknownModelError(ref, suggestions, why="not in the store, not a file, not in the catalog",
                                    hint="see `variantlab models list` and `variantlab catalog`") from None
    return network_from_file(resolved.path, resolved.label)  # read_model_file caches the header by file identity


def network_from_file(path: Any, label: str | None = None) -> Network:
    """Read a GGUF file's tensor table and the numbers the estimate needs."""
    mf = read_model_file(path)
    if not (mf.n_layers and mf.embedding_length and mf.n_kv_heads and mf.head_dim):
        raise ModelFileError(mf.path, "the header lacks layer count, width or attention heads: cannot estimate memory")
    return Network(
        label=label or str(path), source="file", file_type=mf.file_type, n_layers=mf.n_layers,
        n_embd=mf.embedding_length, n_ff=mf.feed_forward_length or 4 * mf.embedding_length,
        n_vocab=mf.vocab_size or 0, n_embd_kv=mf.n_kv_heads * mf.head_dim, max_ctx=mf.context_length,
        header_bytes=mf.data_offset,
        tensors=mf.tensors,
    )


def network_from_catalog(variant: CatalogVariant) -> Network:
    """The file a catalog variant would be: llama.cpp's recipe applied to the architecture."""
    model = variant.model
    layout = model.tensors()
    types = tensor_types([(n, d, None) for n, d in layout], variant.file_type.name, model.shape, era=model.recipe)
    qt = quant_types()
    tensors = [TensorEntry(n, t, d, qt[t].bytes_for(math.prod(d))) for (n, d), t in zip(layout, types)]
    header = load_data("architectures.toml")["header"]
    header_bytes = header["fixed_bytes"] + model.n_vocab * header["bytes_per_token"][model.tokenizer]
    return Network(
        label=variant.tag, source="catalog", file_type=variant.file_type.name, n_layers=model.n_layers,
        n_embd=model.n_embd, n_ff=model.n_ff, n_vocab=model.n_vocab, n_embd_kv=model.n_kv_heads * model.head_dim,
        max_ctx=model.max_ctx, header_bytes=header_bytes, tensors=tensors, catalog=variant,
    )


# -- the memory terms ----------------------------------------------------------------------


def _memory_facts() -> dict[str, Any]:
    return load_data("memory.toml")


def padded_ctx(ctx: int) -> int:
    pad = _memory_facts()["ctx_padding"]
    return -(-ctx // pad) * pad


def kv_cache_bytes(net: Network, ctx: int, kv_type: str, n_layers: int | None = None) -> int:
    """K and V for every layer (or ``n_layers`` of them) at the padded context."""
    per_row = quant_types()[KV_TYPES[kv_type]].bytes_for(net.n_embd_kv)
    layers = net.n_layers if n_layers is None else n_layers
    return 2 * layers * padded_ctx(ctx) * per_row


def compute_bytes(net: Network, ctx: int, n_ubatch: int, on_gpu: bool = False) -> int:
    """Activations of one micro-batch plus the attention mask; on a GPU, llama.cpp's reservation."""
    facts = _memory_facts()
    ubatch = min(n_ubatch, padded_ctx(ctx))
    width = facts["compute_ff_tensors"] * net.n_ff + facts["compute_embd_tensors"] * net.n_embd
    touched = ubatch * width * facts["compute_bytes_per_value"] + padded_ctx(ctx) * ubatch * facts["mask_bytes_per_value"]
    if not on_gpu:
        return touched
    return max(touched, ubatch * (net.n_vocab + 2 * net.n_embd) * facts["compute_bytes_per_value"])


def overhead_bytes(net: Network, n_seq: int) -> int:
    facts = _memory_facts()
    return facts["runtime_bytes"] + net.n_vocab * facts["vocab_bytes_per_token"] + n_seq * net.n_vocab * 4


def _layer_weights(net: Network) -> tuple[list[int], int, int]:
    """Weights per repeating layer, of the output head (norm + projection), and of the input embedding."""
    per_layer = [0] * net.n_layers
    head = embd = 0
    for t in net.tensors:
        if t.layer is not None and t.layer < net.n_layers:
            per_layer[t.layer] += t.n_bytes
        elif t.name == "token_embd.weight":
            embd += t.n_bytes
        else:
            head += t.n_bytes
    return per_layer, head, embd


# -- the estimate ------------------------------------------------------------------------------


def estimate(net: Network, request: FitRequest) -> Estimate:
    """Memory for ``net`` at ``request``, split between GPU and CPU, with the verdict."""
    req = request.checked()
    if net.max_ctx and req.ctx > net.max_ctx:
        raise UsageError(f"context {req.ctx} is beyond {net.label}'s maximum of {net.max_ctx} tokens",
                         hint=f"use --ctx {net.max_ctx} or less")
    ram = req.ram_bytes if req.ram_bytes is not None else ram_available_bytes()
    vram = req.vram_bytes if req.vram_bytes is not None else _free_vram()
    weights, kv = net.weights_bytes, kv_cache_bytes(net, req.ctx, req.kv_type)
    compute_cpu = compute_bytes(net, req.ctx, req.n_ubatch)
    overhead = overhead_bytes(net, req.n_seq)
    total = weights + kv + compute_cpu + overhead
    layers = _choose_gpu_layers(net, req, vram)
    gpu = _gpu_bytes(net, req, layers)
    cpu = total - _offloaded_bytes(net, req, layers)
    fits = cpu <= ram and gpu <= vram
    verdict = _verdict(fits, layers, net.n_layers)
    return Estimate(
        variant=net.label, source=net.source, file_type=net.file_type, ctx=req.ctx, kv_type=req.kv_type,
        file_bytes=net.file_bytes, weights_bytes=weights, kv_cache_bytes=kv, compute_bytes=compute_cpu,
        overhead_bytes=overhead, total_bytes=total, bytes_read_per_token=net.bytes_read_per_token,
        gpu_layers=layers, n_layers=net.n_layers, gpu_bytes=gpu, cpu_bytes=cpu, ram_budget_bytes=ram,
        vram_budget_bytes=vram, fits=fits, verdict=verdict, headroom_bytes=(ram - cpu) + (vram - gpu if layers else 0),
        max_ctx=net.max_ctx,
    )


def _verdict(fits: bool, layers: int, n_layers: int) -> str:
    if not fits:
        return "does not fit"
    if 0 < layers <= n_layers:
        return "fits with partial offload"
    return "fits"


def _free_vram() -> int:
    found = gpus()
    return int(found[0]["free_bytes"]) if found else 0


def _offloaded_bytes(net: Network, req: FitRequest, layers: int) -> int:
    """What moves from RAM to the GPU with ``layers`` offloaded: llama.cpp offloads the last
    layers first, the output head only when all layers are offloaded; the input embedding stays."""
    if layers == 0:
        return 0
    per_layer, head, _ = _layer_weights(net)
    repeating = min(layers, net.n_layers)
    moved = sum(per_layer[net.n_layers - repeating:]) + kv_cache_bytes(net, req.ctx, req.kv_type, repeating)
    return moved + (head if layers > net.n_layers else 0)


def _gpu_bytes(net: Network, req: FitRequest, layers: int) -> int:
    if layers == 0:
        return 0
    return (_offloaded_bytes(net, req, layers) + compute_bytes(net, req.ctx, req.n_ubatch, on_gpu=True)
            + _memory_facts()["gpu_runtime_bytes"])


def _choose_gpu_layers(net: Network, req: FitRequest, vram: int) -> int:
    """``auto``: the most layers whose GPU share fits in free VRAM (the output head counts as one more)."""
    if vram <= 0:
        return 0
    if req.gpu_layers != "auto":
        return min(int(req.gpu_layers), net.n_layers + 1)
    best = 0
    for layers in range(1, net.n_layers + 2):
        if _gpu_bytes(net, req, layers) <= vram:
            best = layers
    return best


def fit(ref: str, request: FitRequest, store: Store | None = None) -> Estimate:
    """The estimate for a store name, GGUF path or catalog variant."""
    return estimate(network_for(ref, store), request)


def check_claims(claims: list[tuple[str, float]], tolerance: float = 0.02) -> list[dict[str, Any]]:
    """For each (variant, claimed size in GB): is the size plausible, and which variant does it match?"""
    results = []
    for ref, claimed_gb in claims:
        variant = find_variant(ref)
        claimed = claimed_gb * 1e9
        sizes = {sib.tag: (sib, network_from_catalog(sib).file_bytes) for sib in _sibling_variants(variant)}
        sizes[variant.tag] = (variant, network_from_catalog(variant).file_bytes)
        predicted = sizes[variant.tag][1]
        plausible = abs(predicted - claimed) <= tolerance * predicted
        nearest, nearest_bytes = sizes[variant.tag] if plausible else min(sizes.values(), key=lambda s: abs(s[1] - claimed))
        results.append({
            "variant": variant.tag, "claimed_bytes": int(claimed), "predicted_bytes": predicted,
            "difference": (claimed - predicted) / predicted, "plausible": plausible,
            "matches": nearest.tag, "matches_bytes": nearest_bytes,
        })
    return results


def _sibling_variants(variant: CatalogVariant) -> list[CatalogVariant]:
    """The same model at every k-quant, legacy and float file type the recipe knows."""
    types = file_types()
    return [CatalogVariant(variant.model, types[name]) for name in supported_file_types()
            if name in types and types[name].scheme in ("k-quant", "legacy", "float")]
