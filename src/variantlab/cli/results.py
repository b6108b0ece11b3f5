"""`variantlab results …`: what was measured, and whether two results can be compared."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..results import ResultsDB
from ..results import compare as compare_runs
from .output import print_json, stdout_console

app = typer.Typer(help="List, show and compare recorded results.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _headline(metrics: dict[str, Any]) -> str:
    keys = ("gen_tokens_per_s", "prompt_tokens_per_s", "pass_at_1", "mean_kld")
    return ", ".join(f"{k} {metrics[k].median:.3g}" for k in keys if k in metrics and metrics[k].median is not None)


@app.command("list")
def list_results(
    kind: Annotated[Optional[str], typer.Option(help="Only runs of this kind (bench, eval).")] = None,
    limit: Annotated[int, typer.Option(help="How many of the newest runs.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The newest recorded runs."""
    with ResultsDB() as db:
        runs = db.runs(kind=kind, limit=limit)
    if json_out:
        print_json([r.to_dict() for r in runs])
        return
    table = Table("id", "when", "kind", "model", "type", "status", "headline", "comparable key")
    for r in runs:
        table.add_row(str(r.id), r.created_at or "", r.kind, r.model, r.file_type or "?", r.status,
                      _headline(r.metrics) if r.status == "ok" else (r.error or "")[:60], r.comparable_key())
    stdout_console().print(table)


@app.command()
def show(run_id: Annotated[int, typer.Argument(help="A run id from `results list`.")], json_out: JsonOpt = False) -> None:
    """One run with every metric and the settings and hardware it was measured with."""
    with ResultsDB() as db:
        run = db.get(run_id)
    if json_out:
        print_json(run.to_dict())
        return
    console = stdout_console()
    console.print(f"run {run.id}: {run.kind} of {run.model} ({run.file_type}) on {run.created_at}, {run.status}")
    if run.error:
        console.print(f"[red]{run.error}[/red]")
    table = Table("metric", "median", "min", "max", "stdev", "n", "unit")
    for m in run.metrics.values():
        table.add_row(m.name, *(f"{v:.4g}" if v is not None else "-" for v in (m.median, m.min, m.max, m.stdev)), str(m.n), m.unit)
    console.print(table)
    console.print(f"settings: {run.settings}\nhardware: {run.hardware}\nengine: {run.engine_version}")


@app.command()
def compare(a: Annotated[int, typer.Argument(help="First run id.")], b: Annotated[int, typer.Argument(help="Second run id.")],
            json_out: JsonOpt = False) -> None:
    """Two runs side by side, with the ratio b/a of each metric and what differs between them."""
    with ResultsDB() as db:
        c = compare_runs(db.get(a), db.get(b))
    if json_out:
        print_json({"a": a, "b": b, "comparable": c.comparable, "differences": c.differences, "ratios": c.ratios})
        return
    console = stdout_console()
    table = Table("metric", f"run {a}", f"run {b}", "b / a")
    for name, ratio in c.ratios.items():
        ma, mb = c.a.metrics[name].median, c.b.metrics[name].median
        table.add_row(name, f"{ma:.4g}" if ma is not None else "-", f"{mb:.4g}" if mb is not None else "-",
                      f"{ratio:.3f}" if ratio is not None else "-")
    console.print(table)
    for key, (va, vb) in c.differences.items():
        console.print(f"differs: {key}: {va} → {vb}")
    console.print("[green]comparable[/green]" if c.comparable else "[yellow]not comparable: settings, engine or hardware differ[/yellow]")
