"""`variantlab inspect MODEL`: what a GGUF file is, from its header and tensor table."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ..inspection import inspect_model
from .output import human_bytes, print_json, progress_bars, stdout_console


def inspect(
    model: Annotated[str, typer.Argument(help="A store name or a path to a .gguf file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Architecture, size, quantization mix, context, chat template and FIM tokens of a model."""
    with progress_bars() as progress:
        report = inspect_model(model, progress=progress)
    if json_out:
        print_json(report)
    else:
        render(report)


def render(r: dict[str, Any]) -> None:
    console = stdout_console()
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    rows = [
        ("model", r["model"]),
        ("name in file", r["name"] or "-"),
        ("architecture", r["architecture"]),
        ("parameters", f"{r['parameters']:,} ({r['parameters'] / 1e9:.2f} B)"),
        ("file type", f"{r['file_type'] or 'not stated'} (id {r['file_type_id']})"),
        ("bits per weight", f"{r['bits_per_weight']:.2f} (tensor bytes × 8 ÷ parameters)"),
        ("file size", f"{human_bytes(r['file_size'])} ({r['file_size']:,} bytes)"),
        ("layers", r["n_layers"]),
        ("attention heads / KV heads", f"{r['n_heads']} / {r['n_kv_heads']}"),
        ("embedding size", r["embedding_length"]),
        ("native context", r["context_length"]),
        ("experts", f"{r['experts']['used']} of {r['experts']['count']} per token" if r.get("experts") else "dense (no experts)"),
        ("cache layers", ", ".join(f"{n} {k}" for k, n in (r.get("cache_layers") or {}).items())
         + (f" (window {r['sliding_window']})" if r.get("sliding_window") else "")),
        ("vocabulary", r["vocab_size"]),
        ("tokenizer", r["tokenizer_model"] or "-"),
        ("chat template", "embedded" if r["has_chat_template"] else "none"),
        ("fill-in-the-middle", " ".join(r["fim_tokens"].values()) if r["fim_tokens"] else "no FIM tokens"),
        ("licence", r["license"] or "not stated"),
        ("sha256", r["sha256"]),
    ]
    for key, value in rows:
        facts.add_row(key, str(value) if value is not None else "-")
    console.print(facts)
    mix = Table("tensor type", "tensors", "parameters", "bytes", "share of bytes", title="tensor-type mix")
    for t in r["tensor_types"]:
        mix.add_row(t["type"], str(t["n_tensors"]), f"{t['n_elements']:,}", human_bytes(t["bytes"]), f"{t['share_of_bytes']:.1%}")
    console.print(mix)
