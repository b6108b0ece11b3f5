"""`models scan` and models registered in place (issue 21), on each tool's own layout with small real GGUF files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layouts import OLLAMA_MODEL, OLLAMA_PROJECTOR, hf_cached, lmstudio_file, ollama_model
from tests.tiny_gguf import write_tiny_model
from variantlab.errors import IntegrityError, StoreError
from variantlab.lock import gc as gc_lib
from variantlab.lock import pins
from variantlab.store import Store, fetch
from variantlab.store.discover import Found, import_found, scan

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny(path: Path, label: str, **kwargs: object) -> Path:
    """A small real GGUF whose bytes differ by ``label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tiny_model(path, name=f"Tiny {label}", **kwargs)  # type: ignore[arg-type]


def tool_env(tmp_path: Path) -> dict[str, str]:
    """Each tool's folder where its own environment variable (or HOME) puts it, inside the test."""
    return {"HOME": str(tmp_path / "home"), "OLLAMA_MODELS": str(tmp_path / "ollama"),
            "HF_HUB_CACHE": str(tmp_path / "hf"), "LLAMA_CACHE": str(tmp_path / "llamacpp")}


@pytest.fixture
def layouts(tmp_path: Path) -> dict[str, Path]:
    """One model (or more) in each tool's folder, and the files' sources."""
    src = tmp_path / "src"
    env = tool_env(tmp_path)
    files = {
        "ollama": tiny(src / "o.gguf", "ollama", n_layers=8),
        "projector": tiny(src / "proj.gguf", "projector", arch="clip", general_type="mmproj"),
        "hf": tiny(src / "h.gguf", "hf"),
        "lmstudio": tiny(src / "l.gguf", "lmstudio"),
        "adapter": tiny(src / "lora.gguf", "lora", general_type="adapter", extra_kv={"adapter.type": "lora"}),
        "llamacpp": tiny(src / "c.gguf", "llama.cpp"),
    }
    ollama_model(Path(env["OLLAMA_MODELS"]), "codellama", "13b-instruct-q4_K_M",
                 [(OLLAMA_MODEL, files["ollama"].read_bytes()), (OLLAMA_PROJECTOR, files["projector"].read_bytes())])
    hf_cached(Path(env["HF_HUB_CACHE"]), "owner/repo", COMMIT, {"repo-Q4_K_M.gguf": files["hf"]})
    lms = Path(env["HOME"]) / ".lmstudio" / "models"
    lmstudio_file(lms, "lmstudio-community", "Tiny-GGUF", files["lmstudio"], "tiny-Q4_K_M.gguf")
    lmstudio_file(lms, "lmstudio-community", "Tiny-GGUF", files["adapter"], "tiny-lora.gguf")
    for i in (1, 2):  # a split model in llama.cpp's cache: one entry
        tiny(Path(env["LLAMA_CACHE"]) / f"big-model-Q8_0-0000{i}-of-00002.gguf", f"part {i}",
             extra_kv={"split.no": i - 1, "split.count": 2})
    return {**files, **{k: Path(v) for k, v in env.items()}}


def by_tool(found: list[Found]) -> dict[str, list[Found]]:
    out: dict[str, list[Found]] = {}
    for f in found:
        out.setdefault(f.tool, []).append(f)
    return out


def test_scan_finds_each_tools_files_under_the_names_the_tool_uses(layouts: dict[str, Path], tmp_path: Path) -> None:
    report = scan(env=tool_env(tmp_path))
    tools = by_tool(report.found)
    assert report.problems == []
    ollama = {f.name: f for f in tools["ollama"]}
    assert ollama["codellama:13b-instruct-q4_K_M"].kind == "model"
    assert ollama["codellama:13b-instruct-q4_K_M"].file_type == "Q4_K_M"
    assert ollama["codellama:13b-instruct-q4_K_M"].sha256 == hashlib.sha256(layouts["ollama"].read_bytes()).hexdigest()
    assert ollama["codellama:13b-instruct-q4_K_M"].store_name == "ollama/codellama:13b-instruct-q4_K_M"
    assert ollama["codellama:13b-instruct-q4_K_M (projector)"].kind == "projector"
    [hf] = tools["huggingface"]
    assert (hf.name, hf.store_name, hf.kind) == (f"hf:owner/repo/repo-Q4_K_M.gguf@{COMMIT}", "hf/owner/repo/repo-Q4_K_M.gguf", "model")
    assert hf.sha256 == hashlib.sha256(layouts["hf"].read_bytes()).hexdigest()  # the cache's blob name
    lms = {f.name: f for f in tools["lmstudio"]}
    assert lms["lmstudio-community/Tiny-GGUF/tiny-Q4_K_M.gguf"].kind == "model"
    assert lms["lmstudio-community/Tiny-GGUF/tiny-Q4_K_M.gguf"].fetch == "hf:lmstudio-community/Tiny-GGUF/tiny-Q4_K_M.gguf"
    assert lms["lmstudio-community/Tiny-GGUF/tiny-lora.gguf"].kind == "adapter"
    [split] = tools["llama.cpp"]
    assert split.name == "big-model-Q8_0.gguf" and len(split.paths) == 2 and split.kind == "model"
    assert split.size == sum(p.stat().st_size for p in split.paths)
    assert all(f.known_as is None for f in report.found)


