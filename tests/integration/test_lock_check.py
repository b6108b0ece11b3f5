"""`lock check` on real files (issue 22): an unchanged pin passes; a role re-pinned from Q8_0 to
Q2_K of the same model is a regression with the prompts and figures that moved; a fingerprint
from another engine build is an engine change; a missing blob or a damaged fingerprint is exit 2.

SmolLM2-135M keeps it quick: both files are quantized from its Q4_1 file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, smol_model: str) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lock-check")
    env = {**os.environ, "VARIANTLAB_HOME": str(root / "home"), "VARIANTLAB_LOCKFILE": str(root / "variantlab.lock")}
    subprocess.run([sys.executable, "-m", "variantlab.cli.app", "models", "fetch", f"file:{smol_model}", "--name", "smol:q4_1"],
                   env=env, check=True, capture_output=True)
    return env


def vl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "variantlab.cli.app", *args], capture_output=True, text=True, env=env, timeout=1200)


def test_lock_check_passes_an_unchanged_pin_and_reports_a_worse_one(project: dict[str, str]) -> None:
    made = vl(project, "quantize", "smol:q4_1", "--types", "Q8_0,Q2_K", "--allow-requantize", "--json")
    assert made.returncode == 0, made.stderr
    q8, q2 = (m["name"] for m in json.loads(made.stdout)["outputs"])
    assert "q8_0" in q8.lower() and "q2_k" in q2.lower()

    added = vl(project, "lock", "add", "chat", q8, "--json")
    assert added.returncode == 0, added.stderr
    fingerprint = json.loads(added.stdout)["after"]["fingerprint"]
    assert len(fingerprint["outputs"]) == 6 and len(fingerprint["quick"]["tasks"]) == 20 and fingerprint["speed"]["gen_tokens_per_s"] > 0

    same = vl(project, "lock", "check", "--format", "json")
    assert same.returncode == 0, same.stdout + same.stderr
    [role] = json.loads(same.stdout)["roles"]
    assert role["ok"] and role["changed"] == [] and role["cause"] == "nothing" and role["p_value"] == 1.0

    assert vl(project, "lock", "add", "chat", q2, "--fingerprint", "outputs").returncode == 0
    worse = vl(project, "lock", "check", "chat", "--against", "1", "--format", "json")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    [role] = json.loads(worse.stdout)["roles"]
    assert role["cause"] == "file" and role["changed"] and role["kld"] > 0.05
    assert any("prompts answer differently" in r for r in role["regressions"])
    assert any("KL-divergence" in r for r in role["regressions"])
    assert role["pass_before"] is not None and role["speed_before"]["gen_tokens_per_s"] > 0  # the figures side by side


def _edit_fingerprint(env: dict[str, str], change: dict[str, object]) -> None:
    lock = Path(env["VARIANTLAB_LOCKFILE"])
    data = tomllib.loads(lock.read_text())
    data["roles"]["chat"]["fingerprint"].update(change)
    lock.write_text(tomli_w.dumps(data))


def test_another_engine_build_is_reported_as_an_engine_change_and_bad_input_is_exit_2(project: dict[str, str]) -> None:
    if "chat" not in vl(project, "lock", "show", "--json").stdout:
        pytest.skip("needs the pin of the test above")
    recorded = json.loads(vl(project, "lock", "show", "--json").stdout)["roles"]["chat"]["fingerprint"]
    first = dict(recorded["outputs"][0])
    tokens = first["tokens"].split()
    first["tokens"] = " ".join(tokens[:3] + [str(int(tokens[3]) + 1)] + tokens[4:])  # what the old build answered
    first["sha256"] = "0" * 64
    _edit_fingerprint(project, {"engine": "llama-cpp-python 0.3.2 | AVX2 = 1", "outputs": [first, *recorded["outputs"][1:]]})
    changed = vl(project, "lock", "check", "--format", "json")
    assert changed.returncode == 1, changed.stderr
    [role] = json.loads(changed.stdout)["roles"]
    assert role["cause"] == "engine" and role["engine_before"].startswith("llama-cpp-python 0.3.2")
    assert [(c["id"], c["at_token"]) for c in role["changed"]] == [(first["id"], 3)]
    text = vl(project, "lock", "check")
    assert "engine: llama-cpp-python 0.3.2" in text.stdout and "what differs: engine" in text.stdout
    report = Path(project["VARIANTLAB_HOME"]) / "check.md"
    markdown = vl(project, "lock", "check", "--format", "markdown", "-o", str(report))
    assert markdown.returncode == 1 and "REGRESSION" in markdown.stdout and "| chat |" in report.read_text()

    _edit_fingerprint(project, {"outputs": [{**first, "tokens": "one two"}]})
    damaged = vl(project, "lock", "check")
    assert damaged.returncode == 2 and "does not parse" in damaged.stderr and damaged.stderr.count("\n") <= 2

    sha = json.loads(vl(project, "lock", "show", "--json").stdout)["roles"]["chat"]["sha256"]
    blob = next(Path(project["VARIANTLAB_HOME"]).rglob(sha))
    blob.unlink()
    missing = vl(project, "lock", "check")
    assert missing.returncode == 2 and "not in the store" in missing.stderr and "Traceback" not in missing.stderr
