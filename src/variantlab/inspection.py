"""`inspect`: the facts of one model file as a report with stable keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .explain import Disagreement, VariantName, compare_with_file, explain_name
from .files import ProgressFn, no_progress, sha256_file
from .knowledge.layers import experts, kind_counts, layer_memory
from .modelfile import ModelFile, read_model_file
from .store import ResolvedModel, Store


def inspect_model(ref: str, *, store: Store | None = None, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Resolve ``ref`` (store name or path), read its header, and report it.

    The sha256 comes from the store's manifest when the model is stored, else the file is hashed.
    """
    resolved = (store or Store()).resolve(ref)
    info = read_model_file(resolved.path)
    sha = resolved.manifest.sha256 if resolved.manifest else sha256_file(resolved.path, progress)
    return model_report(info, resolved, sha)


def model_report(info: ModelFile, resolved: ResolvedModel, sha256: str) -> dict[str, Any]:
    """The JSON shape of `variantlab inspect --json` (keys are part of the interface)."""
    return {
        "model": resolved.label,
        "path": str(resolved.path),
        "name": info.name,
        "architecture": info.architecture,
        "parameters": info.parameters,
        "file_type": info.file_type,
        "file_type_id": info.file_type_id,
        "bits_per_weight": round(info.bits_per_weight, 4),
        "file_size": info.file_size,
        "tensor_bytes": info.tensor_bytes,
        "context_length": info.context_length,
        "n_layers": info.n_layers,
        "n_heads": info.n_heads,
        "n_kv_heads": info.n_kv_heads,
        "embedding_length": info.embedding_length,
        "feed_forward_length": info.feed_forward_length,
        "head_dim": info.head_dim,
        "vocab_size": info.vocab_size,
        **_layout(info),
        "tensor_types": [
            {"type": t.type, "n_tensors": t.n_tensors, "n_elements": t.n_elements,
             "bytes": t.n_bytes, "share_of_bytes": round(t.share_of_bytes, 6)}
            for t in info.tensor_types
        ],
        "has_chat_template": info.has_chat_template,
        "fim_tokens": info.fim_tokens,
        "tokenizer_model": info.tokenizer_model,
        "license": info.license,
        "sha256": sha256,
    }


def _layout(info: ModelFile) -> dict[str, Any]:
    """Experts and the kinds of cache layer (what makes memory and speed differ from a dense model)."""
    routing = experts(info.hparams, str(info.path))
    kinds = kind_counts(layer_memory(info.architecture, info.hparams, str(info.path))) if info.n_layers else {}
    return {
        "experts": {"count": routing.count, "used": routing.used} if routing else None,
        "sliding_window": int(info.hparams.get("attention.sliding_window") or 0) or None,
        "cache_layers": kinds,
    }


def explain_variant(ref: str, *, store: Store | None = None) -> tuple[VariantName, list[Disagreement] | None]:
    """Decode a name; when it names a stored model or an existing file, check it against the header.

    Returns the decoded name and the disagreements (None when there was no file to compare).
    """
    store = store or Store()
    manifest = store.manifest(ref)
    if manifest is not None:
        path = store.model_file(manifest)
    else:
        path = Path(ref).expanduser()
        if not os.path.lexists(path):
            return explain_name(ref), None  # a name only
        # something is there: a file to check, or a folder, FIFO or broken link the reader names as such
    claims = explain_name(ref)
    return claims, compare_with_file(claims, read_model_file(path))
