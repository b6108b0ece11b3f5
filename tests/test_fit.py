"""fit: file sizes from architecture + recipe, memory terms, verdicts, claims, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from variantlab.fit import FitRequest, estimate, kv_cache_bytes, matmul_work_bytes, network_for, network_from_catalog, network_from_file, overhead_bytes
from variantlab.knowledge.catalog import find_variant, models

MIB = 1 << 20
SIZES_CSV = Path(__file__).parent / "data" / "codellama-13b-instruct-gguf-sizes.csv"


def _published_rows() -> list[dict[str, str]]:
    with SIZES_CSV.open() as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


@pytest.mark.parametrize("row", _published_rows(), ids=lambda r: r["file_type"])
def test_predicted_file_size_within_2_percent_of_published(cli, row: dict[str, str]) -> None:
    # One row per published file of TheBloke/CodeLlama-13B-Instruct-GGUF; the name is the
    # file name as published, resolved through the catalog.
    result = cli("fit", row["file"], "--json")
    assert result.code == 0, result.err
    predicted = json.loads(result.out)["file_bytes"]
    real = float(row["size_gb"]) * 1e9
    assert abs(predicted - real) <= 0.02 * real, f"{row['file']}: predicted {predicted / 1e9:.3f} GB, published {row['size_gb']}"


def test_ollama_tag_and_file_name_name_the_same_variant(cli) -> None:
    by_tag = json.loads(cli("fit", "codellama:13b-instruct-q4_K_M", "--json").out)
    by_file = json.loads(cli("fit", "codellama-13b-instruct.Q4_K_M.gguf", "--json").out)
    assert by_tag["file_bytes"] == by_file["file_bytes"]
    for key in ("file_bytes", "weights_bytes", "kv_cache_bytes", "compute_bytes", "total_bytes", "ctx", "fits", "gpu_layers"):
        assert key in by_tag


def test_kv_cache_matches_llama_cpp_buffer_sizes() -> None:
    # llama.cpp's own log lines for the two Qwen2.5-Coder files ("CPU KV buffer size"),
    # read on this machine: 24 / 384 MiB (0.5B at 2048 / 32768), 56 / 896 MiB (1.5B).
    small = network_from_catalog(find_variant("qwen2.5-coder:0.5b-instruct-q4_K_M"))
    large = network_from_catalog(find_variant("qwen2.5-coder:1.5b-instruct-q4_K_M"))
    assert kv_cache_bytes(small, 2048, "f16") == 24 * MIB
    assert kv_cache_bytes(small, 32768, "f16") == 384 * MIB
    assert kv_cache_bytes(large, 2048, "f16") == 56 * MIB
    assert kv_cache_bytes(large, 32768, "f16") == 896 * MIB
    assert kv_cache_bytes(small, 2000, "f16") == kv_cache_bytes(small, 2048, "f16")  # padded to 256
    # q8_0 stores 32 values in 34 bytes, q4_0 in 18
    assert kv_cache_bytes(small, 2048, "q8_0") == 24 * MIB * 34 // 64
    assert kv_cache_bytes(small, 2048, "q4_0") == 24 * MIB * 18 // 64


def test_matmul_work_buffer_is_the_widest_input_in_its_dot_product_type() -> None:
    # Qwen2.5-Coder-0.5B: the feed-forward down projection reads 4864 values a token, as Q8_K
    # (256 values in 292 bytes) for its K-quant weights; nothing else is wider.
    small = network_from_catalog(find_variant("qwen2.5-coder:0.5b-instruct-q4_K_M"))
    assert matmul_work_bytes(small, 512) == 512 * (4864 // 256) * 292
    assert matmul_work_bytes(small, 1) == (4864 // 256) * 292
    # Qwen3-Coder-30B-A3B: the experts' down projection reads 768 values per token and picked
    # expert (8 of 128), wider in all than the 4096-value attention output or the shared
    # 2048-value input of the experts' gate and up projections
    moe = network_from_catalog(find_variant("qwen3-coder:30b-a3b-instruct-q4_K_M"))
    assert matmul_work_bytes(moe, 512) == 512 * 8 * (768 // 256) * 292


def test_overhead_counts_each_sequence_and_each_context_cell() -> None:
    net = network_from_catalog(find_variant("qwen2.5-coder:0.5b-instruct-q4_K_M"))
    one, two = overhead_bytes(net, 1, 4096), overhead_bytes(net, 2, 4096)
    assert two - one == net.n_vocab * (4 + 12)  # a row of f32 logits and 12-byte sampler candidates
    assert overhead_bytes(net, 1, 8192) - one == 4096 * 180  # per cell: llama.cpp's bookkeeping, the prompt token
    assert overhead_bytes(net, 1, 4000) == one  # cells are counted as allocated, padded to 256


def test_file_estimate_reads_the_tensor_table(tiny_model: Path) -> None:
    net = network_from_file(tiny_model)
    assert net.source == "file"
    assert net.weights_bytes == sum(t.n_bytes for t in net.tensors) > 0
    assert abs(net.file_bytes - tiny_model.stat().st_size) < 32  # header + aligned tensors
    est = estimate(net, FitRequest(ctx=1024, ram_bytes=1 << 30, vram_bytes=0))
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + est.compute_bytes + est.overhead_bytes
    assert est.fits and est.verdict == "fits" and est.gpu_layers == 0


def test_verdicts_follow_the_budget() -> None:
    net = network_from_catalog(find_variant("codellama:34b-instruct-q4_K_M"))
    small_ram = estimate(net, FitRequest(ctx=4096, ram_bytes=8 << 30, vram_bytes=0))
    assert not small_ram.fits and small_ram.verdict == "does not fit" and small_ram.headroom_bytes < 0
    # a 12 GiB GPU beside 24 GiB of RAM: some layers go to the GPU, the rest stay in RAM
    split = estimate(net, FitRequest(ctx=4096, ram_bytes=24 << 30, vram_bytes=12 << 30))
    assert split.verdict == "fits with partial offload"
    assert 0 < split.gpu_layers < net.n_layers
    assert split.gpu_bytes <= 12 << 30 and split.cpu_bytes < split.total_bytes
    whole = estimate(net, FitRequest(ctx=4096, ram_bytes=24 << 30, vram_bytes=80 << 30))
    assert whole.verdict == "fits" and whole.gpu_layers == net.n_layers + 1


def test_check_says_which_variant_a_claimed_size_matches(cli) -> None:
    # A guide that gives 20.22 GB for the 34B Q5_K_M file is describing the Q4_K_M file.
    result = cli("fit", "--check", "codellama-34b-instruct.Q5_K_M.gguf=20.22", "--check", "codellama:34b-instruct-q4_K_M=20.22", "--json")
    assert result.code == 1  # one claim is wrong
    wrong, right = json.loads(result.out)
    assert not wrong["plausible"] and wrong["matches"] == "codellama:34b-instruct-q4_K_M"
    assert right["plausible"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["qwen2.5-coder:0.5b-instruct-q4_K_M", "--ctx", "65536"], "maximum of 32768"),
        (["qwen2.5-coder:0.5b-instruct-q4_K_M", "--ctx", "-1"], "out of range"),
        (["qwen2.5-coder:0.5b-instruct-q4_K_M", "--ctx", "999999999"], "out of range"),
        (["qwen2.5-coder:0.5b-instruct-q4_K_M", "--mem", "-3"], "not a sensible memory size"),
        (["qwen2.5-coder:0.5b-instruct-q4_K_M", "--kv-type", "q5_9"], "KV cache type"),
        (["qwen2.5-coder:0.5b-instruct-q4_K_M", "--gpu-layers", "many"], "--gpu-layers"),
        (["codelama:13b-instruct-q4_K_M"], "did you mean 'codellama:13b-instruct-q4_K_M'"),
        (["--check", "codellama:13b-instruct-q4_K_M=big"], "NAME=SIZE_GB"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", *args)
    assert result.code == 2
    assert expected in result.err and len(result.err.strip().splitlines()) == 1


def test_catalog_fim_follows_the_docs() -> None:
    # CodeLlama: the 7B and 13B Base and Instruct models were trained to infill; Python and 34B/70B not.
    codellama = {(m.size, m.flavor): m.fim for m in models() if m.family == "CodeLlama"}
    assert {k for k, v in codellama.items() if v} == {("7b", "base"), ("7b", "instruct"), ("13b", "base"), ("13b", "instruct")}
    for m in models():
        assert m.humaneval is None or m.humaneval_source, m.tag
        assert m.sources and m.license and m.gguf_repo and m.strengths
        assert m.prompt_template  # every named prompt format exists
        assert bool(m.fim_tokens) == m.fim, m.tag  # an infilling model names its tokens


def test_every_catalog_model_has_an_estimate() -> None:
    for m in models():
        net = network_from_catalog(find_variant(f"{m.tag}-q4_K_M"))
        assert net.weights_bytes > 0 and net.n_layers == m.n_layers


def test_store_name_resolves_before_the_catalog(tmp_path: Path, tiny_model: Path) -> None:
    net = network_for(str(tiny_model))
    assert net.source == "file"
