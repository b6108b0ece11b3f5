"""The twin: same header and tensor table, valid random blocks, stored synthetic, refused where weights matter."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hub_server import HubRepo, serve_hub
from tests.tiny_gguf import gguf_string
from variantlab.knowledge.catalog import models, variants
from variantlab.modelfile import header_length, read_model_file
from variantlab.store import Store
from variantlab.twin import _put_tiled, make_twin, pool_rows, remove_twin, twin_source


def test_twin_of_a_local_file_has_its_header_size_and_tensor_table(tiny_model: Path) -> None:
    twin = make_twin(str(tiny_model))
    real, made = read_model_file(tiny_model), read_model_file(twin.path)
    assert twin.path.stat().st_size == tiny_model.stat().st_size
    assert twin.path.read_bytes()[:real.data_offset] == tiny_model.read_bytes()[:real.data_offset]
    assert made.tensors == real.tensors and made.data_offset == real.data_offset
    manifest = Store().manifest(twin.name)
    assert manifest is not None and manifest.synthetic is not None
    assert manifest.synthetic["kind"] == "file" and manifest.synthetic["variant"] == str(tiny_model)


def test_twin_blocks_are_valid_random_blocks_of_each_tensors_type(tiny_model: Path) -> None:
    """Dequantized with gguf's own code: finite, not all zero (the tiny model's real data is zeros)."""
    twin = make_twin(str(tiny_model))
    for tensor in gguf.GGUFReader(twin.path).tensors:
        values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        assert np.isfinite(values).all(), tensor.name
        assert np.abs(values).max() > 0, tensor.name
        assert np.abs(values).max() < 1.0, tensor.name  # a trained model's scale, not noise of any size


def test_twin_is_real_bytes_not_a_sparse_file(tiny_model: Path) -> None:
    twin = make_twin(str(tiny_model))
    assert twin.path.stat().st_blocks * 512 >= twin.path.stat().st_size


def test_the_same_header_gives_the_same_twin_and_a_kept_one_is_reused(tiny_model: Path, tmp_path: Path) -> None:
    first = make_twin(str(tiny_model))
    again = make_twin(str(tiny_model))
    assert again.reused and again.sha256 == first.sha256
    remove_twin(first)
    assert not first.path.exists() and Store().manifest(first.name) is None
    copy = shutil.copy(tiny_model, tmp_path / "copy.gguf")
    assert make_twin(str(copy)).sha256 == first.sha256  # deterministic: header + generator decide the bytes


@pytest.mark.parametrize("arch", sorted({m.architecture for m in models()}))
def test_catalog_twin_header_is_the_file_fit_predicts(arch: str) -> None:
    from variantlab.fit import network_from_catalog

    variant = min((v for v in variants(["Q4_K_M"]) if v.model.architecture == arch), key=lambda v: v.model.size_b)
    source = twin_source(variant.tag)
    net = network_from_catalog(variant)
    assert [(t.name, t.type, t.dims, t.n_bytes) for t in source.model.tensors] == \
        [(t.name, t.type, t.dims, t.n_bytes) for t in net.tensors]
    assert source.model.architecture == arch and source.model.file_type == "Q4_K_M"
    assert source.model.vocab_size == variant.model.n_vocab
    assert abs(source.file_bytes - net.file_bytes) / net.file_bytes < 0.002


def test_twin_reads_a_remote_header_by_ranges_and_matches_the_local_twin(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_model.read_bytes() + bytes(4 << 20)  # padding after the last tensor: weights the header must not fetch
    path = tiny_model.with_name("padded.gguf")
    path.write_bytes(data)
    repo = HubRepo()
    repo.add_commit("c" * 40, {"padded.gguf": data})
    with serve_hub({"owner/tiny": repo}) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        source = twin_source("hf:owner/tiny/padded.gguf")
    local = twin_source(str(path))
    assert source.header == local.header and source.model.tensors == local.model.tensors
    assert source.origin["commit"] == "c" * 40 and source.origin["size"] == len(data)
    assert repo.bytes_sent == source.origin["bytes_transferred"] < len(data) / 10
    assert repo.range_requests == source.origin["requests"] >= 1


def test_header_walk_finds_where_the_data_starts(tiny_model: Path) -> None:
    with tiny_model.open("rb") as handle:
        assert header_length(handle.read, tiny_model.stat().st_size, "tiny") == read_model_file(tiny_model).data_offset


# -- refusals: one line, exit 2, nothing left in the store ----------------------------------------


def _store_is_empty() -> bool:
    store = Store()
    leftovers = [p for p in store.root.rglob("*") if p.is_file() and p.name != "store.lck"
                 and "cache" not in p.parts] if store.root.exists() else []
    return not leftovers


def _one_tensor_file(path: Path, dims: tuple[int, ...], type_id: int, data_bytes: int) -> Path:
    """A GGUF with one tensor entry as given, followed by ``data_bytes`` of data."""
    kv = gguf_string(b"general.architecture") + struct.pack("<I", 8) + gguf_string(b"llama")
    info = gguf_string(b"token_embd.weight") + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    info += struct.pack("<IQ", type_id, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + kv + info
    head += bytes(-len(head) % 32)
    path.write_bytes(head + bytes(data_bytes))
    return path


@pytest.mark.parametrize("dims, type_id, why", [
    ((10 ** 7, 10 ** 6), 0, "past the file's end"),
    ((256, 4), 250, "invalid ggml type"),
    ((100, 4), int(gguf.GGMLQuantizationType.Q4_K), "not a multiple of block size"),
    ((256, 4, 1, 1, 2), 0, "invalid number of dimensions"),
])
def test_bad_headers_are_refused_with_one_line(tmp_path: Path, cli, dims: tuple[int, ...], type_id: int, why: str) -> None:  # noqa: ANN001
    bad = _one_tensor_file(tmp_path / "bad.gguf", dims, type_id, 4096)
    result = cli("twin", str(bad))
    assert result.code == 2 and why in result.err and len(result.err.strip().splitlines()) == 1
    assert _store_is_empty()


def test_not_enough_disk_is_refused_before_writing(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A real small filesystem (/dev/shm) as the store, and a variant larger than it."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not shutil.disk_usage(shm).total:
        pytest.skip("no /dev/shm here")
    big = max(variants(["Q8_0"]), key=lambda v: v.model.size_b)
    free = shutil.disk_usage(shm).free
    home = shm / f"variantlab-test-{id(cli)}"
    monkeypatch.setenv("VARIANTLAB_HOME", str(home))
    try:
        from variantlab.fit import network_from_catalog

        if network_from_catalog(big).file_bytes < free:
            pytest.skip("/dev/shm is larger than the largest catalog variant")
        result = cli("twin", big.tag)
        assert result.code == 2 and "GB free" in result.err and len(result.err.strip().splitlines()) == 1
        blobs = list((home / "blobs").rglob("*")) if (home / "blobs").exists() else []
        assert not blobs and not list((home / "manifests").glob("*")) if (home / "manifests").exists() else True
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- a twin measures; it is never evaluated, served or pinned -------------------------------------


@pytest.mark.parametrize("args", [
    ("eval", "{twin}", "--limit", "1"),
    ("serve", "{twin}"),
    ("lock", "add", "chat", "{twin}"),
    ("eval", "{twin}", "--suite", "kld", "--reference", "{twin}"),
])
def test_twin_is_refused_where_weights_matter(tiny_model: Path, cli, args: tuple[str, ...], tmp_path: Path,  # noqa: ANN001
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    twin = make_twin(str(tiny_model))
    for ref in (twin.name, str(twin.path)):  # by store name, and by its blob's path
        result = cli(*[a.format(twin=ref) for a in args])
        assert result.code == 2, result
        assert "synthetic twin" in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "variantlab.lock").exists()


def test_gc_removes_kept_twins_first_even_with_recent_results(tiny_model: Path, cli) -> None:  # noqa: ANN001
    from variantlab.lock import gc
    from variantlab.results import ResultsDB, Run

    twin = make_twin(str(tiny_model))
    with ResultsDB() as db:
        db.record(Run(kind="bench", model=twin.name, backend="llama.cpp", settings={}, hardware={},
                      variantlab_version="test", model_sha256=twin.sha256))
    plan = gc.plan()
    assert list(plan.remove)[:1] == [twin.sha256]
    gc.collect(plan)
    assert not twin.path.exists() and Store().manifest(twin.name) is None


def test_sigterm_while_a_twin_is_in_use_deletes_it_and_exits_130(tiny_model: Path, isolated_home: Path) -> None:
    # a command of the test's own, in a child: it holds a twin as a measurement does, and is stopped
    # with SIGTERM (kill, a scheduler) while it holds it, which must unwind as Ctrl-C does
    child = f"""
