"""`variantlab bench MODEL…`: load time, time to first token, prompt and generation speed, memory."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..bench import BenchPlan, BenchResult, bench_models
from ..cluster import ClusterPlan, cluster_bench
from ..engine import EngineSettings
from ..errors import UsageError
from ..text import rate
from ..twin import measure_twins
from .output import gib_option_bytes, human_bytes, print_json, progress_bars, stdout_console


def bench(
    models: Annotated[list[str], typer.Argument(help="Roles of variantlab.lock, store names or .gguf paths (each runs in its own fresh process), or openai:URL[#MODEL] for a running OpenAI-compatible server.")],
    prompt: Annotated[int, typer.Option("--prompt", help="Prompt tokens per repetition (llama-bench -p).")] = 512,
    gen: Annotated[int, typer.Option("--gen", help="Generated tokens per repetition (llama-bench -n).")] = 128,
    reps: Annotated[int, typer.Option(help="Repetitions; medians and spreads are over these.")] = 5,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: one per physical core).")] = None,
    ctx: Annotated[Optional[int], typer.Option(help="Context size (default: depth + prompt + gen, as llama-bench).")] = None,
    depth: Annotated[int, typer.Option("--depth", help="Tokens already in the KV cache when each test starts (llama-bench -d).")] = 0,
    twin: Annotated[bool, typer.Option("--twin", help="Bench a twin of each MODEL (a catalog variant, hf:OWNER/REPO/FILE.gguf, or a GGUF): its header with random weights, measured before download.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="With --twin: keep the twins in the store (models gc removes them first).")] = False,
    gpu_layers: Annotated[int, typer.Option(help="Layers to offload to a GPU (-1: all that fit).")] = -1,
    flash_attn: Annotated[str, typer.Option(help="Flash attention: auto, on or off.")] = "auto",
    api_model: Annotated[Optional[str], typer.Option(help="For openai:URL models: the server's model id (default: its first).")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="OPENAI_API_KEY", help="For openai:URL models: the bearer key.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash locked models even if unchanged since their last check.")] = False,
    lookup: Annotated[bool, typer.Option("--lookup", help="Also time greedy generation of a code prompt with and without prompt-lookup speculation.")] = False,
    draft: Annotated[Optional[str], typer.Option(help="Also time greedy generation of a code prompt with and without this draft model guessing.")] = None,
    mem: Annotated[Optional[float], typer.Option(help="With --draft: GiB the model and its draft must fit in (default: the RAM available now).")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="Fan the work out over a Ray cluster: auto ($RAY_ADDRESS, else the one started here) or HOST:PORT (needs the extra: pip install 'variantlab[cluster]').")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout: an object for one model, a list for several.")] = False,
) -> None:
    """Measure each model as llama-bench does, plus load time, time to first token and peak memory.

    Exit code 2 if any model failed (it is still recorded as a failed run).
    """
    settings = EngineSettings(n_threads=threads, n_gpu_layers=gpu_layers, flash_attn=flash_attn)
    if ctx is not None:
        settings = replace(settings, n_ctx=ctx)
    if lookup and draft:
        raise UsageError("--lookup and --draft are two ways to guess tokens; one bench times one", hint="drop one of them")
    plan = BenchPlan(n_prompt=prompt, n_gen=gen, reps=reps, settings=settings, explicit_ctx=ctx is not None, n_depth=depth,
                     speculate="lookup" if lookup else "draft" if draft else "", draft=draft, mem_bytes=gib_option_bytes(mem))
    if twin and plan.speculate:
        raise UsageError("a twin has random weights: its guesses are never right, so speculation cannot be timed on it",
                         hint="bench the real file with --lookup/--draft")
    with progress_bars() as progress:
        if cluster is not None:
            if twin:
                raise UsageError("bench --cluster ships real files; twins are measured on the cluster by `ladder --twin --cluster`",
                                 hint="drop --twin, or use ladder MODEL --twin --types ... --cluster")
            results = cluster_bench(models, plan, ClusterPlan(cluster), progress=progress)
        elif twin:
            results = [m.bench for m in measure_twins(models, plan, keep=keep, progress=progress) if m.bench]
        else:
            results = bench_models(models, plan, progress=progress, api_model=api_model, api_key=api_key, verify_hash=verify)
    if json_out:
        print_json(results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results])
    else:
        render(results)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"variantlab: error: {r.model}: {r.error}", file=sys.stderr)
    if failed:
        raise typer.Exit(2)


def _spread(r: BenchResult, key: str, fmt: str | None = None) -> str:
    """A median ± its stdev; without ``fmt``, a speed to three significant figures (a 34B's 0.98
    tokens/s is not "1.0 ±0.0")."""
    value = getattr(r, key)
    if value is None:
        return "-"
    show = rate if fmt is None else (lambda x: format(x, fmt))
    return f"{show(value)} ±{show(r.spread[key]['stdev'] or 0)}"


def render(results: list[BenchResult]) -> None:
    ok = [r for r in results if r.ok and r.backend != "openai"]
    served = [r for r in results if r.backend == "openai"]
    if served:
        table = Table("endpoint", "TTFT s", "gen t/s", "prompt t/s (estimate)", title="bench of OpenAI-compatible servers (median ± stdev)")
        for r in served:
            table.add_row(r.model, _spread(r, "ttft_s", ".3f"), _spread(r, "gen_tokens_per_s"), _spread(r, "prompt_tokens_per_s"))
        stdout_console().print(table)
    if not ok:
        return
    first = ok[0]
    at = f"@d{first.n_depth}" if first.n_depth else ""
    table = Table("model", "type", "load s", "TTFT s", f"pp{first.n_prompt}{at} t/s", f"tg{first.n_gen}{at} t/s",
                  "ceiling t/s", "of bandwidth", "peak RSS",
                  title=f"bench: {first.reps} reps, {first.threads} threads, ctx {first.ctx} (median ± stdev)")
    for r in ok:
        table.add_row(f"[italic]{r.model}[/italic]" if r.twin_of else r.model + (f" on {r.node}" if r.node else ""), r.file_type or "?", _spread(r, "load_s", ".2f"), _spread(r, "ttft_s", ".3f"),
                      _spread(r, "prompt_tokens_per_s"), _spread(r, "gen_tokens_per_s"),
                      rate(r.ceiling_tokens_per_s),
                      f"{r.bandwidth_fraction:.0%}" if r.bandwidth_fraction is not None else "-",
                      human_bytes(r.peak_rss_bytes))
    console = stdout_console()
    console.print(table)
    if any(r.twin_of for r in ok):
        console.print("twin: the variant's header and tensor table with random weights (speed and memory only)")
    if any(r.depth_fill == "written" for r in ok):
        console.print(f"@d: the twin's {first.n_depth} cells of depth were written as cache state, not decoded "
                      "(what they hold does not change the speed)")
    for r in ok:
        if r.speculation:
            sp = r.speculation
            how = f"draft {sp['draft_model']}" if sp["method"] == "draft" else "prompt lookup"
            console.print(f"speculation ({how}), code prompt, greedy: {sp['code_gen_tokens_per_s']:.1f} → "
                          f"{sp['spec_gen_tokens_per_s']:.1f} t/s (×{sp['spec_speedup']:.2f}); {sp['spec_acceptance']:.0%} of "
                          f"guesses kept, {sp['spec_tokens_per_pass']:.2f} tokens per target pass; outputs "
                          f"{'identical' if sp['spec_identical'] == 1 else 'DIFFERENT'}", markup=False)
    console.print(f"ceiling: measured memory bandwidth {(first.bandwidth_bytes_per_s or 0) / 1e9:.1f} GB/s ÷ weight bytes read per token")
