"""Other tools' model folders, written the way each tool writes them, for the scan tests.

Ollama: ``manifests/<registry>/<namespace>/<model>/<tag>`` (a Docker v2 manifest whose layers carry
Ollama's media types) and ``blobs/sha256-<hex>``. The Hugging Face cache: ``models--owner--repo/
blobs/<sha256>``, ``snapshots/<commit>/<file>`` as relative symlinks into ``blobs/``, ``refs/main``.
LM Studio: ``<models>/<publisher>/<repo>/<file>.gguf``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_PROJECTOR = "application/vnd.ollama.image.projector"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ollama_blob(root: Path, data: bytes) -> dict[str, object]:
    """Write ``data`` as an Ollama blob; its layer entry (digest and size)."""
    digest = _sha(data)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def ollama_model(root: Path, model: str, tag: str, layers: list[tuple[str, bytes]], *,
                 namespace: str = "library", registry: str = "registry.ollama.ai") -> Path:
    """An Ollama model as `ollama pull` leaves it: blobs for every layer and the config, and the manifest."""
    config = ollama_blob(root, json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    entries = [{"mediaType": media, **ollama_blob(root, data)} for media, data in layers]
    entries.append({"mediaType": "application/vnd.ollama.image.template", **ollama_blob(root, b"{{ .Prompt }}")})
    entries.append({"mediaType": "application/vnd.ollama.image.params", **ollama_blob(root, b'{"stop": ["<|im_end|>"]}')})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config}, "layers": entries}
    path = root / "manifests" / registry / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def hf_cached(cache: Path, repo_id: str, commit: str, files: dict[str, Path]) -> Path:
    """Files in the Hugging Face cache as huggingface_hub writes them; the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / _sha(data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def lmstudio_file(models: Path, publisher: str, repo: str, source: Path, name: str | None = None) -> Path:
    """A file where LM Studio's downloader puts it."""
    dest = models / publisher / repo / (name or source.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest
