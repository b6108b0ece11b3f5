"""What each layer of a model keeps in memory besides its weights, as llama.cpp allocates it.

A dense model keeps K and V for every context cell in every layer. The models people run
now do not: sliding-window layers keep only the window (plus a micro-batch), latent-attention
layers keep one compressed row per cell and no V, recurrent (linear-attention) layers keep
a fixed state whatever the context. Old formulas that multiply layers by context are off by
several times on exactly these models. This module reads the layout from the same numbers a
GGUF header carries (``ARCH.*`` keys, prefix stripped), so a file and a catalog entry are
read one way. The architecture-specific defaults are data (``architectures.toml``:
``[swa]``, ``[recurrent]``), with their llama.cpp sources.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ModelFileError
from . import load_data


@dataclass(frozen=True)
class LayerMemory:
    """One layer's cache: values per context cell (K and V), or a fixed recurrent state."""

    kind: str  # "full", "sliding", "latent" or "recurrent"
    k_values: int = 0  # per cell
    v_values: int = 0  # per cell; 0 where latent attention keeps V inside K
    window: int = 0  # sliding layers: the attention window in tokens
    state_values: int = 0  # recurrent layers: F32 values per sequence


@dataclass(frozen=True)
class Experts:
    """A mixture-of-experts model's routing: experts per layer and experts a token uses."""

    count: int
    used: int

    @property
    def active_share(self) -> float:
        """The fraction of expert weights one token reads."""
        return self.used / self.count if self.count else 1.0


@functools.cache
def _tables() -> dict[str, Any]:
    data = load_data("architectures.toml")
    return {"swa": data.get("swa", {}), "recurrent": data.get("recurrent", {})}


def is_expert_tensor(name: str) -> bool:
    """A routed-expert tensor (ffn_gate_exps, ffn_up_exps, ffn_down_exps): most of a mixture of
    experts' bytes, read only in the router's share, and what --n-cpu-moe keeps in RAM."""
    return "_exps." in name


def kind_counts(layers: Sequence[LayerMemory]) -> dict[str, int]:
    """How many layers of each cache kind, in order of first appearance ({"sliding": 15, "full": 3})."""
    return dict(Counter(layer.kind for layer in layers))


def _bad(where: str, problem: str) -> ModelFileError:
    return ModelFileError(where, problem, hint="the header contradicts itself: the file is damaged or was converted wrongly")


def per_layer(hp: Mapping[str, Any], key: str, n_layers: int, default: int, where: str = "header") -> list[int]:
    """A key that is one number for all layers or an array with one per layer (llama.cpp's get_key_or_arr)."""
    value = hp.get(key)
    if value is None:
        return [default] * n_layers
    if isinstance(value, list):
        if len(value) != n_layers:
            raise _bad(where, f"{key} lists {len(value)} values for {n_layers} layers")
        return [int(v) for v in value]
    return [int(value)] * n_layers


def experts(hp: Mapping[str, Any], where: str = "header") -> Experts | None:
    """The routing of a mixture-of-experts model, or None for a dense one."""
    count = int(hp.get("expert_count") or 0)
    if count <= 1:
        return None
    used = int(hp.get("expert_used_count") or 0)
    if not 1 <= used <= count:
        raise _bad(where, f"expert_used_count {used} is not between 1 and expert_count {count}")
    return Experts(count, used)


def sliding_layers(arch: str, hp: Mapping[str, Any], n_layers: int, where: str = "header") -> list[bool]:
    """Which layers use the sliding window (llama.cpp's set_swa_pattern for the architecture)."""
    rule = _tables()["swa"].get(arch)
    window = int(hp.get("attention.sliding_window") or 0)
    if rule is None or window <= 0:
        return [False] * n_layers
    pattern = hp.get("attention.sliding_window_pattern", rule["pattern"])
    if isinstance(pattern, list):
        if len(pattern) != n_layers:
            raise _bad(where, f"attention.sliding_window_pattern lists {len(pattern)} layers, the model has {n_layers}")
        return [bool(p) for p in pattern]
    n = int(pattern)
    if rule.get("dense_first", False):
        return [n == 0 or i % n != 0 for i in range(n_layers)]
    return [n == 0 or i % n < n - 1 for i in range(n_layers)]


