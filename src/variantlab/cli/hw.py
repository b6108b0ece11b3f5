"""`variantlab hw`: the machine a model has to fit on, and how fast its memory reads."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ..hardware import profile
from .output import human_bytes, print_json, stdout_console


def hw(
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure the memory bandwidth again instead of using the cached figure.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """RAM, CPU, SIMD features, GPUs, free disk in the store and measured memory bandwidth."""
    facts = profile(refresh_bandwidth=refresh)
    if json_out:
        print_json(facts)
    else:
        render(facts)


def render(f: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    gpus = "; ".join(
        f"{g['name']}: {human_bytes(g['total_bytes'])} total, {human_bytes(g['free_bytes'])} free"
        + (" (shared with RAM)" if g.get("unified") else "")
        for g in f["gpus"]
    ) or "none found (no NVIDIA driver or Apple GPU)"
    rows = [
        ("CPU", f["cpu"]),
        ("cores", f"{f['physical_cores']} physical, {f['logical_cores']} logical"),
        ("SIMD", " ".join(f["simd"]) or "-"),
        ("RAM", f"{human_bytes(f['ram_total_bytes'])} total, {human_bytes(f['ram_available_bytes'])} available"),
        ("GPUs", gpus),
        ("store", f"{f['store_path']} ({human_bytes(f['store_free_disk_bytes'])} free)"),
        ("memory bandwidth", f"{f['memory_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s read (measured, cached)"),
        ("OS", f["os"]),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    stdout_console().print(table)
