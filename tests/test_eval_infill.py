"""The fill-in-the-middle suite: deterministic holes, each one that the tests can judge."""

from __future__ import annotations

import pytest

from tests.tiny_gguf import write_tiny_model
from variantlab.errors import UsageError
from variantlab.eval import infill
from variantlab.eval.sandbox import run_programs
from variantlab.knowledge import load_data
from variantlab.modelfile import read_model_file


def test_holes_are_the_same_every_time_and_put_back_give_the_solution() -> None:
    first, again = infill.holes(), infill.holes()
    assert [(h.task_id, h.prefix, h.middle, h.suffix) for h in first] == [(h.task_id, h.prefix, h.middle, h.suffix) for h in again]
    assert len(first) == 2 * 164 - len(load_data("infill.toml")["untestable"])
    for h in first:
        assert h.prefix + h.middle + h.suffix == h.problem.prompt + h.problem.canonical_solution
        assert h.middle.strip()
        assert h.kind == "line" and h.middle.count("\n") == 1 or h.kind == "block" and 1 <= h.middle.count("\n") <= 4


def test_untestable_list_is_exactly_the_holes_the_tests_cannot_judge() -> None:
    every = infill.holes(testable_only=False)
    outcomes = run_programs([h.program(infill.wrong_infill(h)) for h in every])
    cannot_judge = {h.task_id for h, o in zip(every, outcomes) if o.passed}
    assert cannot_judge == set(load_data("infill.toml")["untestable"])
    assert infill.SUITE_VERSION == load_data("infill.toml")["version"]


def test_a_model_without_fim_tokens_is_refused_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_tiny_model(tmp_path / "tiny.gguf")
    with pytest.raises(UsageError, match="no fill-in-the-middle tokens"):
        infill.require_fim("tiny", read_model_file(path))
