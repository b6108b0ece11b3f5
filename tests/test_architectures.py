"""Mixture-of-experts, sliding-window, latent-attention and recurrent models in fit, explain,
pick and the catalog: the memory layout llama.cpp allocates for each kind, the largest
context that fits, the command line of a plan, and the refusals of self-contradicting headers."""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from tests.tiny_gguf import write_arch_model
from variantlab.engine.child import EngineProcess
from variantlab.engine.settings import EngineSettings
from variantlab.errors import ModelFileError
from variantlab.fit import (
    FitRequest,
    command_line,
    estimate,
    kv_cache_bytes,
    max_context,
    network_for,
    network_from_catalog,
    network_from_file,
)
from variantlab.knowledge.catalog import CatalogVariant, find_variant
from variantlab.knowledge.layers import layer_memory
from variantlab.knowledge.names import explain_name
from variantlab.store import Store
from variantlab.twin import _catalog_source, make_twin, remove_twin

MIB = 1 << 20
GIB = 1 << 30
EMBD = 64


def _dense_layer(i: int, kv: int = 16) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"blk.{i}.attn_norm.weight", (EMBD,)), (f"blk.{i}.attn_q.weight", (EMBD, EMBD)),
            (f"blk.{i}.attn_k.weight", (EMBD, kv)), (f"blk.{i}.attn_v.weight", (EMBD, kv)),
            (f"blk.{i}.attn_output.weight", (EMBD, EMBD))]


def _common(n_layers: int, ctx: int = 4096) -> dict[str, object]:
    return {"context_length": ctx, "embedding_length": EMBD, "block_count": n_layers, "feed_forward_length": 128,
            "attention.head_count": 4, "attention.head_count_kv": 1}


def _moe(tmp_path: Path, experts_declared: int = 8, experts_held: int = 8, n_layers: int = 4) -> Path:
    tensors: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (EMBD, 32))]
    for i in range(n_layers):
        tensors += _dense_layer(i) + [
            (f"blk.{i}.ffn_gate_inp.weight", (EMBD, experts_held)),
            (f"blk.{i}.ffn_gate_exps.weight", (EMBD, 32, experts_held)),
            (f"blk.{i}.ffn_up_exps.weight", (EMBD, 32, experts_held)),
            (f"blk.{i}.ffn_down_exps.weight", (32, EMBD, experts_held)),
        ]
    tensors += [("output_norm.weight", (EMBD,)), ("output.weight", (EMBD, 32))]
    hp = _common(n_layers) | {"expert_count": experts_declared, "expert_used_count": 2, "expert_feed_forward_length": 32}
    return write_arch_model(tmp_path / "moe.gguf", "qwen3moe", hp, tensors)


def _gemma(tmp_path: Path, window: int = 512, ctx: int = 4096, n_layers: int = 12) -> Path:
    tensors = [("token_embd.weight", (EMBD, 32))] + [t for i in range(n_layers) for t in _dense_layer(i)]
    hp = _common(n_layers, ctx) | {"attention.key_length": 16, "attention.value_length": 16, "attention.sliding_window": window}
    return write_arch_model(tmp_path / "swa.gguf", "gemma3", hp, tensors + [("output_norm.weight", (EMBD,))])


# -- the layout of each kind ---------------------------------------------------------------------


def test_sliding_window_layers_keep_window_plus_micro_batch(tmp_path: Path) -> None:
    net = network_from_file(_gemma(tmp_path))
    kinds = [layer.kind for layer in net.layers]
    # llama.cpp's gemma3 pattern of 6: layers 5 and 11 are global, the rest slide
    assert [i for i, k in enumerate(kinds) if k == "full"] == [5, 11]
    per_cell = 2 * 16 * 2  # K and V of one 16-wide head, f16
    full = 2 * 32768 * per_cell
    sliding = 10 * 1024 * per_cell  # padded(512 + 512)
    assert kv_cache_bytes(net, 32768, "f16") == full + sliding
    # below the window the sliding layers hold the context, like the others
    assert kv_cache_bytes(net, 512, "f16") == 12 * 512 * per_cell


