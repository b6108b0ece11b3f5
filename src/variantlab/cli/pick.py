"""`variantlab pick --task T`: fastest, balanced and best-quality variants that fit here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..pick import PickResult, pick_measured
from ..pick import pick as pick_variants
from ..text import rate
from .output import gib_option_bytes, human_bytes, print_json, progress_bars, stdout_console


def pick(
    task: Annotated[str, typer.Option("--task", help="complete, infill, python or chat.")] = "chat",
    ctx: Annotated[Optional[int], typer.Option("--ctx", help="Context length in tokens (default: the task's).")] = None,
    mem: Annotated[Optional[float], typer.Option("--mem", help="RAM budget in GiB (default: RAM available now).")] = None,
    measure: Annotated[bool, typer.Option("--measure", help="Bench a twin of each tier's variant whose speed is only predicted (header + random weights, deleted after), then answer.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Three tiers for a task, each with memory, speed, accuracy and the reason, and the rules used."""
    if measure:
        with progress_bars() as progress:
            result = pick_measured(task, ctx, gib_option_bytes(mem), progress=progress)
    else:
        result = pick_variants(task, ctx, gib_option_bytes(mem))
    print_json(result.to_dict()) if json_out else render(result)


def render(r: PickResult) -> None:
    console = stdout_console()
    console.print(f"[bold]{r.task}[/bold] ({r.task_text}), {r.ctx} tokens of context, "
                  f"{human_bytes(r.memory_budget_bytes)} memory: {r.candidates} candidates fit")
    table = Table("tier", "memory", "tokens/s", "HumanEval", "variant")
    table.columns[-1].overflow = "fold"
    for t in r.tiers:
        source = t.tokens_per_s_source
        speed = rate(t.predicted_tokens_per_s) + (" (twin)" if source.startswith("measured on a twin") else
                                                     "" if source.startswith("measured") else " (pred.)")
        acc = "-" if t.accuracy is None else f"{t.accuracy:.1f}" + (" (meas.)" if t.accuracy_source.startswith("measured") else " (publ.)")
        table.add_row(t.tier, human_bytes(t.total_bytes), speed, acc, t.variant)
    console.print(table)
    for t in r.tiers:
        console.print(f"[bold]{t.tier}[/bold]: {t.reason}")
        if t.speculation:
            console.print(f"  speculative decoding measured: {t.speculation}", markup=False)
    if not r.tiers:
        console.print("[red]nothing fits[/red]: lower --ctx or raise --mem")
    for rule in r.rules:
        console.print(f"  · {rule}", style="dim")
