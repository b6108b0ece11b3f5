"""Speculative decoding from the command line, on the real Qwen2.5-Coder pair: a draft pinned with a
role and served, bench's speculation figures, eval --lookup's unchanged outcomes, and bad input
(another vocabulary, a draft larger than the target, a draft with no room beside it): one line, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.test_serve import _start_serve

pytestmark = pytest.mark.integration

TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct:q4_k_m", "qwen2.5-coder-0.5b-instruct:q4_k_m"


@pytest.mark.parametrize(("command", "why"), [
    (["eval", "T", "--draft", "SMOL", "--limit", "1"], "another vocabulary"),
    (["eval", "D", "--draft", "T", "--limit", "1"], "is not smaller than the target"),
    (["bench", "T", "--draft", "D", "--mem", "1"], "does not fit beside the target"),
    (["bench", "T", "--lookup", "--draft", "D"], "one bench times one"),
    (["eval", "T", "--lookup", "--suite", "kld", "--reference", "D"], "kld only scores"),
])
def test_a_draft_that_cannot_help_is_refused_in_one_line(cli, coder_pair, smol_model, command: list[str], why: str) -> None:
    paths = {"T": coder_pair[0], "D": coder_pair[1], "SMOL": smol_model}
    got = cli(*[paths.get(a, a) for a in command])
    assert got.code == 2 and why in got.err and len(got.err.strip().splitlines()) == 1, got.err


def test_bench_reports_the_speed_up_with_identical_output(cli, coder_pair) -> None:
    got = cli("bench", coder_pair[0], "--lookup", "--reps", "1", "--prompt", "16", "--gen", "64", "--json")
    assert got.code == 0, got.err
    sp = json.loads(got.out)["speculation"]
    assert sp["method"] == "lookup" and sp["spec_identical"] == 1.0
    assert sp["spec_gen_tokens_per_s"] > 0 and sp["code_gen_tokens_per_s"] > 0
    assert sp["spec_speedup"] == pytest.approx(sp["spec_gen_tokens_per_s"] / sp["code_gen_tokens_per_s"], rel=0.2)
    assert 0 <= sp["spec_acceptance"] <= 1 and sp["spec_tokens_per_pass"] >= 1


def test_eval_lookup_gives_the_same_outcomes(cli, coder_pair) -> None:
    plain = cli("eval", coder_pair[1], "--limit", "4", "--json")
    fast = cli("eval", coder_pair[1], "--limit", "4", "--lookup", "--json")
    assert plain.code == 0 and fast.code == 0, plain.err + fast.err
    a, b = json.loads(plain.out), json.loads(fast.out)
    assert {t: r["passed"] for t, r in a["per_task"].items()} == {t: r["passed"] for t, r in b["per_task"].items()}
    assert a["drafted_tokens"] == 0 and b["decode_passes"] <= b["generated_tokens"]


def test_a_draft_pinned_with_a_role_is_served_with_it(tmp_path: Path, coder_pair) -> None:
    home = tmp_path
    env = {**os.environ, "VARIANTLAB_HOME": str(home), "VARIANTLAB_LOCKFILE": str(home / "variantlab.lock")}
    exe = [sys.executable, "-m", "variantlab.cli.app"]
    for path, name in zip(coder_pair, (TARGET, DRAFT)):
        subprocess.run([*exe, "models", "fetch", f"file:{path}", "--name", name], env=env, check=True, capture_output=True)
    added = subprocess.run([*exe, "lock", "add", "chat", TARGET, "--draft", DRAFT, "--fingerprint", "none"], env=env, capture_output=True, text=True)
    assert added.returncode == 0 and f"draft {DRAFT}" in added.stdout, added.stderr
    lock = (home / "variantlab.lock").read_text()
    assert "[roles.chat.draft]" in lock and "1d9614638d18024d" in lock  # the draft's own pin, by sha256
    verify = subprocess.run([*exe, "lock", "verify", "--json"], env=env, capture_output=True, text=True)
    assert verify.returncode == 0 and "chat (draft)" in verify.stdout
    replies = {}
    for options in ((), ("--no-draft",)):
        proc, base = _start_serve(home, "chat", "--parallel", "1", "--ctx", "1024", *options, env=env)
        try:
            body = {"model": "chat", "prompt": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
                    "max_tokens": 48, "temperature": 0}
            replies[options] = httpx.post(f"{base}/v1/completions", json=body, timeout=120).json()["choices"][0]["text"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        log = (home / "serve.log").read_text()
        assert (f"speculative decoding with draft {DRAFT}" in log) == (not options)
    assert replies[()] == replies[("--no-draft",)] and replies[()].strip()