def test_latent_attention_keeps_one_compressed_row_and_no_v() -> None:
    net = network_from_catalog(find_variant("deepseek-coder-v2:16b-instruct-q4_K_M"))
    assert {layer.kind for layer in net.layers} == {"latent"}
    # 27 layers × 576 f16 values per cell: 31,104 bytes a token (a dense 16-head MHA cache would be 8×)
    assert kv_cache_bytes(net, 4096, "f16") == 27 * 576 * 2 * 4096


def test_recurrent_layers_keep_a_fixed_state(tmp_path: Path) -> None:
    hp = _common(8) | {"full_attention_interval": 4, "ssm.conv_kernel": 4, "ssm.inner_size": 64,
                       "ssm.state_size": 16, "ssm.group_count": 2, "ssm.time_step_rank": 4}
    layers = layer_memory("qwen3next", hp)
    assert [layer.kind for layer in layers] == ["recurrent"] * 3 + ["full"] + ["recurrent"] * 3 + ["full"]
    # (conv_kernel - 1) × (inner + 2 × groups × state) + state × inner F32 values per sequence
    assert layers[0].state_values == 3 * (64 + 2 * 2 * 16) + 16 * 64
    path = write_arch_model(tmp_path / "next.gguf", "qwen3next", hp,
                            [("token_embd.weight", (EMBD, 32))] + [t for i in range(8) for t in _dense_layer(i)])
    net = network_from_file(path)
    grows = kv_cache_bytes(net, 8192, "f16") - kv_cache_bytes(net, 4096, "f16")
    assert grows == 2 * 4096 * (2 * 16 * 2)  # only the two attention layers grow with the context


def test_mixture_of_experts_reads_only_the_active_experts(tmp_path: Path) -> None:
    net = network_from_file(_moe(tmp_path))
    est = estimate(net, FitRequest(ctx=1024, ram_bytes=GIB, vram_bytes=0))
    expert_bytes = 4 * 3 * EMBD * 32 * 8 * 4
    assert est.expert_bytes == expert_bytes and est.experts == "2 of 8"
    dense = est.weights_bytes - expert_bytes - EMBD * 32 * 4  # the input embedding is a lookup
    assert est.bytes_read_per_token == dense + expert_bytes * 2 // 8


def test_auto_keeps_experts_in_ram_before_dropping_layers() -> None:
    net = network_from_catalog(find_variant("qwen3-coder:30b-instruct-q4_K_M"))
    roomy = estimate(net, FitRequest(ctx=8192, ram_bytes=64 * GIB, vram_bytes=40 * GIB))
    assert roomy.gpu_layers == net.n_layers + 1 and roomy.cpu_moe_layers == 0
    short = estimate(net, FitRequest(ctx=8192, ram_bytes=64 * GIB, vram_bytes=8 * GIB))
    # every layer's attention and the KV cache on the GPU, the experts of the first layers in RAM
    assert short.gpu_layers == net.n_layers + 1 and 0 < short.cpu_moe_layers < net.n_layers
    assert short.fits and short.gpu_bytes <= 8 * GIB
    fewer = estimate(net, FitRequest(ctx=8192, ram_bytes=64 * GIB, vram_bytes=8 * GIB, n_cpu_moe=net.n_layers, gpu_layers=49))
    assert fewer.gpu_bytes < short.gpu_bytes  # all experts in RAM: less on the GPU than the chosen split
    flags = shlex.split(command_line(short, "m.gguf", "llama-server"))
    assert flags[flags.index("--n-cpu-moe") + 1] == str(short.cpu_moe_layers)
    assert flags[flags.index("-ngl") + 1] == str(net.n_layers + 1)


# -- the largest context, the command line -------------------------------------------------------


