"""The default model as Ollama keeps it: scanned, imported in place, benched, evaluated and pinned;
then a byte of it changes and every command refuses it, naming the file (issue 21, acceptance 1–2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layouts import OLLAMA_MODEL, ollama_blob
from tests.net import free_port
from tests.test_discover import _disk_use

pytestmark = pytest.mark.integration
NAME = "ollama/qwen2.5-coder:0.5b"


def _ollama_with(root: Path, model_file: Path) -> Path:
    """The real file pulled as qwen2.5-coder:0.5b: its blob (copied, never the store's own) and manifest."""
    digest = model_file.name  # the store names a blob by its sha256, as Ollama does
    (root / "blobs").mkdir(parents=True)
    blob = root / "blobs" / f"sha256-{digest}"
    shutil.copyfile(model_file, blob)
    layer = {"mediaType": OLLAMA_MODEL, "digest": f"sha256:{digest}", "size": blob.stat().st_size}
    config = ollama_blob(root, b'{"model_format": "gguf"}')
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "qwen2.5-coder" / "0.5b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}))
    return blob


def test_an_imported_model_is_used_in_place_and_refused_once_changed(tmp_path: Path, default_model: str) -> None:
    blob = _ollama_with(tmp_path / "ollama", Path(default_model))
    home = tmp_path / "vl"
    env = {**os.environ, "VARIANTLAB_HOME": str(home), "HOME": str(tmp_path / "home"), "OLLAMA_MODELS": str(tmp_path / "ollama"),
           "HF_HUB_CACHE": str(tmp_path / "hf"), "LLAMA_CACHE": str(tmp_path / "lc"), "VARIANTLAB_LOCKFILE": str(tmp_path / "variantlab.lock")}

    def vl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "variantlab.cli.app", *args], env=env, capture_output=True, text=True, timeout=600)

    home.mkdir()
    before = _disk_use(home)
    scanned = vl("models", "scan", "--import", "--json")
    assert scanned.returncode == 0, scanned.stderr
    [imported] = json.loads(scanned.stdout)["imported"]
    assert imported == {"name": NAME, "path": str(blob), "imported": True, "already": False,
                        "sha256": Path(default_model).name, "problem": None}
    grown = _disk_use(home) - before
    assert grown < 1024 * 1024, f"the store grew by {grown} bytes for a {blob.stat().st_size}-byte model"

    bench = vl("bench", NAME, "--reps", "1", "--prompt", "16", "--gen", "8", "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["model"] == NAME
    evaluated = vl("eval", NAME, "--limit", "1", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert vl("lock", "add", "chat", NAME, "--fingerprint", "outputs").returncode == 0

    with blob.open("r+b") as fh:  # one byte of the last tensor's data
        fh.seek(-5, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-5, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0xFF]))
    for command in (("bench", NAME, "--reps", "1", "--prompt", "16", "--gen", "8"), ("eval", NAME, "--limit", "1"),
                    ("serve", NAME, "--port", str(free_port())), ("bench", "chat", "--reps", "1")):
        refused = vl(*command)
        assert refused.returncode == 2, (command, refused.stderr)
        assert str(blob) in refused.stderr and "sha256 mismatch" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2 and "Traceback" not in refused.stderr  # the error and its hint
    verify = vl("lock", "verify", "--json")
    assert verify.returncode == 1 and f"bytes changed on disk: {blob}" in verify.stdout

    blob.unlink()
    gone = vl("bench", NAME, "--reps", "1")
    assert gone.returncode == 2 and "Traceback" not in gone.stderr and f"{blob}, and that file is gone" in gone.stderr
    listed = vl("models", "verify", "--json")
    assert listed.returncode == 1 and f"file missing: {blob}" in listed.stdout
