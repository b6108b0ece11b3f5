"""Evaluation through a server the user already runs: ``eval openai:URL[#MODEL]``.

The same suites, canaries, sandbox and records as for a model file; only where the text comes
from changes. HumanEval and ``tasks:`` go to ``/v1/chat/completions`` for Instruct models (the
reply begun with the code fence, as the engine does: llama-server and Ollama continue a trailing
assistant message) and to ``/v1/completions`` for Base models. Infilling goes to llama-server's
``/infill`` (which lays out the FIM and repository-level tokens itself, neighbouring files as
``input_extra``) or, on other servers, to ``/v1/completions`` with a ``suffix``. At most
``--parallel`` requests are in flight. The server's identity (its ``/v1/models`` answer and
``/props`` where it has one) is recorded with the result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from .. import __version__
from ..engine import Endpoint, RemoteText, is_llama_server, remote_complete, remote_infill, remote_tokenize, resolve_endpoint, server_identity
from ..errors import UsageError
from ..explain import explain_name
from ..files import ProgressFn, no_progress
from ..hardware import machine_facts
from ..results import ResultsDB, Run
from . import humaneval as he
from . import infill, repo, repo_suite
from .generation import Batch, FimRequest, Generation
from .reports import EvalReport, RepoReport
from .run import EvalPlan, Task, _dataset_sha256, _problems, _record_repo, _score, canary_programs, humaneval_tasks, infill_tasks, score_metrics
from .sandbox import canary_check, run_programs

T = TypeVar("T")
REPO_LEVEL_SPELLINGS = (("<|repo_name|>", "<|file_sep|>"), ("<repo_name>", "<file_sep>"))


class RemoteFim:
    """Fill-in-the-middle through a server: /infill on llama-server, else a completion with a suffix."""

    def __init__(self, endpoint: Endpoint, identity: dict[str, Any], parallel: int, sampling: dict[str, Any]) -> None:
        self.endpoint, self.parallel, self.sampling = endpoint, parallel, sampling
        self.label = endpoint.label
        self.via = "/infill" if is_llama_server(identity) else "/v1/completions (suffix)"
        self.repo_level = self.via == "/infill" and _has_repo_tokens(endpoint)

    def infill(self, requests: Sequence[FimRequest], max_tokens: int, on_done: Callable[[], None]) -> Batch:
        return _in_flight(requests, lambda client, r: self.one(client, r, max_tokens), self.parallel, on_done)

    def one(self, client: httpx.Client, r: FimRequest, max_tokens: int) -> RemoteText:
        if self.via == "/infill":
            body = {"input_prefix": r.prefix, "input_suffix": r.suffix, "n_predict": max_tokens, "stop": list(r.stops),
                    "input_extra": [{"filename": p, "text": t} for p, t in r.extra] if self.repo_level else [],
                    **_llama_sampling(self.sampling)}
            return remote_infill(self.endpoint, client, body)
        body = {"prompt": r.prefix, "suffix": r.suffix, "max_tokens": max_tokens, "stop": list(r.stops), **self.sampling}
        return remote_complete(self.endpoint, client, body)


def _has_repo_tokens(endpoint: Endpoint) -> bool:
    """Whether the served vocabulary has repository-level FIM tokens (each spelling one special token)."""
    with httpx.Client() as client:
        return any(all(len(remote_tokenize(endpoint, client, s)) == 1 for s in pair) for pair in REPO_LEVEL_SPELLINGS)


def _llama_sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    return {"temperature": sampling.get("temperature", 0.0), "seed": sampling.get("seed", 0)}


def _in_flight(items: Sequence[T], call: Callable[[httpx.Client, T], RemoteText], parallel: int,
               on_done: Callable[[], None]) -> Batch:
    """``call`` for every item with at most ``parallel`` requests in flight; results in order."""
    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(max_workers=parallel) as pool:
        def one(item: T) -> Generation:
            got = call(client, item)
            on_done()
            return Generation(got.text, got.finish_reason, got.tokens)

        generations = list(pool.map(one, items))
    return Batch(generations, time.perf_counter() - t0)


def evaluate_remote(ref: str, plan: EvalPlan, *, db: ResultsDB | None = None,
                    progress: ProgressFn = no_progress) -> EvalReport | RepoReport:
    """Score the model a running server serves on ``plan``'s suite, and record it with the server's identity."""
    plan = plan.checked()
    if plan.suite == "kld":
        raise UsageError("the kld suite needs the model files (token distributions)", hint="give the .gguf files, not a server")
    if plan.samples_per_task > 1 and plan.suite_kind == "repo":
        raise UsageError("--samples-per-task applies to humaneval and tasks: suites")
    if plan.suite_kind == "repo":
        repo.scan(plan.repo_job().path)
    endpoint = resolve_endpoint(ref)
    identity = server_identity(endpoint)
    sampling = {"temperature": plan.temperature, "seed": plan.settings.seed}
    run = Run(kind="eval", model=endpoint.label, backend="openai", hardware=machine_facts(), variantlab_version=__version__,
              settings={"temperature": plan.temperature, "max_tokens": plan.max_tokens, "parallel": plan.parallel,
                        "samples_per_task": plan.samples_per_task, "limit": plan.limit, "subset": plan.subset,
                        "timeout_s": plan.limits.timeout_s, "server": identity, "source": plan.suite},
              engine_version=str((identity.get("props") or {}).get("build_info") or "") or None)
    if plan.suite_kind == "repo":
        return _remote_repo(endpoint, identity, plan, sampling, run, db, progress)
    return _remote_programs(endpoint, identity, plan, sampling, run, db, progress)


def _remote_repo(endpoint: Endpoint, identity: dict[str, Any], plan: EvalPlan, sampling: dict[str, Any], run: Run,
                 db: ResultsDB | None, progress: ProgressFn) -> RepoReport:
    job = plan.repo_job()
    backend = RemoteFim(endpoint, identity, plan.parallel, sampling)
    prepared = repo_suite.prepare(job, progress)
    rows, gen_s, test_s, isolation = repo_suite.run_suite(backend, job, prepared, plan.max_tokens, progress)
    run.settings["infill_via"] = backend.via
    report = repo_suite.report(endpoint.label, job, prepared, rows, (gen_s, test_s), isolation, backend.repo_level,
                               backend="openai")
    return _record_repo(run, report, job, db)


def _remote_programs(endpoint: Endpoint, identity: dict[str, Any], plan: EvalPlan, sampling: dict[str, Any], run: Run,
                     db: ResultsDB | None, progress: ProgressFn) -> EvalReport:
    """HumanEval, the infill suite or the user's tasks: generate through the server, judge in the sandbox."""
    problems = _problems(plan)
    canary_check(*canary_programs(plan, problems), plan.limits)
    style, tasks = _remote_tasks(endpoint, identity, plan, problems)
    expanded = [t for t in tasks for _ in range(plan.samples_per_task)]
    label = f"generate {endpoint.label}"
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(label, done[0], len(expanded))

    call = _caller(endpoint, style, plan, sampling, RemoteFim(endpoint, identity, plan.parallel, sampling))
    batch = _in_flight(expanded, call, plan.parallel, tick)
    gens: list[dict[str, Any]] = [{"text": g.text, "finish_reason": g.finish_reason, "tokens": [0] * g.tokens}
                                  for g in batch.generations]
    completions = [(t, t.to_completion(str(g["text"])), g) for t, g in zip(expanded, gens)]
    outcomes = run_programs([t.to_program(c) for t, c, _ in completions], plan.limits)
    scores, per_task = _score(completions, outcomes, len(tasks))
    run.suite, run.dataset_sha256 = plan.suite_kind, _dataset_sha256(plan)
    run.suite_version = infill.SUITE_VERSION if plan.suite == "infill" else he.SUITE_VERSION
    run.settings.update({"prompt_style": style, "sandbox_isolation": scores.sandbox_isolation})
    run.metrics = score_metrics(scores)
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results_db:
        results_db.record(run)
    return EvalReport(**vars(scores), model=endpoint.label, run_id=run.id, suite=plan.suite, suite_version=run.suite_version,
                      dataset_sha256=run.dataset_sha256, prompt_style=style, temperature=plan.temperature,
                      samples_per_task=plan.samples_per_task, generation_s=batch.seconds,
                      generated_tokens=sum(g.tokens for g in batch.generations),
                      cut_at_max_tokens=sum(1 for g in batch.generations if g.finish_reason == "length"), per_task=per_task)


