"""`variantlab bench` and `results` on the real SmolLM2 model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_gguf import write_tiny_model

pytestmark = pytest.mark.integration

BENCH_KEYS = ("load_s", "ttft_s", "prompt_tokens_per_s", "gen_tokens_per_s", "peak_rss_bytes", "bandwidth_fraction")


def test_bench_json_and_results_list(cli, smol_model: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", smol_model, "--reps", "2", "--prompt", "64", "--gen", "16", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    for key in BENCH_KEYS:
        assert data[key] > 0, key
    assert data["reps"] == 2 and data["threads"] >= 1 and data["ctx"] == 80
    assert data["spread"]["gen_tokens_per_s"]["n"] == 2
    assert data["bandwidth_fraction"] < 1.5  # a fraction of a measured physical limit, within noise
    listed = json.loads(cli("results", "list", "--json").out)
    assert listed[0]["id"] == data["run_id"] and listed[0]["status"] == "ok"
    shown = json.loads(cli("results", "show", str(data["run_id"]), "--json").out)
    assert shown["metrics"]["gen_tokens_per_s"]["median"] == pytest.approx(data["gen_tokens_per_s"])
    assert "llama-cpp-python" in shown["engine_version"] and shown["hardware"]["cpu"]


def test_a_failing_model_is_recorded_and_the_others_still_run(cli, smol_model: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    odd = write_tiny_model(tmp_path / "odd.gguf", arch="notanarch")
    r = cli("bench", str(odd), smol_model, "--reps", "1", "--prompt", "16", "--gen", "4", "--json")
    assert r.code == 2
    results = json.loads(r.out)
    assert [x["status"] for x in results] == ["failed", "ok"]
    assert "unknown model architecture" in r.err and len(r.err.strip().splitlines()) == 1
    runs = json.loads(cli("results", "list", "--json").out)
    assert {x["status"] for x in runs} == {"ok", "failed"}
    c = json.loads(cli("results", "compare", str(runs[0]["id"]), str(runs[0]["id"]), "--json").out)
    assert c["comparable"] is True


@pytest.mark.parametrize(("args", "message"), [
    (("--threads", "0"), "--threads 0 is out of range"),
    (("--ctx", "100000"), "maximum of 8192 tokens"),
    (("--reps", "0"), "--reps 0 is out of range"),
])
def test_bad_bench_input_is_one_line_exit_2(cli, smol_model: str, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", smol_model, *args)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1


def test_bench_missing_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", str(tmp_path / "nope.gguf"))
    assert r.code == 2 and "no such file" in r.err


def test_a_misspelt_name_stops_before_any_model_runs(cli, smol_model: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", smol_model, "qwen-coder-typo", "--reps", "1")
    assert r.code == 2 and "unknown model 'qwen-coder-typo'" in r.err
    assert cli("results", "list", "--json").out.strip() == "[]"
