"""`variantlab catalog`: the code model families variantlab knows before downloading."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ..knowledge.catalog import models
from .output import print_json, stdout_console


def catalog(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every catalog model: size, flavour, FIM, context, licence, published HumanEval, where GGUFs are."""
    found = models()
    if json_out:
        print_json([{**asdict(m), "tag": m.tag, "fim_tokens": m.fim_tokens, "prompt_template": m.prompt_template} for m in found])
        return
    table = Table("model", "layers", "context", "FIM", "HumanEval", "licence", "GGUF repo")
    for m in found:
        table.add_row(m.tag, str(m.n_layers), f"{m.trained_ctx}/{m.max_ctx}", "yes" if m.fim else "no",
                      "-" if m.humaneval is None else f"{m.humaneval:.1f}", m.license, m.gguf_repo)
    stdout_console().print(table)