def _remote_tasks(endpoint: Endpoint, identity: dict[str, Any], plan: EvalPlan,
                  problems: Sequence[he.Problem]) -> tuple[str, list[Task]]:
    if plan.suite == "infill":
        return "infill", infill_tasks(plan.limit)
    style = "chat" if served_flavor(endpoint, identity) in ("instruct", "chat") else "base"
    return style, humaneval_tasks(problems, style, lambda user: user)


def served_flavor(endpoint: Endpoint, identity: dict[str, Any]) -> str:
    """Base, Instruct, … of the served model, from the names the server gives it (the model id,
    llama-server's alias and file name); refused when none of them says."""
    props = identity.get("props") or {}
    names = [endpoint.model, str(props.get("model_alias") or ""), str(props.get("model_path") or "")]
    for name in names:
        flavor = explain_name(name.rsplit("/", 1)[-1]).flavor if name else None
        if flavor:
            return flavor
    raise UsageError(f"cannot tell from its names ({', '.join(repr(n) for n in names if n)}) whether the served model "
                     "is an Instruct or a Base model", hint="name it: openai:URL#qwen2.5-coder-7b-instruct, or start llama-server with --alias NAME")


def _caller(endpoint: Endpoint, style: str, plan: EvalPlan, sampling: dict[str, Any],
            fim: RemoteFim) -> Callable[[httpx.Client, Task], RemoteText]:
    def call(client: httpx.Client, task: Task) -> RemoteText:
        if task.fim is not None:
            return fim.one(client, FimRequest(task.fim[0], task.fim[1], task.stops), plan.max_tokens)
        if style == "chat":
            messages = [{"role": "user", "content": task.prompt_text}, {"role": "assistant", "content": he.REPLY_START}]
            got = remote_complete(endpoint, client, {"messages": messages, "max_tokens": plan.max_tokens,
                                                     "stop": list(task.stops), **sampling}, "/chat/completions")
            # llama-server answers with the begun reply included, others with the continuation only
            return replace(got, text=got.text.removeprefix(he.REPLY_START))
        return remote_complete(endpoint, client, {"prompt": task.prompt_text, "max_tokens": plan.max_tokens,
                                                  "stop": list(task.stops), **sampling})

    return call