def recurrent_layers(arch: str, hp: Mapping[str, Any], n_layers: int, where: str = "header") -> list[bool]:
    """Which layers are recurrent (linear attention or state space) and keep a fixed state."""
    rule = _tables()["recurrent"].get(arch)
    if rule is None:
        return [False] * n_layers
    listed = hp.get("attention.recurrent_layers")
    if isinstance(listed, list):
        if len(listed) != n_layers:
            raise _bad(where, f"attention.recurrent_layers lists {len(listed)} layers, the model has {n_layers}")
        return [bool(v) for v in listed]
    if rule.get("layers") == "all":
        return [True] * n_layers
    interval = int(hp.get(rule["interval_key"], rule["default_interval"]))
    if interval <= 0:
        raise _bad(where, f"{rule['interval_key']} {interval} is not a positive layer interval")
    return [(i + 1) % interval != 0 for i in range(n_layers)]


def recurrent_state_values(hp: Mapping[str, Any]) -> int:
    """F32 values of one recurrent layer's state per sequence: the convolution window and the
    state matrix (llama_hparams::n_embd_r + n_embd_s, the Mamba/gated-delta-net form)."""
    d_conv = int(hp.get("ssm.conv_kernel") or 0)
    d_inner = int(hp.get("ssm.inner_size") or 0)
    d_state = int(hp.get("ssm.state_size") or 0)
    groups = int(hp.get("ssm.group_count") or 0)
    conv = max(d_conv - 1, 0) * (d_inner + 2 * groups * d_state)
    return conv + d_state * d_inner


def layer_memory(arch: str, hp: Mapping[str, Any], where: str = "header") -> tuple[LayerMemory, ...]:
    """Every layer's cache layout, from a header's numbers (``block_count``, heads, key/value
    lengths, sliding window, latent-attention keys, recurrent keys)."""
    n_layers = int(hp.get("block_count") or 0)
    if n_layers <= 0:
        raise _bad(where, "block_count is missing or zero")
    n_embd = int(hp.get("embedding_length") or 0)
    heads = per_layer(hp, "attention.head_count", n_layers, 0, where)
    kv_heads = per_layer(hp, "attention.head_count_kv", n_layers, heads[0], where)
    default_head = n_embd // heads[0] if heads[0] else 0
    k_len = int(hp.get("attention.key_length") or default_head)
    v_len = int(hp.get("attention.value_length") or k_len)
    latent = bool(hp.get("attention.key_length_mla")) and bool(hp.get("attention.value_length_mla"))
    sliding = sliding_layers(arch, hp, n_layers, where)
    recurrent = recurrent_layers(arch, hp, n_layers, where)
    window = int(hp.get("attention.sliding_window") or 0)
    state = recurrent_state_values(hp) if any(recurrent) else 0
    found = []
    for i in range(n_layers):
        if recurrent[i]:
            found.append(LayerMemory("recurrent", state_values=state))
        elif latent:
            found.append(LayerMemory("latent", k_values=k_len * kv_heads[i]))
        else:
            kind = "sliding" if sliding[i] else "full"
            found.append(LayerMemory(kind, k_len * kv_heads[i], v_len * kv_heads[i], window if sliding[i] else 0))
    return tuple(found)


def check_layout(arch: str, hp: Mapping[str, Any], tensors: Sequence[tuple[str, tuple[int, ...]]], where: str = "header") -> None:
    """Refuse headers whose numbers contradict each other or the tensor table: an expert count
    the expert tensors do not have, a sliding window wider than the model's context."""
    routing = experts(hp, where)
    for name, dims in tensors:
        if is_expert_tensor(name) and len(dims) == 3:
            if routing is None:
                raise _bad(where, f"tensor {name} holds {dims[2]} experts but the header declares no expert_count")
            if dims[2] != routing.count:
                raise _bad(where, f"expert_count is {routing.count} but tensor {name} holds {dims[2]} experts")
    window = int(hp.get("attention.sliding_window") or 0)
    context = int(hp.get("context_length") or 0)
    if window and context and window > context and any(sliding_layers(arch, hp, int(hp.get("block_count") or 0), where)):
        raise _bad(where, f"attention.sliding_window {window} is larger than the model's context_length {context}")
