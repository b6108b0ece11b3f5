"""Will it fit? Memory for a model at a context length, on this machine, before loading it.

The estimate is the sum of what llama.cpp allocates, term by term:

- weights: every tensor's bytes, from the file's tensor table, or for a catalog variant
  from the architecture (architectures.toml) and llama.cpp's per-tensor recipe for the
  file type (quant_rules.toml);
- KV cache: per layer, as llama.cpp allocates it: context cells × (K + V width) on full
  attention layers, window + micro-batch cells on sliding-window layers, one compressed
  row and no V on latent-attention layers, a fixed state on recurrent layers
  (knowledge/layers.py);
- compute: the activations of one micro-batch (what a CPU run touches), or on a GPU the
  buffer llama.cpp reserves, which includes a micro-batch of logits;
- overhead: the runtime, the loaded vocabulary and the output buffer (memory.toml).

The figures are for weights resident once (``--no-mmap``, or mmap with every page
touched), which is what must fit. ``docs/benchmarks.md`` compares them with measured peaks.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import MissingFileError, ModelFileError, StoreError, UnknownModelError, UsageError
from .hardware import gpus, ram_available_bytes
from .knowledge import load_data
from .knowledge.catalog import CatalogVariant, find_variant
from .knowledge.layers import Experts, LayerMemory, check_layout, experts, is_expert_tensor, kind_counts, layer_memory
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
    max_ctx: int | None
    header_bytes: int
    tensors: list[TensorEntry] = field(repr=False)
    layers: tuple[LayerMemory, ...] = field(repr=False, default=())
    experts: Experts | None = None
    catalog: CatalogVariant | None = field(default=None, repr=False)
    path: str | None = None  # the file on disk, or the published file name of a catalog variant
    tokenizer: str | None = None  # llama.cpp's tokenizer model: "gpt2" (BPE), "llama" (SentencePiece), …

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def expert_bytes(self) -> int:
        """Bytes of the routed-expert tensors (``*_exps``): most of a mixture of experts, little of it read per token."""
        return sum(t.n_bytes for t in self.tensors if is_expert_tensor(t.name))

    @property
    def file_bytes(self) -> int:
        return gguf_file_bytes(self.header_bytes, (t.n_bytes for t in self.tensors))

    @property
    def bytes_read_per_token(self) -> int:
        """Weight bytes one generated token reads: routed experts only in the share the router picks."""
        return bytes_read_per_token(self.tensors, self.experts.active_share if self.experts else 1.0)


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
    n_cpu_moe: int | None = None  # experts of the first N layers kept in RAM; None: chosen with gpu_layers "auto"

    def checked(self) -> FitRequest:
        if not 1 <= self.ctx <= MAX_CTX:
            raise UsageError(f"context {self.ctx} is out of range", hint=f"use between 1 and {MAX_CTX} tokens")
        if self.kv_type not in KV_TYPES:
            raise UsageError(f"KV cache type {self.kv_type!r} is not one of {', '.join(KV_TYPES)}")
        if self.gpu_layers != "auto" and (not isinstance(self.gpu_layers, int) or self.gpu_layers < 0):
            raise UsageError(f"--gpu-layers {self.gpu_layers!r} is not 'auto' or a whole number ≥ 0")
        if self.n_cpu_moe is not None and (not isinstance(self.n_cpu_moe, int) or self.n_cpu_moe < 0):
            raise UsageError(f"--n-cpu-moe {self.n_cpu_moe!r} is not a whole number ≥ 0")
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
    expert_bytes: int = 0
    experts: str | None = None  # "8 of 128" for a mixture of experts
    cpu_moe_layers: int = 0  # layers whose expert tensors stay in RAM while the layer is on the GPU (--n-cpu-moe)
    kv_layers: dict[str, int] = field(default_factory=dict)  # layers per cache kind: full, sliding, latent, recurrent

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
    if not (mf.n_layers and mf.embedding_length and mf.n_heads):
        raise ModelFileError(mf.path, "the header lacks layer count, width or attention heads: cannot estimate memory")
    where = str(mf.path)
    check_layout(mf.architecture, mf.hparams, [(t.name, t.dims) for t in mf.tensors], where)
    return Network(
        label=label or str(path), source="file", file_type=mf.file_type, n_layers=mf.n_layers,
        n_embd=mf.embedding_length, n_ff=mf.feed_forward_length or 4 * mf.embedding_length,
        n_vocab=mf.vocab_size or 0, max_ctx=context_limit(mf.context_length, mf.hparams),
        header_bytes=mf.data_offset, tensors=mf.tensors,
        layers=layer_memory(mf.architecture, mf.hparams, where), experts=experts(mf.hparams, where), path=str(path),
        tokenizer=mf.tokenizer_model,
    )


def context_limit(context_length: int | None, hp: dict[str, Any]) -> int | None:
    """The most tokens a file is meant for: its trained context, or what its rope scaling
    extends (original context × factor, as llama.cpp's YaRN does) when that is larger."""
    factor = float(hp.get("rope.scaling.factor") or 0)
    original = int(hp.get("rope.scaling.original_context_length") or 0)
    extended = int(original * factor) if factor > 1 and original else 0
    return max(context_length or 0, extended) or None


def network_from_catalog(variant: CatalogVariant) -> Network:
    """The file a catalog variant would be: llama.cpp's recipe applied to the architecture."""
    model = variant.model
    layout = model.tensors()
    types = tensor_types([(n, d, None) for n, d in layout], variant.file_type.name, model.shape, era=model.recipe)
    qt = quant_types()
    tensors = [TensorEntry(n, t, d, qt[t].bytes_for(math.prod(d))) for (n, d), t in zip(layout, types)]
    header = load_data("architectures.toml")["header"]
    header_bytes = header["fixed_bytes"] + model.n_vocab * header["bytes_per_token"][model.tokenizer]
    hp = model.hparams()
    return Network(
        label=variant.tag, source="catalog", file_type=variant.file_type.name, n_layers=model.n_layers,
        n_embd=model.n_embd, n_ff=model.n_ff, n_vocab=model.n_vocab,
        max_ctx=model.max_ctx, header_bytes=header_bytes, tensors=tensors,
        layers=layer_memory(model.architecture, hp, variant.tag), experts=experts(hp, variant.tag), catalog=variant,
        path=variant.file_name, tokenizer=model.tokenizer,
    )


# -- the memory terms ----------------------------------------------------------------------


def _memory_facts() -> dict[str, Any]:
    return load_data("memory.toml")


def padded_ctx(ctx: int) -> int:
    pad = _memory_facts()["ctx_padding"]
    return -(-ctx // pad) * pad


def layer_cache_bytes(layer: LayerMemory, ctx: int, kv_type: str, n_ubatch: int = 512, n_seq: int = 1) -> int:
    """One layer's cache as llama.cpp allocates it (llama-kv-cache.cpp, -iswa.cpp, -memory-recurrent.cpp)."""
    if layer.kind == "recurrent":
        return layer.state_values * 4 * max(1, n_seq)  # F32 convolution and state rows, one per sequence
    cells = padded_ctx(ctx)
    if layer.kind == "sliding":
        cells = min(cells, padded_ctx(layer.window + n_ubatch))
    qt = quant_types()[KV_TYPES[kv_type]]
    return cells * (qt.bytes_for(layer.k_values) + (qt.bytes_for(layer.v_values) if layer.v_values else 0))


def kv_cache_bytes(net: Network, ctx: int, kv_type: str, n_layers: int | None = None, n_ubatch: int = 512, n_seq: int = 1) -> int:
    """The cache of every layer, or of the last ``n_layers`` (the ones offloaded first)."""
    count = len(net.layers) if n_layers is None else n_layers
    return sum(layer_cache_bytes(layer, ctx, kv_type, n_ubatch, n_seq) for layer in net.layers[len(net.layers) - count:])


def compute_bytes(net: Network, ctx: int, n_ubatch: int, on_gpu: bool = False) -> int:
    """Activations of one micro-batch plus the attention mask; on a GPU, llama.cpp's reservation."""
    facts = _memory_facts()
    ubatch = min(n_ubatch, padded_ctx(ctx))
    width = facts["compute_ff_tensors"] * net.n_ff + facts["compute_embd_tensors"] * net.n_embd
    touched = ubatch * width * facts["compute_bytes_per_value"] + padded_ctx(ctx) * ubatch * facts["mask_bytes_per_value"]
    if not on_gpu:
        return touched
    return max(touched, ubatch * (net.n_vocab + 2 * net.n_embd) * facts["compute_bytes_per_value"])


def matmul_work_bytes(net: Network, n_ubatch: int) -> int:
    """The CPU backend's work buffer: a micro-batch's input to the widest matrix product,
    converted to the type the weight's dot product reads (ggml-cpu.c ``ggml_graph_plan``; one
    buffer, sized for the largest product). The routed experts' down projection reads one row
    per token and picked expert; their gate and up projections share the token's row
    (llama-graph.cpp, build_moe_ffn)."""
    activation = _memory_facts()["matmul_activation_type"]
    qtypes = quant_types()
    widest = 0
    for t in net.tensors:
        kind = activation.get(t.type)
        if t.layer is None or len(t.dims) < 2 or kind is None:
            continue  # the head multiplies the last token only; norms and biases are no products
        per_expert = net.experts is not None and is_expert_tensor(t.name) and "down" in t.name
        rows = n_ubatch * (net.experts.used if per_expert and net.experts else 1)
        widest = max(widest, rows * qtypes[kind].bytes_for(t.dims[0]))
    return widest


def overhead_bytes(net: Network, n_seq: int, ctx: int = 0, n_ubatch: int = 512) -> int:
    """Everything besides the weights, the KV cache and llama.cpp's compute buffer: the runtime,
    the vocabulary, the CPU's matmul work buffer (not in llama.cpp's buffer report), per
    sequence its logits row and sampler candidates, per context cell llama.cpp's bookkeeping
    and the prompt's token."""
    facts = _memory_facts()
    per_token = facts["vocab_bytes_per_token"]
    vocab = net.n_vocab * per_token.get(net.tokenizer or "", per_token["default"])
    per_sequence = net.n_vocab * (4 + facts["sampler_candidate_bytes"])
    cells = padded_ctx(ctx)
    work = matmul_work_bytes(net, min(n_ubatch, cells)) if cells else 0
    return facts["runtime_bytes"] + vocab + work + n_seq * per_sequence + cells * facts["context_cell_bytes"]


@dataclass(frozen=True)
class _Placement:
    """Where the weights sit: repeating layers offloaded (the output head counts as one more)
    and the first layers whose routed experts stay in RAM (llama.cpp's --n-cpu-moe)."""

    gpu_layers: int
    cpu_moe: int = 0


def _layer_weights(net: Network) -> tuple[list[int], list[int], int, int]:
    """Weights per repeating layer, of those the routed experts, of the output head, of the input embedding."""
    per_layer = [0] * net.n_layers
    expert = [0] * net.n_layers
    head = embd = 0
    for t in net.tensors:
        if t.layer is not None and t.layer < net.n_layers:
            per_layer[t.layer] += t.n_bytes
            if is_expert_tensor(t.name):
                expert[t.layer] += t.n_bytes
        elif t.name == "token_embd.weight":
            embd += t.n_bytes
        else:
            head += t.n_bytes
    return per_layer, expert, head, embd


# -- the estimate ------------------------------------------------------------------------------


def estimate(net: Network, request: FitRequest) -> Estimate:
    """Memory for ``net`` at ``request``, split between GPU and CPU, with the verdict."""
    req = request.checked()
    if net.max_ctx and req.ctx > net.max_ctx:
        raise UsageError(f"context {req.ctx} is beyond {net.label}'s maximum of {net.max_ctx} tokens",
                         hint=f"use --ctx {net.max_ctx} or less, or `fit --max-ctx` for the largest that fits")
    ram = req.ram_bytes if req.ram_bytes is not None else ram_available_bytes()
    vram = req.vram_bytes if req.vram_bytes is not None else _free_vram()
    weights, kv = net.weights_bytes, kv_cache_bytes(net, req.ctx, req.kv_type, n_ubatch=req.n_ubatch, n_seq=req.n_seq)
    compute_cpu = compute_bytes(net, req.ctx, req.n_ubatch)
    overhead = overhead_bytes(net, req.n_seq, req.ctx, req.n_ubatch)
    total = weights + kv + compute_cpu + overhead
    place = _choose_placement(net, req, vram)
    gpu = _gpu_bytes(net, req, place)
    cpu = total - _offloaded_bytes(net, req, place)
    fits = cpu <= ram and gpu <= vram
    return Estimate(
        variant=net.label, source=net.source, file_type=net.file_type, ctx=req.ctx, kv_type=req.kv_type,
        file_bytes=net.file_bytes, weights_bytes=weights, kv_cache_bytes=kv, compute_bytes=compute_cpu,
        overhead_bytes=overhead, total_bytes=total, bytes_read_per_token=net.bytes_read_per_token,
        gpu_layers=place.gpu_layers, n_layers=net.n_layers, gpu_bytes=gpu, cpu_bytes=cpu, ram_budget_bytes=ram,
        vram_budget_bytes=vram, fits=fits, verdict=_verdict(fits, place.gpu_layers, net.n_layers),
        headroom_bytes=(ram - cpu) + (vram - gpu if place.gpu_layers else 0), max_ctx=net.max_ctx,
        expert_bytes=net.expert_bytes, experts=f"{net.experts.used} of {net.experts.count}" if net.experts else None,
        cpu_moe_layers=place.cpu_moe if place.gpu_layers else 0, kv_layers=kind_counts(net.layers),
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


def _offloaded_bytes(net: Network, req: FitRequest, place: _Placement) -> int:
    """What moves from RAM to the GPU: llama.cpp offloads the last layers first, the output head
    only when all layers are offloaded, never the input embedding; the routed experts of the
    first ``cpu_moe`` layers stay in RAM with their layer on the GPU."""
    if place.gpu_layers == 0:
        return 0
    per_layer, expert, head, _ = _layer_weights(net)
    repeating = min(place.gpu_layers, net.n_layers)
    first = net.n_layers - repeating
    moved = sum(per_layer[first:]) - sum(expert[first:max(first, place.cpu_moe)])
    moved += kv_cache_bytes(net, req.ctx, req.kv_type, repeating, req.n_ubatch, req.n_seq)
    return moved + (head if place.gpu_layers > net.n_layers else 0)


def _gpu_bytes(net: Network, req: FitRequest, place: _Placement) -> int:
    if place.gpu_layers == 0:
        return 0
    return (_offloaded_bytes(net, req, place) + compute_bytes(net, req.ctx, req.n_ubatch, on_gpu=True)
            + _memory_facts()["gpu_runtime_bytes"])


def _choose_placement(net: Network, req: FitRequest, vram: int) -> _Placement:
    """``auto``: every layer on the GPU if it fits; for a mixture of experts, next the fewest
    layers' experts kept in RAM that makes every dense part fit (dense weights and the KV cache
    are read for every token, an expert rarely); else the most layers that fit."""
    if vram <= 0:
        return _Placement(0)
    cpu_moe = min(req.n_cpu_moe or 0, net.n_layers)
    if req.gpu_layers != "auto":
        return _Placement(min(int(req.gpu_layers), net.n_layers + 1), cpu_moe)
    everything = net.n_layers + 1
    if net.experts and req.n_cpu_moe is None:
        for keep in range(net.n_layers + 1):
            if _gpu_bytes(net, req, _Placement(everything, keep)) <= vram:
                return _Placement(everything, keep)
        cpu_moe = net.n_layers
    best = _Placement(0)
    for layers in range(1, everything + 1):
        if _gpu_bytes(net, req, _Placement(layers, cpu_moe)) <= vram:
            best = _Placement(layers, cpu_moe)
    return best


def fit(ref: str, request: FitRequest, store: Store | None = None) -> Estimate:
    """The estimate for a store name, GGUF path or catalog variant."""
    return estimate(network_for(ref, store), request)


def check_draft(target: Path, draft: Path, draft_label: str, request: FitRequest) -> Estimate:
    """A draft model for speculative decoding, checked before either loads: the target's tokenizer,
    fewer weights than the target, and room in memory for both at ``request``'s context (each gets
    a context of that size). Returns the draft's own estimate."""
    t_net, d_net = network_from_file(target), network_from_file(draft, draft_label)
    if t_net.tokenizer != d_net.tokenizer or abs(t_net.n_vocab - d_net.n_vocab) > 128:
        raise UsageError(f"the draft {draft_label} has another vocabulary ({d_net.tokenizer}, {d_net.n_vocab} tokens) than the "
                         f"target ({t_net.tokenizer}, {t_net.n_vocab} tokens): its guesses would be other tokens",
                         hint="give a smaller model of the target's family (Qwen2.5-Coder 0.5B for the 1.5B), or --lookup")
    if d_net.weights_bytes >= t_net.weights_bytes:
        raise UsageError(f"the draft {draft_label} ({d_net.weights_bytes / 2**30:.2f} GiB of weights) is not smaller than "
                         f"the target ({t_net.weights_bytes / 2**30:.2f} GiB): guessing would cost more than it saves",
                         hint="give a smaller draft, or swap the two")
    target_est, draft_est = estimate(t_net, request), estimate(d_net, request)
    needed = target_est.cpu_bytes + draft_est.cpu_bytes
    if needed > target_est.ram_budget_bytes:
        raise UsageError(f"the draft {draft_label} ({draft_est.cpu_bytes / 2**30:.2f} GiB at {request.ctx} tokens) does not fit "
                         f"beside the target ({target_est.cpu_bytes / 2**30:.2f} GiB): {needed / 2**30:.2f} GiB needed, "
                         f"{target_est.ram_budget_bytes / 2**30:.2f} GiB available",
                         hint="use a smaller context or a smaller draft, or --lookup (no second model)")
    return draft_est


def max_context(net: Network, request: FitRequest) -> Estimate:
    """The largest context that fits the budget: a multiple of 256 (llama.cpp's padding), at
    most the model's limit, found by bisection over the estimate (memory grows with context).
    When not even 256 tokens fit, the estimate at 256 says so."""
    step = _memory_facts()["ctx_padding"]
    limit = net.max_ctx or MAX_CTX
    top = max(limit // step, 1)

    def at(k: int) -> Estimate:
        return estimate(net, replace(request, ctx=min(k * step, limit)))

    best = at(top)
    if best.fits:
        return best
    low = at(1)
    if not low.fits:
        return low
    lo, hi = 1, top  # at(lo) fits, at(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).fits:
            lo = mid
        else:
            hi = mid
    return at(lo)


FLAG_TOOLS = ("llama-server", "llama-cli", "ollama")


def command_line(est: Estimate, model_path: str, tool: str) -> str:
    """The command (or Ollama Modelfile) that runs the model exactly as ``est`` planned it:
    context, one sequence, layers offloaded, experts kept in RAM, KV cache type, flash
    attention, weights read into memory once (no mmap), no automatic re-fitting."""
    if tool not in FLAG_TOOLS:
        raise UsageError(f"--flags {tool!r} is not one of {', '.join(FLAG_TOOLS)}")
    if tool == "ollama":
        return _ollama_modelfile(est, model_path)
    args = [tool, "-m", model_path, "-c", str(est.ctx), "-ngl", str(est.gpu_layers)]
    if tool == "llama-server":
        args += ["-np", "1"]
    if est.cpu_moe_layers:
        args += ["--n-cpu-moe", str(est.cpu_moe_layers)]
    args += ["-ctk", est.kv_type, "-ctv", est.kv_type, "-fa", "on", "--load-mode", "none", "-fit", "off"]
    return " ".join(shlex.quote(a) for a in args)


def _ollama_modelfile(est: Estimate, model_path: str) -> str:
    lines = [f"FROM {model_path}", f"PARAMETER num_ctx {est.ctx}", f"PARAMETER num_gpu {est.gpu_layers}",
             "# set for `ollama serve`: OLLAMA_FLASH_ATTENTION=1"
             + (f" OLLAMA_KV_CACHE_TYPE={est.kv_type}" if est.kv_type != "f16" else "")]
    if est.cpu_moe_layers:
        lines.append(f"# Ollama cannot keep the experts of the first {est.cpu_moe_layers} layers in RAM (llama.cpp's "
                     "--n-cpu-moe); this plan needs llama-server for that split")
    return "\n".join(lines)


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
