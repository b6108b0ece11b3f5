"""pick uses this machine's measurements of a file as soon as bench has recorded them."""

from __future__ import annotations

import json


def test_bench_run_replaces_the_predicted_speed(cli, default_model: str) -> None:
    name = "qwen2.5-coder-0.5b-instruct:q4_k_m"
    assert cli("models", "fetch", f"file:{default_model}", "--name", name).code == 0
    before = json.loads(cli("pick", "--task", "chat", "--json").out)
    stored = next(c for c in before["ranked"] if c["variant"] == name)
    assert stored["source"] == "store" and stored["tokens_per_s_source"].startswith("predicted")
    assert stored["accuracy_source"].startswith("published")

    bench = json.loads(cli("bench", name, "--reps", "1", "--prompt", "32", "--gen", "16", "--json").out)
    after = json.loads(cli("pick", "--task", "chat", "--json").out)
    stored = next(c for c in after["ranked"] if c["variant"] == name)
    assert stored["tokens_per_s_source"] == f"measured (bench run {bench['run_id']})"
    assert stored["tokens_per_s"] == round(bench["gen_tokens_per_s"], 1)
    # the bench run's share of the bandwidth ceiling now scales every other prediction
    assert after["bandwidth_efficiency"] == bench["bandwidth_fraction"]