def test_max_ctx_is_the_largest_multiple_of_256_that_fits() -> None:
    net = network_from_catalog(find_variant("qwen2.5-coder:0.5b-instruct-q4_K_M"))
    budget = FitRequest(ram_bytes=700 * MIB, vram_bytes=0)
    best = max_context(net, budget)
    assert best.fits and best.ctx % 256 == 0
    assert not estimate(net, replace(budget, ctx=best.ctx + 256)).fits
    # capped by the model's limit when everything fits
    assert max_context(net, FitRequest(ram_bytes=64 * GIB, vram_bytes=0)).ctx == net.max_ctx
    # nothing fits: the estimate at 256 says so
    assert not max_context(net, FitRequest(ram_bytes=100 * MIB, vram_bytes=0)).fits


def test_flags_realize_the_plan(cli) -> None:
    result = cli("fit", "gemma-3:270m-base-q4_K_M", "--ctx", "8192", "--kv-type", "q8_0", "--flags", "llama-server", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    args = shlex.split(data["command"])
    assert args[:3] == ["llama-server", "-m", "gemma-3-270m-Q4_K_M.gguf"]
    for flag, value in (("-c", "8192"), ("-ngl", "0"), ("-np", "1"), ("-ctk", "q8_0"), ("-ctv", "q8_0"),
                        ("-fa", "on"), ("--load-mode", "none"), ("-fit", "off")):
        assert args[args.index(flag) + 1] == value
    ollama = cli("fit", "gemma-3:270m-base-q4_K_M", "--ctx", "8192", "--flags", "ollama")
    assert "PARAMETER num_ctx 8192" in ollama.out and "PARAMETER num_gpu 0" in ollama.out


def test_max_ctx_cli_reports_the_context(cli) -> None:
    result = cli("fit", "qwen3-coder:30b-instruct-q4_K_M", "--max-ctx", "--mem", "20", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["fits"] and data["ctx"] % 256 == 0 and data["total_bytes"] <= 20 * GIB
    assert "largest context that fits" in cli("fit", "qwen3-coder:30b-instruct-q4_K_M", "--max-ctx", "--mem", "20").out


# -- refusals ----------------------------------------------------------------------------------


def test_expert_count_must_match_the_expert_tensors(tmp_path: Path, cli) -> None:
    path = _moe(tmp_path, experts_declared=16, experts_held=8)
    with pytest.raises(ModelFileError, match="expert_count is 16 but tensor blk.0.ffn_gate_exps.weight holds 8"):
        network_from_file(path)
    result = cli("fit", str(path))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


def test_sliding_window_wider_than_the_context_is_refused(tmp_path: Path, cli) -> None:
    result = cli("fit", str(_gemma(tmp_path, window=8192, ctx=4096)))
    assert result.code == 2 and "sliding_window 8192 is larger than the model's context_length 4096" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_context_beyond_the_limit_is_refused(cli) -> None:
    result = cli("fit", "deepseek-coder-v2:16b-instruct-q4_K_M", "--ctx", "200000")
    assert result.code == 2 and "maximum of 163840" in result.err


@pytest.mark.parametrize("args", [["--flags", "vllm"], ["--n-cpu-moe", "-1"], ["--max-ctx", "--measure"]])
def test_bad_plan_options_are_one_line(cli, args: list[str]) -> None:
    result = cli("fit", "qwen3-coder:30b-instruct-q4_K_M", *args)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


# -- names and the catalog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "size", "flavor", "quant"),
    [
        ("mistral-7b-instruct-v0.2.Q5_K_S.gguf", "Mistral", 7.0, "instruct", "Q5_K_S"),
        ("mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf", "Mixtral", 7.0, "instruct", "Q4_K_M"),
        ("llama-2-13b-chat.Q4_K_M.gguf", "Llama 2", 13.0, "chat", "Q4_K_M"),
        ("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", "Llama 3", 8.0, "instruct", "Q4_K_M"),
        ("gemma-2-9b-it-Q4_K_M.gguf", "Gemma 2", 9.0, "instruct", "Q4_K_M"),
        ("Phi-3-mini-4k-instruct-q4.gguf", "Phi", None, "instruct", None),
        ("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "Qwen3-Coder", 30.0, "instruct", "Q4_K_M"),
        ("DeepSeek-Coder-V2-Lite-Instruct-Q4_K_M.gguf", "DeepSeek-Coder-V2", None, "instruct", "Q4_K_M"),
        ("gemma-3-270m-q4_k_m.gguf", "Gemma 3", 0.27, "base", "Q4_K_M"),
    ],
)
def test_explain_names_general_and_new_families(name: str, family: str, size: float | None, flavor: str, quant: str | None) -> None:
    v = explain_name(name)
    assert (v.family, v.size_b, v.flavor, v.quant) == (family, size, flavor, quant)


def test_active_parameters_are_read_from_the_name() -> None:
    v = explain_name("Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf")
    assert v.active_b == 3.0 and not v.unknown_parts and "read per token" in v.explanations["size"]


@pytest.mark.parametrize("name", ["DeepSeek-Coder-V2-Lite-Instruct-Q4_K_M.gguf", "mistralai_Devstral-Small-2505-Q4_K_M.gguf",
                                  "Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "Codestral-22B-v0.1-Q4_K_M.gguf",
                                  "gemma-3-12b-it-Q4_K_M.gguf", "qwen3-coder:480b-instruct-q4_K_M"])
def test_published_file_names_of_new_models_resolve(name: str) -> None:
    assert find_variant(name).file_type.name == "Q4_K_M"


def test_catalog_gemma_matches_the_real_file_tensor_for_tensor(gemma_model: str) -> None:
    # MODELS.md's Gemma 3 270M file against the catalog's prediction of it
    real = network_for(gemma_model)
    predicted = network_from_catalog(find_variant("gemma-3:270m-base-q4_K_M"))
    assert [(t.name, t.type, t.dims) for t in sorted(predicted.tensors, key=lambda t: t.name)] == \
           [(t.name, t.type, t.dims) for t in sorted(real.tensors, key=lambda t: t.name)]
    assert [layer.kind for layer in predicted.layers] == [layer.kind for layer in real.layers]
    assert abs(predicted.file_bytes - real.file_bytes) <= 0.02 * real.file_bytes


def _published_sizes() -> list[dict[str, str]]:
    with (Path(__file__).parent / "data" / "published-gguf-sizes.csv").open() as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


@pytest.mark.parametrize("row", _published_sizes(), ids=lambda r: r["file"])
def test_new_architectures_file_sizes_within_2_percent_of_published(row: dict[str, str]) -> None:
    predicted = network_from_catalog(find_variant(row["file"])).file_bytes
    published = float(row["size_gb"]) * 1e9
    assert abs(predicted - published) <= 0.02 * published, f"{row['file']}: predicted {predicted / 1e9:.3f} GB"


# -- against llama.cpp's own allocation --------------------------------------------------------


def _tiny_variant(tag: str, **changes: object) -> CatalogVariant:
    """A catalog model shrunk to test size, keeping its architecture and its kind of layers."""
    variant = find_variant(tag)
    extra = dict(variant.model.extra) | dict(changes.pop("extra", {}))  # type: ignore[call-overload]
    model = dataclasses.replace(variant.model, extra=tuple(sorted(extra.items())), **changes)  # type: ignore[arg-type]
    return CatalogVariant(model, variant.file_type)


TINY = {
    "mixture of experts (qwen3moe)": _tiny_variant(
        "qwen3-coder:30b-instruct-q8_0", n_layers=2, n_embd=256, n_vocab=1024, n_heads=4, n_kv_heads=2,
        extra={"expert_count": 8, "expert_used_count": 2, "expert_feed_forward_length": 256}),
    "latent attention (deepseek2, Lite layout)": _tiny_variant(
        "deepseek-coder-v2:16b-instruct-q8_0", n_embd=256, n_vocab=1024, n_ff=512, n_heads=4,
        extra={"expert_count": 8, "expert_used_count": 2, "expert_feed_forward_length": 256}),
    "sliding window (gemma3)": _tiny_variant("gemma-3:270m-base-q8_0", n_layers=6, n_vocab=1024),
    "recurrent + experts (qwen3next)": _tiny_variant(
        "qwen3-coder-next:80b-instruct-q8_0", n_layers=4, n_embd=256, n_vocab=1024, n_ff=512, n_heads=4, n_kv_heads=2,
        extra={"expert_count": 8, "expert_used_count": 2, "expert_feed_forward_length": 256,
               "expert_shared_feed_forward_length": 256, "ssm.inner_size": 512, "ssm.group_count": 2, "ssm.time_step_rank": 4,
               "attention.key_length": 64, "attention.value_length": 64, "rope.dimension_count": 16}),
}


@pytest.mark.parametrize("kind", list(TINY))
def test_fit_components_equal_llama_cpp_allocation(kind: str, tmp_path: Path) -> None:
    # A twin of a tiny model of each kind, loaded by llama.cpp through the engine: the weights,
    # KV cache and recurrent state llama.cpp reports allocating are what fit counts.
    variant = TINY[kind]
    source = _catalog_source(variant, tmp_path)
    store = Store()
    twin = make_twin(source, store)
    try:
        net = network_from_file(store.resolve(twin.name).path)
        assert [t.name for t in net.tensors] == [t.name for t in network_from_catalog(variant).tensors]
        for ctx in (1024, 4096):
            with EngineProcess(str(store.resolve(twin.name).path), EngineSettings(n_ctx=ctx, load_mode="none")) as engine:
                engine.call("time_prompt", n_prompt=64, seed=1)
                buffers = engine.call("info")["buffers"]
            est = estimate(net, FitRequest(ctx=ctx, ram_bytes=GIB, vram_bytes=0))
            cache = buffers.get("KV", 0) + buffers.get("RS", 0)
            assert abs(cache - est.kv_cache_bytes) <= 0.01 * MIB * 2, (kind, ctx, buffers, est.kv_cache_bytes)
            assert abs(buffers["model"] - est.weights_bytes) <= 0.01 * MIB * 2, (kind, ctx, buffers, est.weights_bytes)
    finally:
        remove_twin(twin, store)


DEPTH_FILL = {  # a twin's depth is written as cache state where the cache is the plain one (engine/kv_state.py)
    "mixture of experts (qwen3moe)": "written",
    "latent attention (deepseek2, Lite layout)": "written",  # K rows only: V is read from the compressed K
    "sliding window (gemma3)": "decoded",  # two caches, window and full
    "recurrent + experts (qwen3next)": "decoded",  # recurrent state beside the cache
}


@pytest.mark.parametrize("kind", list(TINY))
def test_bench_at_depth_runs_on_a_twin_of_each_kind(kind: str, tmp_path: Path) -> None:
    # a recurrent state cannot drop the tokens a repetition added after the depth: the engine
    # fills the depth again instead of timing on a state that holds more than it says
    from variantlab.bench import BenchPlan, bench_models

    store = Store()
    twin = make_twin(_catalog_source(TINY[kind], tmp_path), store)
    try:
        plan = BenchPlan(n_prompt=32, n_gen=8, reps=2, n_depth=256, settings=EngineSettings(n_ctx=1024), explicit_ctx=True)
        result = bench_models([twin.name], plan, store=store)[0]
        assert result.ok, result.error
        assert result.n_depth == 256 and result.gen_tokens_per_s > 0
        assert result.depth_fill == DEPTH_FILL[kind]
    finally:
        remove_twin(twin, store)
