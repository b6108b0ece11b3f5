"""eval on real models: HumanEval through the chat template, infilling, KL-divergence, batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from variantlab.engine import EngineError, EngineProcess, EngineSettings
from variantlab.eval.kld import KldPlan, evaluate_kld
from variantlab.quantize import dequantize
from variantlab.results import ResultsDB
from variantlab.store import Store

pytestmark = pytest.mark.integration


def test_humaneval_greedy_is_repeatable_and_its_samples_rescore_the_same(cli, default_model: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = []
    for i in range(2):
        out = tmp_path / f"samples{i}.jsonl"
        result = cli("eval", default_model, "--limit", "3", "--parallel", "4", "--out", str(out), "--json")
        assert result.code == 0, result.err
        runs.append(json.loads(result.out))
    first, second = runs
    assert first["prompt_style"] == "chat" and first["tasks"] == 3 and 0 <= first["pass@1"] <= 1
    assert first["pass@1"] == second["pass@1"]
    assert {t: r["passed"] for t, r in first["per_task"].items()} == {t: r["passed"] for t, r in second["per_task"].items()}
    assert first["passed"] >= 1  # the 0.5B model solves at least one of the first three problems
    rescored = cli("eval", "--samples", str(tmp_path / "samples0.jsonl"), "--json")
    assert rescored.code == 0, rescored.err
    assert [s["passed"] for s in json.loads(rescored.out)["per_sample"]] == [r["passed"] for r in first["per_task"].values()]
    with ResultsDB() as db:
        (run, *_) = db.runs(kind="eval")
    assert run.suite == "humaneval" and run.dataset_sha256 == first["dataset_sha256"] and run.suite_version


def test_infill_suite_runs_on_the_default_model(cli, default_model: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("eval", default_model, "--suite", "infill", "--limit", "2", "--parallel", "4", "--max-tokens", "64", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["prompt_style"] == "infill" and report["tasks"] == 4
    assert set(report["per_task"]) == {"HumanEval/0/line", "HumanEval/0/block", "HumanEval/1/line", "HumanEval/1/block"}


def test_infill_refuses_a_model_without_fim_tokens(cli, smol_model: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("eval", smol_model, "--suite", "infill", "--limit", "1")
    assert result.code == 2 and "no fill-in-the-middle tokens" in result.err


def test_kld_against_a_dequantized_reference(smol_model: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    dequantize(smol_model, "f16", store=store, name="smol:f16")
    plan = KldPlan(n_ctx=256, max_chunks=2, top_k=256)
    quantized = evaluate_kld(smol_model, "smol:f16", plan, store=store)
    itself = evaluate_kld("smol:f16", "smol:f16", plan, store=store)
    assert itself.mean_kld == pytest.approx(0, abs=1e-6) and itself.same_top_p == 1.0
    assert quantized.mean_kld > 100 * max(itself.mean_kld, 1e-7)
    assert 0.5 < quantized.same_top_p < 1.0
    assert quantized.tokens == 2 * (256 - 1 - 128)
    assert quantized.ppl_reference == pytest.approx(itself.ppl)
    assert quantized.reference_file_type == "F16" and "derived" in store.manifest("smol:f16").source


def test_continuous_batching_is_deterministic_and_seeds_samples_apart(smol_model: str) -> None:
    with EngineProcess(smol_model, EngineSettings(n_ctx=5 * 256, n_seq_max=5)) as engine:
        prompts = [engine.call("tokenize", text=t) for t in ("def add(a, b):", "1, 2, 3,", "Once upon a time", "def add(a, b):", "The sky")]
        done = []
        first = engine.call("generate_many", prompts=prompts, max_tokens=24, on_progress=done.append)
        again = engine.call("generate_many", prompts=prompts, max_tokens=24)
        assert [g["tokens"] for g in first] == [g["tokens"] for g in again]
        assert first[0]["tokens"] == first[3]["tokens"]  # greedy: the same prompt, the same output
        assert sorted(d["done"] for d in done) == list(range(5))
        same = [prompts[0]] * 4
        sampled = engine.call("generate_many", prompts=same, max_tokens=24, sampling={"temperature": 1.0, "seed": 7})
        assert len({tuple(g["tokens"]) for g in sampled}) > 1  # each sample has its own seed
        with pytest.raises(EngineError, match="do not fit"):
            engine.call("generate_many", prompts=prompts, max_tokens=1000)