import os, signal, sys, time
from variantlab.cli.app import app, main
from variantlab.twin import twin_for

@app.command("hold-twin")
def hold_twin() -> None:
    with twin_for({str(tiny_model)!r}) as twin:
        print(twin.path, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)

sys.exit(main(["hold-twin"]))
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 130 and "Traceback" not in done.stderr, done
    made = Path(done.stdout.strip())
    assert made.is_relative_to(isolated_home) and not made.exists()
    assert not [p for where in ("blobs", "manifests") for p in (isolated_home / where).rglob("*") if p.is_file()]


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 9), row_bytes=st.integers(1, 5), copies=st.integers(2, 4), first_row=st.integers(0, 8),
       n_rows=st.integers(0, 60))
def test_a_tensor_is_the_pool_tiled_from_its_own_first_row(rows: int, row_bytes: int, copies: int, first_row: int,
                                                          n_rows: int) -> None:
    """Whatever the sizes, a tensor's bytes are whole rows of the pool, in the pool's order, from its start row."""
    pool = bytes(range(rows * row_bytes))
    start = first_row % rows * row_bytes
    out: list[bytes] = []
    _put_tiled(lambda data: out.append(bytes(data)), pool * copies, n_rows * row_bytes, start=start)
    want = (pool * (n_rows // rows + 2))[start:start + n_rows * row_bytes]
    assert b"".join(out) == want


def test_pools_hold_megabytes_of_rows_whatever_the_type() -> None:
    """The tiling's period is what a CPU noticed (16 rows ran 11 % slow): every pool is about 2 MiB."""
    for kind, width in [("Q4_K", 5120), ("Q6_K", 13824), ("Q5_0", 896), ("F32", 896), ("Q8_0", 151936)]:
        block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
        pool_bytes = pool_rows(kind, width) * (width // block * type_bytes)
        assert pool_rows(kind, width) >= 16 and pool_bytes >= 2 << 20
        assert pool_bytes < (2 << 20) + 16 * width * 4
