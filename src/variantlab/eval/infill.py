"""The fill-in-the-middle suite: holes cut deterministically out of HumanEval's canonical solutions.

For each problem two tasks: ``line`` masks one line of the solution (the middle non-blank one)
and ``block`` masks a run of up to four lines starting a third of the way in. The model sees
the prefix (problem prompt plus the lines before) and the suffix (the lines after) through its
FIM tokens, in prefix-suffix-middle order, as llama-server's /infill builds it; the infill is
scored by running the tests on prefix + infill + suffix in the sandbox. Holes whose code the
tests never reach are listed in ``knowledge/data/infill.toml`` and left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..knowledge import load_data
from ..modelfile import ModelFile
from . import humaneval as he
from .sandbox import Program

LINE_STOPS = ["\n"]


def _spec() -> dict:
    return load_data("infill.toml")


SUITE_VERSION = "infill-2"  # equal to infill.toml's version (checked by the tests)


@dataclass(frozen=True)
class Hole:
    """One infilling task: the text before and after the hole, and what was there."""

    task_id: str
    problem: he.Problem
    kind: str  # "line" or "block"
    prefix: str
    suffix: str
    middle: str

    def program(self, infill: str) -> Program:
        if infill and not infill.endswith("\n"):
            infill += "\n"
        p = self.problem
        return Program(self.prefix + infill + self.suffix, p.test, p.entry_point, context=p.prompt)


def _body_lines(solution: str) -> list[int]:
    lines = solution.splitlines(keepends=True)
    return [i for i, ln in enumerate(lines) if ln.strip() and not ln.strip().startswith("#")]


def holes(limit: int | None = None, *, testable_only: bool = True) -> list[Hole]:
    """Two holes per problem (line, block), for the first ``limit`` problems, always the same;
    the holes the tests cannot judge (infill.toml) are left out unless ``testable_only`` is False."""
    spec = _spec()
    skip = set(spec["untestable"]) if testable_only else set()
    found = []
    for p in he.select(limit):
        lines = p.canonical_solution.splitlines(keepends=True)
        body = _body_lines(p.canonical_solution)
        if not body:
            continue
        line = body[len(body) // 2]
        found.append(_cut(p, "line", lines, line, line + 1))
        start = body[len(body) // 3]
        end = min(len(lines), start + spec["block_max_lines"], max(body) + 1)
        found.append(_cut(p, "block", lines, start, end))
    return [h for h in found if h.task_id not in skip]


def _cut(p: he.Problem, kind: str, lines: list[str], start: int, end: int) -> Hole:
    return Hole(f"{p.task_id}/{kind}", p, kind, p.prompt + "".join(lines[:start]), "".join(lines[end:]),
                "".join(lines[start:end]))


def wrong_infill(hole: Hole) -> str:
    """A known-wrong infill for the canary: the hole replaced by a line that raises."""
    first = hole.middle.splitlines()[0]
    indent = first[: len(first) - len(first.lstrip())]
    return f"{indent}raise RuntimeError('variantlab canary: wrong infill')\n"


def canary_programs(limit: int | None = None) -> tuple[list[Program], list[Program]]:
    every = holes(limit)
    return [h.program(h.middle) for h in every], [h.program(wrong_infill(h)) for h in every]


def require_fim(label: str, info: ModelFile) -> None:
    """Refuse a model whose vocabulary has no fill-in-the-middle tokens."""
    if len(info.fim_tokens) < 3:
        raise UsageError(f"{label} has no fill-in-the-middle tokens in its vocabulary, so it cannot infill",
                         hint="use a Base or Coder model with FIM (Qwen2.5-Coder, StarCoder, CodeLlama 7B/13B, DeepSeek-Coder)")
