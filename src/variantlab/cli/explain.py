"""`variantlab explain NAME`: what a variant name means, and whether the file agrees."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..inspection import explain_variant
from .output import print_json, stdout_console

# (row label, VariantName field, key of its explanation)
PARTS = [("family", "family", "family"), ("size", "size_b", "size"), ("flavour", "flavor", "flavor"),
         ("quant", "quant", "bits_per_weight"), ("level", "level_bits", "level"), ("scheme", "scheme", "scheme"),
         ("mix", "mix", "mix"), ("format", "format", "format")]


def explain(
    name: Annotated[str, typer.Argument(help="A file name, a path, an Ollama tag (codellama:13b-instruct-q4_K_M) or a store name.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Decode a variant name part by part; given a file, check the name against its header (exit 1 on disagreement)."""
    claims, disagreements = explain_variant(name)
    if json_out:
        data = claims.to_dict()
        data["checked_against_file"] = disagreements is not None
        data["disagreements"] = [d.__dict__ for d in disagreements or []]
        print_json(data)
    else:
        console = stdout_console()
        table = Table("part", "value", "meaning", title=claims.name)
        values = claims.to_dict()
        for label, key, why in PARTS:
            value = values[key]
            meaning = claims.explanations.get(why, "the name does not say")
            if value is None and key == "mix" and claims.quant:
                shown, meaning = "none", f"{claims.quant} comes in one size only"
            else:
                shown = "unknown" if value is None else (f"{value:g}B" if key == "size_b" else str(value))
            table.add_row(label, shown, meaning)
        console.print(table)
        if claims.flavor_from not in (None, "name", "fine-tune name"):
            console.print(f"flavour: {claims.flavor_from}")
        if claims.unknown_parts:
            console.print(f"[yellow]parts not recognised (not guessed): {', '.join(claims.unknown_parts)}[/yellow]")
        for d in disagreements or []:
            console.print(f"[red]disagreement on {d.part}: the name says {d.name_says}, the file says {d.file_says}[/red]")
        if disagreements == []:
            console.print("[green]the file's header agrees with the name[/green]")
    if disagreements:
        raise typer.Exit(1)