def test_import_registers_in_place_and_the_store_barely_grows(layouts: dict[str, Path], tmp_path: Path) -> None:
    store = Store()
    report = scan(env=tool_env(tmp_path), store=store)
    before = _disk_use(store.root)
    outcomes = import_found(report.found, store=store)
    imported = [o for o in outcomes if o.manifest is not None and not o.already]
    assert {o.found.store_name for o in imported} == {
        "ollama/codellama:13b-instruct-q4_K_M", "hf/owner/repo/repo-Q4_K_M.gguf",
        "lmstudio/lmstudio-community/Tiny-GGUF/tiny-Q4_K_M.gguf", "llama.cpp/big-model-Q8_0.gguf"}
    skipped = {o.found.kind: o.problem for o in outcomes if o.manifest is None}
    assert set(skipped) == {"projector", "adapter"} and "not a model to run" in skipped["adapter"]
    grown = _disk_use(store.root) - before
    assert layouts["ollama"].stat().st_size > 2 * 1024 * 1024  # a file big enough for the measure to mean something
    assert grown < 1024 * 1024 * len(imported), grown
    ollama = store.manifest("ollama/codellama:13b-instruct-q4_K_M")
    assert ollama is not None and ollama.external is not None and ollama.source == "ollama:codellama:13b-instruct-q4_K_M"
    assert store.resolve(ollama.name).path == Path(layouts["OLLAMA_MODELS"]) / "blobs" / f"sha256-{ollama.sha256}"
    hf = store.manifest("hf/owner/repo/repo-Q4_K_M.gguf")
    assert hf is not None and hf.revision == COMMIT and pins._fetch_spec(hf) == f"hf:owner/repo/repo-Q4_K_M.gguf@{COMMIT}"
    split = store.manifest("llama.cpp/big-model-Q8_0.gguf")
    assert split is not None and len(split.external_paths) == 2
    assert split.sha256 == hashlib.sha256(b"".join(p.read_bytes() for p in split.external_paths)).hexdigest()
    assert all(r.ok for r in store.verify())
    again = scan(env=tool_env(tmp_path), store=store)
    assert {f.store_name: f.known_as for f in again.found if f.kind == "model"} == {o.found.store_name: o.found.store_name for o in imported}


