"""The lock scenario of issue 7 on real models: pin, evaluate, pin another, evaluate, roll back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from variantlab.store import fetch

pytestmark = pytest.mark.integration


def test_pin_evaluate_pin_evaluate_rollback(cli, default_model: str, smol_model: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    fetch(f"file:{default_model}", name="qwen-0.5b")  # A: a code model
    fetch(f"file:{smol_model}", name="smollm2-135m")  # B: a small general model, which scores lower

    def pin_and_score(model: str) -> float:
        assert cli("lock", "add", "chat", model, "-m", f"try {model}", "--fingerprint", "none").code == 0
        result = cli("eval", "chat", "--limit", "5", "--parallel", "5", "--max-tokens", "384", "--json")
        assert result.code == 0, result.err
        report = json.loads(result.out)
        assert report["model"] == model  # the role resolved through the lock
        return float(report["pass@1"])

    score_a = pin_and_score("qwen-0.5b")
    score_b = pin_and_score("smollm2-135m")
    assert score_b < score_a

    # rollback uses only the store: no index or hub can be reached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    rolled = cli("lock", "rollback", "chat", "--json")
    assert rolled.code == 0, rolled.err
    assert json.loads(rolled.out)["after"]["model"] == "qwen-0.5b"
    assert cli("lock", "verify").code == 0

    history = json.loads(cli("lock", "history", "chat", "--json").out)
    assert [h["after"]["model"] for h in history] == ["qwen-0.5b", "smollm2-135m", "qwen-0.5b"]
    scores = {h["after"]["model"]: h["after_results"]["humaneval pass@1"] for h in history}
    assert scores == {"qwen-0.5b": pytest.approx(score_a), "smollm2-135m": pytest.approx(score_b)}

    (change,) = json.loads(cli("lock", "diff", "1", "2", "--json").out)
    assert change["role"] == "chat" and change["before"]["model"] == "qwen-0.5b" and change["after"]["model"] == "smollm2-135m"
    table = cli("lock", "diff", "1", "2")
    assert "humaneval pass@1" in table.out
