"""Twins of real models: read from a Hub by ranges, loaded and run by llama.cpp, recorded and used by pick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hub_server import HubRepo, serve_hub
from variantlab.modelfile import read_model_file
from variantlab.store import Store
from variantlab.twin import make_twin, twin_source


def test_remote_twin_reads_under_2_percent_and_equals_the_local_twin(default_model: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = Path(default_model).read_bytes()
    repo = HubRepo()
    repo.add_commit("a" * 40, {"qwen2.5-coder-0.5b-instruct-q4_k_m.gguf": data})
    with serve_hub({"Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF": repo}) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        remote = make_twin("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    local = make_twin(default_model)
    assert repo.bytes_sent < 0.02 * len(data), repo.bytes_sent
    assert remote.origin["bytes_transferred"] == repo.bytes_sent
    assert remote.variant == f"hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf@{'a' * 40}"
    # the same header and generator give the same bytes: the same tensor table and metadata, exactly
    assert remote.sha256 == local.sha256 and remote.file_bytes == len(data)
    real, twin = read_model_file(default_model), read_model_file(remote.path)
    assert twin.tensors == real.tensors and twin.metadata_keys == real.metadata_keys


def test_bench_twin_runs_in_llama_cpp_is_labelled_and_deleted(cli, smol_model: str) -> None:  # noqa: ANN001
    out = cli("bench", "--twin", smol_model, "--reps", "1", "--prompt", "32", "--gen", "8", "--json")
    assert out.code == 0, out.err
    result = json.loads(out.out)
    assert result["twin_of"] == smol_model and result["gen_tokens_per_s"] > 0 and result["peak_rss_bytes"] > 0
    assert not [m for m in Store().manifests() if m.synthetic]  # deleted after measuring
    shown = json.loads(cli("results", "show", str(result["run_id"]), "--json").out)
    assert shown["settings"]["twin_of"] == smol_model


def test_catalog_twin_loads_and_pick_uses_its_measurement(cli) -> None:  # noqa: ANN001
    variant = "qwen2.5-coder:0.5b-instruct-q4_K_M"
    out = cli("twin", variant, "--reps", "1", "--prompt", "32", "--gen", "8", "--ctx", "1024", "--json")
    assert out.code == 0, out.err
    measured = json.loads(out.out)
    assert measured["twin"]["origin"]["kind"] == "catalog" and not measured["kept"]
    bench = measured["bench"]
    assert bench["twin_of"] == variant and bench["ctx"] == 1024
    picked = json.loads(cli("pick", "--task", "chat", "--json").out)
    row = next(c for c in picked["ranked"] if c["variant"] == variant)
    assert row["tokens_per_s_source"] == f"measured on a twin (bench run {bench['run_id']})"
    assert row["tokens_per_s"] == round(bench["gen_tokens_per_s"], 1)


def test_bench_depth_measures_with_a_filled_cache(cli, smol_model: str) -> None:  # noqa: ANN001
    out = cli("bench", smol_model, "--depth", "256", "--reps", "1", "--prompt", "32", "--gen", "8", "--json")
    assert out.code == 0, out.err
    result = json.loads(out.out)
    assert result["n_depth"] == 256 and result["ctx"] == 256 + 32 + 8
    too_small = cli("bench", smol_model, "--depth", "256", "--ctx", "200")
    assert too_small.code == 2 and "--depth 256" in too_small.err


def test_fit_measure_on_a_twin_reports_the_peak_beside_the_estimate(cli) -> None:  # noqa: ANN001
    out = cli("fit", "qwen2.5-coder:0.5b-instruct-q4_K_M", "--ctx", "2048", "--measure", "--twin", "--json")
    assert out.code == 0, out.err
    result = json.loads(out.out)
    assert result["measured"]["twin_of"] == "qwen2.5-coder:0.5b-instruct-q4_K_M"
    assert abs(result["estimate_error"]) < 0.15  # the estimate's own accuracy is benchmarked in docs/benchmarks.md


def test_twin_source_of_a_local_file_copies_its_header_bytes(default_model: str) -> None:
    source = twin_source(default_model)
    assert Path(default_model).read_bytes()[:len(source.header)] == source.header


def test_ladder_twin_measures_rungs_that_fit_and_refuses_the_rest(cli) -> None:  # noqa: ANN001
    out = cli("ladder", "qwen2.5-coder:0.5b-instruct", "--twin", "--types", "Q4_K_M,Q8_0", "--ctx", "1024",
              "--mem", "0.7", "--json")
    assert out.code == 0, out.err
    result = json.loads(out.out)
    assert result["twin"] and [r["file_type"] for r in result["rows"]] == ["Q4_K_M", "Q8_0"]
    fitting, refused = result["rows"]
    assert fitting["fits"] and not refused["fits"]  # Q8_0 needs more than 0.7 GiB at 1024 tokens
    assert fitting["peak_rss_bytes"] > fitting["file_bytes"] and fitting["gen_tokens_per_s"] > 0
    assert fitting["depth"] == 1024 - 512 and fitting["gen_tokens_per_s_at_depth"] > 0
    assert fitting["accuracy_note"].startswith("not measured: twin; published HumanEval")
    assert refused["gen_tokens_per_s"] is None and refused["peak_rss_bytes"] is None
    assert result["picks"]["fastest"]["file_type"] == "Q4_K_M"
    assert not [m for m in Store().manifests() if m.synthetic]  # one twin at a time, none left
    again = json.loads(cli("ladder", "qwen2.5-coder:0.5b-instruct", "--twin", "--types", "Q4_K_M,Q8_0", "--ctx", "1024",
                           "--mem", "0.7", "--json").out)
    assert again["rows"][0]["runs"] == fitting["runs"]  # resumed: the measured rung is not measured again
    shown = cli("ladder", "qwen2.5-coder:0.5b-instruct", "--twin", "--types", "Q4_K_M,Q8_0", "--ctx", "1024", "--mem", "0.7")
    assert shown.code == 0 and "refused by fit" in shown.out and "not measured: twin" in shown.out, shown.err
