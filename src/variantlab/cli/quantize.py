"""`variantlab dequantize`: an F16/F32 copy of a model, the reference for `eval --suite kld`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..quantize import dequantize as dequantize_model
from .output import human_bytes, print_json, progress_bars, stdout_console


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
