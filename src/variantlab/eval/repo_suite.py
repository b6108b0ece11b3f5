"""`eval --suite repo:PATH`: fill-in-the-middle on the user's repository, scored and recorded.

The order is the one HumanEval's run keeps: canary first (every hole's original code, spliced back
through the same trimming and scoring, must be an exact match, and must pass the tests selected
for it; holes whose tests fail on the original are dropped and counted), then generation through
a backend (the engine, or a running server), then the completions' tests in the sandbox, then
one record in the results database keyed by the holes' hash (repository revision, seed, kinds,
hole ids), so two models are compared on the same holes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import SandboxError
from ..files import ProgressFn, no_progress
from ..results import Metric
from . import repo as R
from .generation import FimBackend, FimRequest, Generation
from .reports import RepoReport
from .sandbox import REPO_LIMITS, Limits, TestRun, isolation_warning, run_repo_tests, weakest_of

# Most tokens of (prefix, suffix, neighbouring files) in one prompt: about 1.8k tokens a hole,
# which a 2-core CPU reads at a few hundred tokens/s with a 0.5B model (docs/benchmarks.md).
BUDGET = (1024, 256, 512)
NEIGHBOUR_FILES = 8


@dataclass(frozen=True)
class RepoJob:
    """What to cut and how to judge it."""

    path: str
    holes: int = 40
    seed: int = 0
    kinds: tuple[str, ...] = R.KINDS
    execute: bool = True  # run the repository's tests where they exercise a hole
    python: str | None = None  # the interpreter with pytest and the project's dependencies
    limits: Limits = REPO_LIMITS


@dataclass
class Prepared:
    """The holes that survived the canary, their tests, and what was dropped."""

    repo: R.Repository
    holes: list[R.Hole]
    tests: dict[str, list[str]]  # hole id → node ids (empty: no tests exercise it)
    baseline: dict[str, frozenset[str]]  # hole id → node ids that pass on the original code
    dropped: dict[str, int]
    isolation: str = ""
    identity: str = ""  # holes_identity of the cut, before the canary


def prepare(job: RepoJob, progress: ProgressFn = no_progress) -> Prepared:
    """Scan, cut, and run the canary: the holes a model will be scored on."""
    repo = R.scan(job.path)
    holes = R.cut_holes(repo, job.holes, job.seed, job.kinds)
    identity = _identity(repo, holes, job)
    dropped = {"original code is not an exact match": 0, "tests fail on the original code": 0}
    kept = []
    for hole in holes:
        filled = R.trim_completion(hole, hole.middle)
        if R.exact_match(filled, hole.middle) and hole.prefix + filled + hole.suffix == hole.original:
            kept.append(hole)
        else:
            dropped["original code is not an exact match"] += 1
    items = R.test_items(repo) if job.execute and repo.tests else []
    tests = {h.task_id: R.tests_for(h, items) for h in kept}
    baseline, isolation = _baseline(repo, job, tests, progress)
    survivors = []
    for hole in kept:
        if tests[hole.task_id] and hole.task_id not in baseline:
            dropped["tests fail on the original code"] += 1
        else:
            survivors.append(hole)
    return Prepared(repo, survivors, tests, baseline, {k: v for k, v in dropped.items() if v}, isolation, identity)


def holes_identity(job: RepoJob) -> str:
    """What makes two runs comparable, known before anything runs: the repository's revision, the
    seed, the kinds, the holes cut and the prompt budget (the ladder finds earlier runs by it)."""
    repo = R.scan(job.path)
    return _identity(repo, R.cut_holes(repo, job.holes, job.seed, job.kinds), job)


def _identity(repo: R.Repository, holes: Sequence[R.Hole], job: RepoJob) -> str:
    facts = {"revision": repo.revision, "seed": job.seed, "kinds": list(job.kinds), "holes": job.holes,
             "ids": [h.task_id for h in holes], "budget": BUDGET, "version": R.SUITE_VERSION}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _baseline(repo: R.Repository, job: RepoJob, tests: dict[str, list[str]],
              progress: ProgressFn) -> tuple[dict[str, frozenset[str]], str]:
    """The selected tests on the original code, once per distinct selection: the hole ids whose
    tests all pass, with the node ids that passed."""
    selections = sorted({tuple(v) for v in tests.values() if v})
    progress("canary: tests on the original code", 0, len(selections))
    runs = _run_many(repo, job, [({}, list(s)) for s in selections], progress, "canary: tests on the original code")
    if selections and all(not r.finished for r in runs):
        raise SandboxError(f"the repository's tests did not run at all in the sandbox ({runs[0].reason})",
                           hint="is pytest installed for --python? see docs/sandbox.md for what the sandbox allows")
    good = {s: r.passed for s, r in zip(selections, runs) if r.finished and r.exit_code == 0 and not r.failed and r.passed}
    passing = {hid: good[tuple(v)] for hid, v in tests.items() if v and tuple(v) in good}
    return passing, weakest_of([r.isolation for r in runs])


def _run_many(repo: R.Repository, job: RepoJob, work: Sequence[tuple[dict[str, str], list[str]]], progress: ProgressFn,
              phase: str) -> list[TestRun]:
    done = [0]

    def one(item: tuple[dict[str, str], list[str]]) -> TestRun:
        run = run_repo_tests(repo.root, item[0], item[1], job.limits, job.python)
        done[0] += 1
        progress(phase, done[0], len(work))
        return run

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, work))


def requests(prepared: Prepared, repo_level: bool) -> list[FimRequest]:
    """One FIM request per hole; neighbouring files only for a model trained with them."""
    out = []
    for hole in prepared.holes:
        extra = tuple(R.neighbours(prepared.repo, hole, NEIGHBOUR_FILES)) if repo_level else ()
        out.append(FimRequest(hole.prefix, hole.suffix, R.stops_for(hole), extra, prepared.repo.name, hole.path))
    return out


def score(prepared: Prepared, generations: Sequence[Generation], job: RepoJob,
          progress: ProgressFn = no_progress) -> tuple[list[dict[str, Any]], float, str]:
    """Per hole: the trimmed completion, exact match, edit similarity and, where tests exercise it,
    whether they pass with the completion spliced in. Returns the rows, test seconds, isolation."""
    rows, work, index = [], [], []
    for hole, gen in zip(prepared.holes, generations):
        filled = R.trim_completion(hole, gen.text)
        rows.append({"hole": hole.task_id, "kind": hole.kind, "exact_match": R.exact_match(filled, hole.middle),
                     "edit_similarity": round(R.edit_similarity(filled, hole.middle), 4), "passed": None, "tests": None,
                     "finish": gen.finish_reason, "tokens": gen.tokens, "completion": filled})
        node_ids = prepared.tests.get(hole.task_id) or []
        if node_ids and hole.task_id in prepared.baseline:
            work.append(({hole.path: hole.prefix + filled + hole.suffix}, node_ids))
            index.append(len(rows) - 1)
    t0 = time.perf_counter()
    runs = _run_many(prepared.repo, job, work, progress, "run the repository's tests")
    for i, run in zip(index, runs):
        expected = prepared.baseline[str(rows[i]["hole"])]
        rows[i]["passed"] = run.finished and not run.failed and expected <= run.passed
        rows[i]["tests"] = run.reason
    return rows, time.perf_counter() - t0, weakest_of([prepared.isolation, *(r.isolation for r in runs)])


def by_kind(rows: Sequence[dict[str, Any]], kinds: Sequence[str]) -> dict[str, dict[str, float | int]]:
    table = {}
    for kind in [*kinds, "all"]:
        mine = [r for r in rows if kind == "all" or r["kind"] == kind]
        executed = [r for r in mine if r["passed"] is not None]
        table[kind] = {"holes": len(mine),
                       "exact_match": sum(r["exact_match"] for r in mine) / len(mine) if mine else 0.0,
                       "edit_similarity": sum(r["edit_similarity"] for r in mine) / len(mine) if mine else 0.0,
                       "executed": len(executed), "passed": sum(1 for r in executed if r["passed"])}
    return table


def metrics(table: dict[str, dict[str, float | int]]) -> dict[str, Metric]:
    out = {}
    for kind, row in table.items():
        tag = "" if kind == "all" else f".{kind}"
        out[f"exact_match{tag}"] = Metric.of(f"exact_match{tag}", [row["exact_match"]], "fraction")
        out[f"edit_similarity{tag}"] = Metric.of(f"edit_similarity{tag}", [row["edit_similarity"]], "fraction")
        if row["executed"]:
            out[f"tests_passed{tag}"] = Metric.of(f"tests_passed{tag}", [row["passed"] / row["executed"]], "fraction")
    out["holes"] = Metric.of("holes", [table["all"]["holes"]], "holes")
    return out


def run_suite(backend: FimBackend, job: RepoJob, prepared: Prepared, max_tokens: int,
              progress: ProgressFn = no_progress) -> tuple[list[dict[str, Any]], float, float, str]:
    """Generate every hole through ``backend``, then score: rows, generation s, test s, isolation."""
    wanted = requests(prepared, backend.repo_level)
    label = f"generate {backend.label}"
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(label, done[0], len(wanted))

    progress(label, 0, len(wanted))
    batch = backend.infill(wanted, max_tokens, tick)
    rows, test_s, isolation = score(prepared, batch.generations, job, progress)
    return rows, batch.seconds, test_s, isolation


def report(model: str, job: RepoJob, prepared: Prepared, rows: list[dict[str, Any]], times: tuple[float, float],
           isolation: str, repo_level: bool, **extra: Any) -> RepoReport:
    return RepoReport(model=model, repository=str(prepared.repo.root), revision=prepared.repo.revision, seed=job.seed,
                      kinds=list(job.kinds), holes=len(rows), by_kind=by_kind(rows, job.kinds), dropped=prepared.dropped,
                      skipped_files=prepared.repo.skipped, sandbox_isolation=isolation,
                      sandbox_warning=isolation_warning(isolation) if isolation else None, repo_level_context=repo_level,
                      generation_s=times[0], test_s=times[1], suite_version=R.SUITE_VERSION,
                      holes_sha256=prepared.identity, per_hole=rows, **extra)
