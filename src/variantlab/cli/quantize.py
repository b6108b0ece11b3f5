"""`variantlab quantize` and `variantlab dequantize`: make variants of a model, with their lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..quantize import QuantizePlan, plan_quantize, run_quantize
from ..quantize import dequantize as dequantize_model
from .output import human_bytes, print_json, progress_bars, split_list, stdout_console


def quantize(
    model: Annotated[str, typer.Argument(help="Store name or .gguf path of the source (F16/F32, or quantized with --allow-requantize).")],
    types: Annotated[str, typer.Option("--types", help="Comma-separated llama.cpp file types, e.g. Q2_K,Q4_K_M,Q8_0.")],
    imatrix: Annotated[Optional[Path], typer.Option(help="Importance matrix (.gguf from llama-imatrix); recorded in each output's metadata and lineage.")] = None,
    allow_requantize: Annotated[bool, typer.Option("--allow-requantize", help="Allow a quantized source; every result says so.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also copy each output into this folder.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Quantizer threads (default: one per physical core).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan (types, expected sizes, disk) and stop.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The plan and the stored outputs as JSON on stdout.")] = False,
) -> None:
    """Quantize MODEL to each type with llama.cpp's own quantizer and store each output with its lineage.

    The plan is shown first; an output made earlier from the same source is reused, not redone.
    """
    plan = plan_quantize(model, split_list(types), allow_requantize=allow_requantize, imatrix=imatrix,
                         out_dir=out, threads=threads)
    if not json_out:
        render_plan(plan)
    if dry_run:
        if json_out:
            print_json({"plan": plan.to_dict(), "outputs": []})
        return
    with progress_bars() as progress:
        made = run_quantize(plan, progress=progress)
    if json_out:
        print_json({"plan": plan.to_dict(), "outputs": [{**m.manifest.to_dict(), "quantize_s": m.quantize_s} for m in made]})
        return
    console = stdout_console()
    for m in made:
        how = "reused" if m.quantize_s is None else f"made in {m.quantize_s:.1f} s, stored"
        console.print(f"{how} {m.manifest.name} ({human_bytes(m.manifest.size)}, sha256 {m.manifest.sha256[:12]}…)")


def render_plan(plan: QuantizePlan) -> None:
    table = Table("type", "store name", "expected size", "status",
                  title=f"quantize {plan.source.label} ({plan.source_type}) with {plan.threads} threads")
    for rung in plan.rungs:
        table.add_row(rung.file_type, rung.name, human_bytes(rung.expected_bytes),
                      f"made before: {rung.existing.sha256[:12]}…" if rung.existing else "to make")
    console = stdout_console()
    console.print(table)
    console.print(f"disk: about {human_bytes(plan.disk_needed)} needed, {human_bytes(plan.disk_free)} free; "
                  f"lineage: {plan.lineage['note']}")


def dequantize(
    model: Annotated[str, typer.Argument(help="Store name or .gguf path.")],
    to: Annotated[str, typer.Option(help="f16 or f32.")] = "f16",
    name: Annotated[Optional[str], typer.Option(help="Store name for the result (default: FAMILY:f16-from-TYPE).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The new manifest as JSON on stdout.")] = False,
) -> None:
    """Write MODEL back as floats (gguf's dequantization) and store it, marked as derived from its type.

    Use it as the reference for KL-divergence when no original F16 is at hand: it measures each
    variant's loss relative to this file, not to the original weights.
    """
    with progress_bars() as progress:
        manifest = dequantize_model(model, to, name=name, progress=progress)
    if json_out:
        print_json(manifest.to_dict())
        return
    stdout_console().print(f"stored {manifest.name} ({human_bytes(manifest.size)}, sha256 {manifest.sha256[:12]}…)\n"
                           f"source: {manifest.source}")
