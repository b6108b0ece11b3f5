"""`lock check`'s comparison, paired test and thresholds, against hand-computed cases (no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from variantlab import consistency
from variantlab.consistency import Thresholds, compare, mcnemar_exact, parse_fingerprint, role_kind
from variantlab.errors import LockError
from variantlab.lock import read_lock

ENGINE = "llama-cpp-python 0.3.36 | AVX2 = 1"


@pytest.mark.parametrize(("only_before", "only_now", "p"), [
    (0, 0, 1.0),          # no discordant pair
    (6, 0, 2 / 64),       # all six one way: 2 · (1/2)^6
    (5, 1, 2 * 7 / 64),   # 2 · (C(6,0) + C(6,1)) / 2^6
    (3, 3, 1.0),          # 2 · 42/64 > 1, capped
    (10, 2, 2 * 79 / 4096),  # 2 · (1 + 12 + 66) / 2^12
    (1, 10, 2 * 12 / 2048),  # symmetric in its arguments
])
def test_mcnemar_exact_matches_hand_computed_values(only_before: int, only_now: int, p: float) -> None:
    assert mcnemar_exact(only_before, only_now) == pytest.approx(p)


def _fingerprint(tokens: list[str], passed: list[str] | None = None, speed: float = 50.0, low: float = 48.0,
                 engine: str = ENGINE, sha: str = "a" * 64) -> dict[str, Any]:
    tasks = [f"HumanEval/{i}" for i in range(20)]
    outputs = [{"id": f"chat-{i}", "prompt_sha256": f"p{i}", "sha256": str(hash(t)), "tokens": t} for i, t in enumerate(tokens, start=1)]
    return {"set": "chat", "version": "fingerprint-1", "engine": engine, "sha256": sha, "outputs": outputs,
            "quick": {"suite": "humaneval quick", "run": 1, "pass_at_1": len(passed or tasks[:13]) / 20, "tasks": tasks,
                      "passed": tasks[:13] if passed is None else passed},
            "speed": {"run": 2, "gen_tokens_per_s": speed, "min": low, "max": speed + 1, "reps": 3, "n_gen": 64}}


def test_identical_fingerprints_pass() -> None:
    fp = _fingerprint(["1 2 3", "4 5 6"])
    verdict = compare("chat", "m", "its fingerprint", fp, fp, Thresholds())
    assert verdict.ok and verdict.changed == [] and verdict.cause == "nothing" and verdict.p_value == 1.0


def test_a_changed_output_is_reported_at_its_first_differing_token_and_blamed_on_the_engine() -> None:
    before = _fingerprint(["1 2 3 4", "4 5 6"], engine="llama-cpp-python 0.3.30 | AVX2 = 1")
    now = _fingerprint(["1 2 9 4", "4 5 6"])
    verdict = compare("chat", "m", "its fingerprint", before, now, Thresholds())
    assert [(c.id, c.at_token, c.before, c.now) for c in verdict.changed] == [("chat-1", 2, 3, 9)]
    assert verdict.cause == "engine" and not verdict.ok and "1 of 2 prompts" in verdict.regressions[0]
    assert compare("chat", "m", "x", before, now, Thresholds(max_changed_prompts=1)).ok  # the team's threshold allows one


def test_a_shorter_output_differs_where_it_ends_and_another_file_is_a_file_change() -> None:
    verdict = compare("chat", "m", "x", _fingerprint(["1 2 3"]), _fingerprint(["1 2"], sha="b" * 64), Thresholds())
    assert verdict.changed[0].at_token == 2 and verdict.changed[0].now is None and verdict.cause == "file"


def test_pass_at_1_regresses_only_when_the_paired_test_says_so() -> None:
    tasks = [f"HumanEval/{i}" for i in range(20)]
    before = _fingerprint(["1"], passed=tasks[:13])
    fell = compare("chat", "m", "x", before, _fingerprint(["1"], passed=tasks[:7]), Thresholds())  # 6 lost, none won
    assert fell.passed_only_before == sorted(tasks[7:13]) and fell.p_value == pytest.approx(2 / 64)
    assert any("McNemar exact p = 0.0312" in r for r in fell.regressions)
    noisy = compare("chat", "m", "x", before, _fingerprint(["1"], passed=tasks[:8] + tasks[13:14]), Thresholds())  # 5 lost, 1 won
    assert noisy.p_value == pytest.approx(14 / 64) and noisy.ok
    better = compare("chat", "m", "x", before, _fingerprint(["1"], passed=tasks[:19]), Thresholds())
    assert better.ok  # six more passes is not a regression


def test_speed_is_compared_with_the_low_end_of_the_recorded_spread() -> None:
    before = _fingerprint(["1"], speed=50.0, low=40.0)
    assert compare("chat", "m", "x", before, _fingerprint(["1"], speed=32.5), Thresholds()).ok  # floor 40 · 0.8 = 32
    slow = compare("chat", "m", "x", before, _fingerprint(["1"], speed=31.0), Thresholds())
    assert slow.speed_floor == pytest.approx(32.0) and "31.0 tokens/s is below 32.0" in slow.regressions[0]


def test_kld_above_the_threshold_is_a_regression() -> None:
    fp = _fingerprint(["1"])
    assert not compare("chat", "m", "revision 1", fp, fp, Thresholds(), kld=0.2).ok
    assert compare("chat", "m", "revision 1", fp, fp, Thresholds(), kld=0.01).ok


def test_thresholds_come_from_the_lockfile_and_bad_ones_are_refused(tmp_path: Path) -> None:
    lock = tmp_path / "variantlab.lock"
    lock.write_text('version = 1\nrevision = 0\n[check]\nalpha = 0.01\nmax_speed_drop = 0.3\n[roles]\n')
    state = read_lock(lock)
    assert Thresholds.from_table(state.check, str(lock)) == Thresholds(alpha=0.01, max_speed_drop=0.3)
    for bad, named in (({"alpha": 2}, "alpha = 2"), ({"max_changed": 1}, "no threshold 'max_changed'"),
                       ({"max_changed_prompts": -1}, "max_changed_prompts = -1"), ({"max_kld": "high"}, "max_kld = 'high'")):
        with pytest.raises(LockError, match=named):
            Thresholds.from_table(bad, str(lock))


def test_a_damaged_fingerprint_does_not_parse() -> None:
    good = _fingerprint(["1 2"])
    assert parse_fingerprint(good, "here") is good
    for damage in ({"outputs": [{"id": "x", "tokens": "1 two"}]}, {"set": "poetry"}, {"speed": {"gen_tokens_per_s": "fast"}}):
        with pytest.raises(LockError, match="does not parse"):
            parse_fingerprint({**good, **damage}, "the fingerprint of role 'chat'")


def test_role_names_choose_the_prompt_set() -> None:
    assert [role_kind(r) for r in ("chat", "infill", "editor-fim", "complete", "code_completion", "review")] == [
        "chat", "infill", "infill", "complete", "complete", "chat"]


def test_reports_for_ci_name_each_role_and_its_regressions() -> None:
    before, now = _fingerprint(["1 2", "3"]), _fingerprint(["1 5", "3"])
    report = consistency.CheckReport("variantlab.lock", Thresholds(), [compare("chat", "m", "its fingerprint", before, now, Thresholds()),
                                                                     compare("complete", "n", "its fingerprint", before, before, Thresholds())])
    suite = ElementTree.fromstring(consistency.to_junit(report).split("?>", 1)[1])
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    [failure] = suite.iter("failure")
    assert "1 of 2 prompts answer differently" in (failure.get("message") or "")
    markdown = consistency.to_markdown(report)
    assert "| chat | m | its fingerprint | **regression** | 1 of 2 |" in markdown and "| complete | n | its fingerprint | pass | 0 of 2 |" in markdown
