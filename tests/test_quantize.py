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
import pytest

from tests.tiny_gguf import write_float_model, write_raw_header
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


def test_imatrix_is_refused_with_the_way_round(float_source: str, tmp_path: Path, cli) -> None:
    result = cli("quantize", float_source, "--types", "Q4_K_M", "--imatrix", str(tmp_path / "m.dat"))
    assert result.code == 2 and "std::unordered_map" in result.err and "llama-quantize --imatrix" in result.err


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
    with pytest.raises(UsageError):
        plan_quantize(float_source, ["Q4_K_M"], imatrix=Path("x"))
