"""pick and hw: the flavour rules, the three tiers, and the budget they must fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from variantlab import config
from variantlab.hardware import memory_bandwidth
from variantlab.knowledge.catalog import models

TIER_KEYS = {"variant", "total_bytes", "predicted_tokens_per_s", "accuracy", "accuracy_source", "reason"}


@pytest.fixture(scope="module")
def measured_bandwidth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real bandwidth probe for the module; each test's home gets its cached result."""
    home = tmp_path_factory.mktemp("probe-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARIANTLAB_HOME", str(home))
        memory_bandwidth(refresh=True)
    return home / "hardware.json"


@pytest.fixture(autouse=True)
def cached_probe(measured_bandwidth: Path, isolated_home: Path) -> None:
    if measured_bandwidth.exists():  # not cached when the CPU was busy: then each test probes
        isolated_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(measured_bandwidth, config.home() / "hardware.json")


def _catalog_model(tag: str):
    return next(m for m in models() if tag.startswith(m.tag + "-"))


def test_infill_proposes_only_base_models_with_fim(cli) -> None:
    result = cli("pick", "--task", "infill", "--json")
    assert result.code == 0, result.err
    tiers = json.loads(result.out)["tiers"]
    assert [t["tier"] for t in tiers] == ["fastest", "balanced", "best quality"]
    for t in tiers:
        model = _catalog_model(t["variant"])
        assert model.flavor == "base" and model.fim, t["variant"]


def test_chat_proposes_instruct_models_that_fit_the_memory_hw_reports(cli) -> None:
    hw = json.loads(cli("hw", "--json").out)
    tiers = json.loads(cli("pick", "--task", "chat", "--json").out)["tiers"]
    assert len(tiers) == 3
    for t in tiers:
        assert _catalog_model(t["variant"]).flavor == "instruct"
        assert t["total_bytes"] <= hw["ram_available_bytes"] * 1.02  # available RAM moves a little between calls


def test_chat_with_budget_and_context_gives_three_complete_tiers(cli) -> None:
    result = cli("pick", "--task", "chat", "--mem", "8", "--ctx", "16384", "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["ctx"] == 16384 and answer["memory_budget_bytes"] == 8 << 30
    assert len(answer["tiers"]) == 3
    for t in answer["tiers"]:
        assert TIER_KEYS <= t.keys()
        assert t["total_bytes"] <= 8 << 30
        assert t["predicted_tokens_per_s"] > 0 and t["accuracy"] is not None
    fastest, balanced, best = answer["tiers"]
    assert fastest["predicted_tokens_per_s"] >= balanced["predicted_tokens_per_s"] >= best["predicted_tokens_per_s"]
    assert best["accuracy"] >= balanced["accuracy"]
    assert answer["rules"]


def test_python_task_proposes_python_models(cli) -> None:
    tiers = json.loads(cli("pick", "--task", "python", "--json").out)["tiers"]
    assert tiers and all(_catalog_model(t["variant"]).flavor == "python" for t in tiers)


def test_nothing_fits_a_tiny_budget(cli) -> None:
    result = cli("pick", "--task", "chat", "--mem", "0.1", "--json")
    assert result.code == 0
    assert json.loads(result.out)["tiers"] == []


@pytest.mark.parametrize(("args", "expected"), [(["--task", "poetry"], "unknown task"), (["--ctx", "0"], "out of range"),
                                                (["--mem", "-1"], "not a sensible memory size")])
def test_bad_pick_input(cli, args: list[str], expected: str) -> None:
    result = cli("pick", *args)
    assert result.code == 2 and expected in result.err


def test_hw_reports_the_machine(cli) -> None:
    facts = json.loads(cli("hw", "--json").out)
    for key in ("cpu", "physical_cores", "logical_cores", "simd", "ram_total_bytes", "ram_available_bytes", "gpus",
                "store_free_disk_bytes", "memory_bandwidth_bytes_per_s"):
        assert key in facts
    assert facts["memory_bandwidth_bytes_per_s"] > 1e8
    assert isinstance(facts["gpus"], list)  # no driver here: simply none


def test_a_mixture_of_experts_is_ranked_by_its_active_bytes() -> None:
    # Qwen3-Coder-30B-A3B holds 30 B weights but reads about 3 B a token: predicted from the
    # bytes a token reads, it is faster than a 7B dense model, and the reason says why.
    from variantlab.fit import FitRequest
    from variantlab.pick import _candidates, _reason, task_spec
    from variantlab.results import ResultsDB
    from variantlab.store import Store

    request = FitRequest(ctx=8192, ram_bytes=64 << 30, vram_bytes=0)
    with ResultsDB() as db:
        found = {c.variant: c for c in _candidates("chat", request, Store(), db, 40e9, None)}
    moe, dense = found["qwen3-coder:30b-instruct-q4_K_M"], found["qwen2.5-coder:7b-instruct-q4_K_M"]
    assert moe.estimate.total_bytes > 3 * dense.estimate.total_bytes
    assert moe.tokens_per_s > dense.tokens_per_s
    assert "active experts (8 of 128)" in moe.tokens_per_s_source
    assert "active experts' bytes (8 of 128 experts a token)" in _reason("fastest", moe, task_spec("chat"))


def test_slow_predictions_keep_their_figures() -> None:
    """One decimal turned a 32B's 0.603 tokens/s into 0.6 and a 70B's 0.04 into 0.0 ("does not run")."""
    from variantlab.pick import _three_figures

    assert [_three_figures(x) for x in (0.6031, 0.0412, 30.94, 135.6)] == [0.603, 0.0412, 30.9, 136.0]
