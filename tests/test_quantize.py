"""quantize: the plan before the work, llama.cpp's own bytes, lineage, reuse, and bad input."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from tests.tiny_gguf import write_float_model, write_imatrix, write_raw_header
from variantlab import quantize as quantize_module
from variantlab.errors import UsageError
from variantlab.knowledge.quants import file_type
from variantlab.quantize import plan_quantize, run_quantize
from variantlab.store import Store


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def float_source(tmp_path: Path, cli) -> str:
    path = write_float_model(tmp_path / "tiny-float.F32.gguf", n_layers=4, n_embd=256, n_ff=512)
    assert cli("models", "fetch", f"file:{path}", "--name", "tiny:f32").code == 0
    return "tiny:f32"


def test_output_is_llama_quantizers_own_bytes_with_lineage(float_source: str, tmp_path: Path, cli) -> None:
    result = cli("quantize", float_source, "--types", "Q4_K_M,Q8_0", "--threads", "2", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    store = Store()
    src = store.resolve(float_source).path
    for output in report["outputs"]:
        direct = tmp_path / f"direct.{output['lineage']['to_type']}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = file_type(output["lineage"]["to_type"]).id
        params.nthread = 2
        assert llama_cpp.llama_model_quantize(str(src).encode(), str(direct).encode(), ctypes.byref(params)) == 0
        assert output["sha256"] == _sha(direct), "variantlab's output differs from llama.cpp's quantizer"
        lineage = output["lineage"]
        assert lineage["from_sha256"] == store.manifest(float_source).sha256
        assert lineage["from_type"] == "F32" and lineage["requantized"] is False
        assert lineage["tool"].startswith("llama-cpp-python ")
        assert output["name"] == f"tiny:{lineage['to_type'].lower()}"
    # the plan's expected size comes from the quant rules; only the header's few new keys differ
    for rung, output in zip(report["plan"]["rungs"], report["outputs"]):
        assert abs(rung["expected_bytes"] - output["size"]) <= 128


def test_second_run_reuses_and_dry_run_registers_nothing(float_source: str, cli) -> None:
    dry = cli("quantize", float_source, "--types", "Q4_0", "--dry-run", "--json")
    assert dry.code == 0 and json.loads(dry.out)["outputs"] == []
    assert [m.name for m in Store().manifests()] == [float_source]
    first = json.loads(cli("quantize", float_source, "--types", "Q4_0", "--json").out)["outputs"][0]
    assert first["quantize_s"] > 0
    again = cli("quantize", float_source, "--types", "Q4_0", "--json")
    second = json.loads(again.out)
    assert second["plan"]["rungs"][0]["reuses"] == first["name"]
    assert second["outputs"][0]["quantize_s"] is None and second["outputs"][0]["sha256"] == first["sha256"]


def test_requantizing_needs_the_flag_and_says_so(float_source: str, cli) -> None:
    q8 = json.loads(cli("quantize", float_source, "--types", "Q8_0", "--json").out)["outputs"][0]["name"]
    refused = cli("quantize", q8, "--types", "Q4_0")
    assert refused.code == 2 and "already quantized (Q8_0)" in refused.err and "--allow-requantize" in refused.err
    done = cli("quantize", q8, "--types", "Q4_0", "--allow-requantize", "--json")
    assert done.code == 0, done.err
    out = json.loads(done.out)["outputs"][0]
    assert out["lineage"]["requantized"] is True and "requantized from Q8_0" in out["source"]
    assert out["name"] == "tiny:q4_0-from-q8_0"


@pytest.mark.parametrize("types, needle", [
    ("Q9_K", "unknown quantization type 'Q9_K'"),
    ("F16", "not a quantized type"),
    (",", "no --types given"),
])
def test_bad_types_fail_before_any_work(float_source: str, cli, types: str, needle: str) -> None:
    result = cli("quantize", float_source, "--types", types)
    assert result.code == 2 and needle in result.err
    assert [m.name for m in Store().manifests()] == [float_source]


def test_sources_that_are_not_models_are_refused(tmp_path: Path, cli) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    result = cli("quantize", str(text), "--types", "Q4_0")
    assert result.code == 2 and "notes.gguf" in result.err
    hostile = write_raw_header(tmp_path / "huge.gguf", tensor_count=1 << 60, kv_count=0)
    result = cli("quantize", str(hostile), "--types", "Q4_0")
    assert result.code == 2 and "huge.gguf" in result.err


def test_too_little_disk_is_refused_before_work(float_source: str, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize_module, "free_disk_bytes", lambda path: 1000)
    result = cli("quantize", float_source, "--types", "Q8_0")
    assert result.code == 2 and "the plan needs about" in result.err and "0.00 GiB is free" in result.err
    assert [m.name for m in Store().manifests()] == [float_source]


def _metadata(path: Path) -> dict[str, object]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("quantize.")}


def test_imatrix_changes_the_quantization_and_is_recorded(float_source: str, tmp_path: Path, cli) -> None:
    src = Store().resolve(float_source).path
    matrix = write_imatrix(tmp_path / "m.gguf", src)
    plain = json.loads(cli("quantize", float_source, "--types", "Q4_K_M", "--json").out)["outputs"][0]
    result = cli("quantize", float_source, "--types", "Q4_K_M", "--imatrix", str(matrix), "--json")
    assert result.code == 0, result.err
    weighted = json.loads(result.out)["outputs"][0]
    assert weighted["sha256"] != plain["sha256"], "the importance matrix did not change the quantization"
    assert weighted["name"] == f"tiny:q4_k_m-imatrix-{_sha(matrix)[:8]}"
    info = weighted["lineage"]["imatrix_info"]
    assert weighted["lineage"]["imatrix"] == _sha(matrix) == info["sha256"]
    # 7 matrices in each of 4 layers, and output.weight
    assert info["entries"] == 4 * 7 + 1 and info["chunks"] == 4 and info["datasets"] == ["corpus.txt"]
    assert "importance matrix m.gguf" in weighted["lineage"]["note"]
    # the metadata llama-quantize writes with a matrix
    assert _metadata(Store().blob_path(weighted["sha256"])) == {
        "quantize.imatrix.file": str(matrix), "quantize.imatrix.dataset": "corpus.txt",
        "quantize.imatrix.entries_count": 4 * 7 + 1, "quantize.imatrix.chunks_count": 4}
    again = json.loads(cli("quantize", float_source, "--types", "Q4_K_M", "--imatrix", str(matrix), "--json").out)
    assert again["outputs"][0]["quantize_s"] is None  # the same source and matrix: reused


def test_imatrix_values_are_sums_over_token_counts(float_source: str, tmp_path: Path) -> None:
    """Sums and counts both doubled give the same normalized matrix, so the same bytes (the matrix
    sits at the same path both times, so even the recorded file name is the same)."""
    src = Store().resolve(float_source).path
    path = tmp_path / "m.gguf"
    outputs = []
    for scale in (1.0, 2.0):
        write_imatrix(path, src, scale=scale)
        (made,) = run_quantize(plan_quantize(float_source, ["Q4_K_M"], imatrix=path))
        assert made.quantize_s is not None  # a different matrix file: made, not reused
        outputs.append(made.manifest.sha256)
    assert outputs[0] == outputs[1]


def test_types_that_need_an_imatrix_work_with_one(float_source: str, tmp_path: Path, cli) -> None:
    refused = cli("quantize", float_source, "--types", "IQ2_XXS")
    assert refused.code == 2 and "imatrix" in refused.err and len(refused.err.strip().splitlines()) == 1
    matrix = write_imatrix(tmp_path / "m.gguf", Store().resolve(float_source).path)
    assert cli("quantize", float_source, "--types", "IQ2_XXS", "--imatrix", str(matrix)).code == 0


def test_bad_imatrix_files_are_refused_before_work(float_source: str, tmp_path: Path, cli) -> None:
    legacy = tmp_path / "old.dat"
    legacy.write_bytes(b"\x07\x00\x00\x00" + b"\x00" * 64)
    bare = tmp_path / "bare.gguf"
    write_imatrix(bare, Store().resolve(float_source).path)
    import gguf

    reader = gguf.GGUFReader(str(bare))  # the same tensors without llama-imatrix's metadata
    writer = gguf.GGUFWriter(str(tmp_path / "nometa.gguf"), arch="llama")
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(bare.read_bytes()[:3000])
    for path, needle in ((tmp_path / "missing.gguf", "no such file"), (legacy, "llama-imatrix --in-file"),
                         (tmp_path / "nometa.gguf", "no imatrix metadata"), (truncated, "truncated or corrupt")):
        result = cli("quantize", float_source, "--types", "Q4_K_M", "--imatrix", str(path))
        assert result.code == 2 and needle in result.err and len(result.err.strip().splitlines()) == 1, result.err
    other = write_float_model(tmp_path / "wide.F32.gguf", n_layers=4, n_embd=512, n_ff=1024)
    wrong = write_imatrix(tmp_path / "wrong.gguf", other)  # rows of 512 for a model with rows of 256
    before = len(list(Store().manifests()))
    result = cli("quantize", float_source, "--types", "Q4_K_M", "--imatrix", str(wrong))
    assert result.code == 2 and "imatrix size" in result.err, result.err
    assert len(list(Store().manifests())) == before  # nothing half-made was registered


def test_killed_quantization_registers_nothing_and_resumes(tmp_path: Path, isolated_home: Path) -> None:
    """SIGKILL the whole command mid-quantization: no manifest, no blob; the next run makes it."""
    source = write_float_model(tmp_path / "bigger.F32.gguf", n_layers=24, n_embd=512, n_ff=1536)
    env = {**os.environ, "VARIANTLAB_HOME": str(isolated_home)}
    exe = [sys.executable, "-m", "variantlab.cli.app"]
    subprocess.run([*exe, "models", "fetch", f"file:{source}", "--name", "big:f32"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*exe, "quantize", "big:f32", "--types", "Q6_K", "--threads", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tmp_dir = isolated_home / "tmp"
    deadline = time.monotonic() + 60
    while not any(tmp_dir.glob("*.gguf")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the quantization finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(isolated_home)
    assert [m.name for m in store.manifests()] == ["big:f32"]
    blobs = {p.name for p in (isolated_home / "blobs" / "sha256").iterdir()}
    assert blobs == {store.manifest("big:f32").sha256}
    done = subprocess.run([*exe, "quantize", "big:f32", "--types", "Q6_K", "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"][0]["quantize_s"] is not None


def test_library_plan_names_expected_sizes(float_source: str) -> None:
    plan = plan_quantize(float_source, ["q2_k", "Q2_K", "Q5_K_M"])
    assert [r.file_type for r in plan.rungs] == ["Q2_K", "Q5_K_M"]  # case-insensitive, deduplicated
    assert all(r.expected_bytes and r.existing is None for r in plan.rungs)
    assert plan.disk_needed >= sum(r.expected_bytes or 0 for r in plan.rungs)
    made = run_quantize(plan)
    assert all(abs(m.manifest.size - (r.expected_bytes or 0)) <= 128 for m, r in zip(made, plan.rungs))
    with pytest.raises(UsageError, match="no such file"):
        plan_quantize(float_source, ["Q4_K_M"], imatrix=Path("x"))
