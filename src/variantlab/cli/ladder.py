"""`variantlab ladder` (the variation table, measured) and `variantlab report` (it as an HTML page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..cluster import ClusterPlan, cluster_ladder, cluster_twin_ladder
from ..ladder import LadderPlan, LadderResult, latest_ladder, run_ladder, run_twin_ladder
from ..report import TABLE_HEADERS, TWIN_TABLE_HEADERS, table_rows, twin_table_rows, write_report
from ..results import ResultsDB
from .output import gib_option_bytes, print_json, progress_bars, split_list, stdout_console


def ladder(
    model: Annotated[str, typer.Argument(help="Store name or .gguf path: an F16/F32 model, or a quantized one (dequantized to F16 first; every row says so). With --twin: a catalog model (codellama:13b-instruct).")],
    types: Annotated[Optional[str], typer.Option(help="Comma-separated rungs (default: the suite's: quick Q2_K,Q3_K_S,Q4_K_M,Q5_K_M,Q6_K,Q8_0; full all ten K-quant rungs).")] = None,
    task: Annotated[str, typer.Option(help="chat, complete, python (HumanEval) or infill (the infill suite).")] = "chat",
    ctx: Annotated[int, typer.Option(help="Context length the memory column and the fit verdict are for.")] = 4096,
    suite: Annotated[str, typer.Option(help="quick (20 stratified HumanEval problems, 3 bench reps, 8 KLD chunks), full (164, 5, 20), or repo:PATH (with --task infill or complete: exact match on 40 holes of your repository, measured as quick).")] = "quick",
    mem: Annotated[Optional[float], typer.Option(help="Memory budget in GiB (default: RAM available now).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: one per physical core).")] = None,
    reps: Annotated[Optional[int], typer.Option(help="Bench repetitions per rung (default: the suite's, 3 quick, 5 full); fewer is faster, with a narrower view of the spread.")] = None,
    twin: Annotated[bool, typer.Option("--twin", help="Measure every rung of a catalog model on twins (its tensors, random weights), one on disk at a time: memory, load, TTFT, speed at depth 0 and at --ctx; no accuracy.")] = False,
    cluster: Annotated[Optional[str], typer.Option(help="Fan the work out over a Ray cluster: auto ($RAY_ADDRESS, else the one started here) or HOST:PORT (needs the extra: pip install 'variantlab[cluster]').")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The whole table, picks and rules as JSON on stdout.")] = False,
) -> None:
    """Quantize MODEL to each rung, measure each (fit, bench, accuracy, KLD), print the variation table and the picks.

    Everything goes to the results database; run it again after an interruption and the
    finished measurements are reused. `variantlab report` turns the table into an HTML page.
    """
    plan = LadderPlan(model, tuple(split_list(types)) if types else (), task, ctx, suite, gib_option_bytes(mem), threads, reps)
    with progress_bars(steps="ladder") as progress:
        if cluster is not None:
            where = ClusterPlan(cluster)
            result = cluster_twin_ladder(plan, where, progress=progress) if twin else cluster_ladder(plan, where, progress=progress)
        else:
            result = run_twin_ladder(plan, progress=progress) if twin else run_ladder(plan, progress=progress)
    if json_out:
        print_json(result.to_dict())
    else:
        render(result)


def render(result: LadderResult) -> None:
    if result.twin:
        render_twins(result)
        return
    table = Table(*TABLE_HEADERS, title=f"variation table: {result.source} — task {result.task}, "
                                        f"ctx {result.ctx}, suite {result.suite} (ladder run {result.run_id})")
    for row in table_rows(result):
        table.add_row(*row)
    console = stdout_console(min_width=140)
    console.print(table)
    console.print(f"rungs: {'; '.join(sorted({r.lineage for r in result.rows}))}; KLD against {result.reference}")
    _nodes(console, result)
    for tier, pick in result.picks.items():
        console.print(f"[bold]{tier}[/bold]: " + (f"{pick.file_type} ({pick.model}): {pick.reason}" if pick else "nothing fits"))
    console.print("rules:")
    for rule in result.rules:
        console.print(f"  - {rule}")


def render_twins(result: LadderResult) -> None:
    """A twin ladder: measured memory and speed per rung, accuracy as published (labelled), the picks and the guide's."""
    table = Table(*TWIN_TABLE_HEADERS, title=f"variation table measured on twins: {result.source} — ctx {result.ctx} "
                                             f"(ladder run {result.run_id})")
    for row in twin_table_rows(result):
        table.add_row(*row, style="italic")
    console = stdout_console(min_width=140)
    console.print(table)
    notes = sorted({r.accuracy_note for r in result.rows if r.accuracy_note})
    console.print("twins: each rung's header and tensor table with random weights; accuracy: " + "; ".join(notes))
    _nodes(console, result)
    for tier, pick in result.picks.items():
        console.print(f"[bold]{tier}[/bold]: " + (f"{pick.file_type}: {pick.reason}" if pick else "nothing fits"))
    for entry in result.guide:
        console.print(f"guide's [bold]{entry['level']}[/bold]: {entry['file']} ({entry['size_gb']} GB)")
    console.print("rules:")
    for rule in result.rules:
        console.print(f"  - {rule}")


def _nodes(console: Console, result: LadderResult) -> None:
    """A cluster ladder: which node (and kind of machine) measured each rung."""
    if any(r.node for r in result.rows):
        console.print("measured on: " + "; ".join(f"{r.file_type} {r.node} [{r.machine}]" for r in result.rows if r.node),
                      markup=False)


def report(
    html_file: Annotated[Path, typer.Option("--html", help="Where to write the page; the chart goes beside it as .png.")] = Path("variantlab-report.html"),
    run: Annotated[Optional[int], typer.Option(help="The ladder run to report (default: the newest).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The paths written, as JSON.")] = False,
) -> None:
    """Write the newest ladder's variation table, Pareto chart, picks and machine as a self-contained HTML page."""
    with ResultsDB() as db:
        result = latest_ladder(db, run)
    page, png = write_report(result, html_file)
    if json_out:
        print_json({"html": str(page), "png": str(png), "ladder_run": result.run_id})
    else:
        stdout_console().print(f"report: {page} (chart: {png}), ladder run {result.run_id}")