def _disk_use(root: Path) -> int:
    """Bytes the store's files take on disk (blocks, as du counts them)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_an_ollama_blob_whose_content_does_not_match_its_name_is_not_imported(tmp_path: Path) -> None:
    root = tmp_path / "ollama"
    ollama_model(root, "qwen", "tiny", [(OLLAMA_MODEL, tiny(tmp_path / "q.gguf", "q").read_bytes())])
    manifest = json.loads((root / "manifests/registry.ollama.ai/library/qwen/tiny").read_text())
    blob = root / "blobs" / manifest["layers"][0]["digest"].replace(":", "-")
    with blob.open("r+b") as fh:  # one byte of tensor data changed: still a readable GGUF
        fh.seek(-3, os.SEEK_END)
        fh.write(b"\x7f")
    store = Store()
    [outcome] = import_found(scan(env={"HOME": str(tmp_path), "OLLAMA_MODELS": str(root)}, store=store).found, store=store)
    assert outcome.manifest is None and "does not match its name sha256-" in (outcome.problem or "")
    assert store.manifests() == []


def test_bad_folders_and_files_are_reported_and_the_scan_goes_on(tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    ollama = Path(env["OLLAMA_MODELS"])
    ollama_model(ollama, "good", "latest", [(OLLAMA_MODEL, tiny(tmp_path / "g.gguf", "good").read_bytes())])
    gone = ollama_model(ollama, "gone", "latest", [(OLLAMA_MODEL, tiny(tmp_path / "x.gguf", "gone").read_bytes())])
    digest = json.loads(gone.read_text())["layers"][0]["digest"].replace(":", "-")
    (ollama / "blobs" / digest).unlink()  # the manifest points to a missing blob
    (ollama / "blobs" / f"sha256-{'ab' * 32}-partial").write_bytes(b"GGUF")  # a pull in progress
    (ollama / "manifests" / "registry.ollama.ai" / "library" / "good" / "broken").write_text("{not json")
    folder = tmp_path / "mine"
    tiny(folder / "ok.gguf", "ok")
    (folder / "half.gguf.part").write_bytes(b"GGUF\x03\x00")  # a half-written download
    (folder / "loop-a.gguf").symlink_to(folder / "loop-b.gguf")
    (folder / "loop-b.gguf").symlink_to(folder / "loop-a.gguf")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder)  # a folder link back to its parent
    (folder / "notgguf.gguf").write_bytes(b"PK\x03\x04 a zip")
    report = scan([folder], env=env)
    names = {f.name for f in report.found if f.kind == "model"}
    assert names == {"good:latest", str(folder / "ok.gguf")}
    problems = "\n".join(f"{p.where}: {p.problem}" for p in report.problems)
    assert "gone:latest: its blob sha256-" in problems and "is missing" in problems
    assert "-partial: an unfinished download" in problems
    assert "half.gguf.part: an unfinished download" in problems
    assert "loop-a.gguf: a symbolic link that loops or points nowhere" in problems
    assert "a symbolic link loop" in problems
    assert "broken: manifest is not Ollama's JSON" in problems
    [bad] = [f for f in report.found if f.name.endswith("notgguf.gguf")]
    assert bad.kind == "unreadable" and "not a GGUF file" in (bad.problem or "")


def test_an_unreadable_folder_is_reported_and_the_cli_exits_0(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    tiny(folder / "ok.gguf", "ok")
    locked = folder / "locked"
    tiny(locked / "hidden.gguf", "hidden")
    locked.chmod(0)
    # root reads any folder: run the scan without the capabilities that bypass permissions
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"] \
        if os.geteuid() == 0 else []
    env = {**os.environ, **tool_env(tmp_path), "VARIANTLAB_HOME": str(tmp_path / "vl")}
    try:
        done = subprocess.run([*drop, sys.executable, "-m", "variantlab.cli.app", "models", "scan", "--path", str(folder),
                               "--json"], env=env, capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [f["name"] for f in data["found"]] == [str(folder / "ok.gguf")]
    assert any(p["where"] == str(locked) and "unreadable folder" in p["problem"] for p in data["problems"])


def test_a_file_changed_or_removed_after_import_is_refused_and_gc_leaves_it(tmp_path: Path) -> None:
    store = Store()
    source = tiny(tmp_path / "lms" / "pub" / "repo" / "m.gguf", "m")
    other = tiny(tmp_path / "lms" / "pub" / "repo" / "n.gguf", "n")
    report = scan([tmp_path / "lms"], defaults=False, store=store)
    assert all(o.manifest for o in import_found(report.found, store=store))
    assert store.resolve("path/pub/repo/m.gguf").path == source
    with source.open("r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        fh.write(b"\x01")
    with pytest.raises(IntegrityError) as changed:
        store.resolve("path/pub/repo/m.gguf")
    assert str(source) in changed.value.message
    other.rename(other.with_suffix(".moved"))
    with pytest.raises(StoreError) as missing:
        store.resolve("path/pub/repo/n.gguf")
    assert str(other) in missing.value.message and "is gone" in missing.value.message
    problems = {r.name: r.problem for r in store.verify()}
    assert problems == {"path/pub/repo/m.gguf": f"bytes changed on disk: {source}",
                        "path/pub/repo/n.gguf": f"file missing: {other}"}
    plan = gc_lib.plan(store, keep_days=0)
    gc_lib.collect(plan, store)
    assert source.is_file() and other.with_suffix(".moved").is_file()
    assert {m.name for m in store.manifests()} == {"path/pub/repo/m.gguf", "path/pub/repo/n.gguf"}


def test_fetch_link_registers_a_split_file_in_place_and_checks_every_part(tmp_path: Path) -> None:
    parts = [tiny(tmp_path / f"m-0000{i}-of-00002.gguf", f"part {i}", extra_kv={"split.no": i - 1, "split.count": 2})
             for i in (1, 2)]
    store = Store()
    result = fetch(f"file:{parts[0]}", link=True, store=store)
    assert result.manifest.name == "m" and result.manifest.external_paths == parts
    assert fetch(f"file:{parts[0]}", link=True, store=store).already_present
    assert store.resolve("m").path == parts[0]
    with parts[1].open("r+b") as fh:  # the second part changes: the model is refused
        fh.seek(-3, os.SEEK_END)
        fh.write(b"\x02")
    with pytest.raises(IntegrityError):
        store.resolve("m")
    with pytest.raises(Exception, match="--link registers a local file in place"):
        fetch("qwen2.5-coder-0.5b-instruct:q4_k_m", link=True, store=store)


def test_a_lock_pins_a_file_in_place_and_verify_names_it_when_it_changes(tmp_path: Path) -> None:
    store = Store()
    source = tiny(tmp_path / "x.gguf", "x")
    fetch(f"file:{source}", link=True, store=store, name="mine")
    lock = tmp_path / "variantlab.lock"
    pins.add("chat", "mine", lock_path=lock, store=store)
    assert [c.ok for c in pins.verify(lock_path=lock, store=store)] == [True]
    assert pins.resolve_for_use("chat", store=store, lock_path=lock).path == source
    with source.open("r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        fh.write(b"\x03")
    [check] = pins.verify(lock_path=lock, store=store)
    assert not check.ok and check.problem == f"bytes changed on disk: {source}"
    with pytest.raises(IntegrityError, match=str(source)):
        pins.resolve_for_use("chat", store=store, lock_path=lock)
    source.unlink()
    [check] = pins.verify(lock_path=lock, store=store)
    assert check.problem == f"file registered in place is missing: {source}"
