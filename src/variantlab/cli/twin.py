"""`variantlab twin VARIANT`: measure a variant before downloading it, on a file with its shapes."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Optional

import typer

from ..bench import BenchPlan
from ..engine import EngineSettings
from ..twin import measure_twins
from .bench import render as render_bench
from .output import human_bytes, print_json, progress_bars, stdout_console


def twin(
    variant: Annotated[str, typer.Argument(help="A catalog variant or published file name (codellama:13b-instruct-q4_K_M, codellama-13b-instruct.Q4_K_M.gguf), hf:OWNER/REPO/FILE.gguf[@REV] (only the header is read), or a local GGUF / store name.")],
    ctx: Annotated[Optional[int], typer.Option("--ctx", help="Context to load it at: the peak memory includes this KV cache (default: prompt + gen).")] = None,
    prompt: Annotated[int, typer.Option("--prompt", help="Prompt tokens per repetition.")] = 512,
    gen: Annotated[int, typer.Option("--gen", help="Generated tokens per repetition.")] = 128,
    depth: Annotated[int, typer.Option("--depth", help="Tokens already in the KV cache when each test starts.")] = 0,
    reps: Annotated[int, typer.Option(help="Repetitions.")] = 3,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: one per physical core).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the twin in the store afterwards (models gc removes it first).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Write a twin (the variant's header and tensor table, valid random blocks), bench it, delete it.

    Speed and memory depend on tensor shapes and types, not on weight values: the twin runs
    at the real file's speed and takes its memory. It is never evaluated, served or pinned.
    """
    settings = EngineSettings(n_threads=threads)
    if ctx is not None:
        settings = replace(settings, n_ctx=ctx)
    plan = BenchPlan(n_prompt=prompt, n_gen=gen, reps=reps, settings=settings, explicit_ctx=ctx is not None, n_depth=depth)
    with progress_bars() as progress:
        measured = measure_twins([variant], plan, keep=keep, progress=progress)[0]
    if json_out:
        print_json(measured.to_dict())
        return
    t = measured.twin
    console = stdout_console()
    origin = t.origin
    if origin["kind"] == "hf":
        came = f"remote header, {human_bytes(origin['bytes_transferred'])} read of {human_bytes(origin['size'])} in {origin['requests']} range requests"
    elif origin["kind"] == "catalog":
        came = f"catalog architecture and llama.cpp's recipe ({origin['file_name']})"
    else:
        came = f"header of {origin['label']}"
    console.print(f"[bold]twin of {t.variant}[/bold]: {human_bytes(t.file_bytes)}, {t.tensors} tensors, from the {came}")
    console.print(("reused the kept twin" if t.reused else f"written in {t.write_s:.1f} s")
                  + (f"; kept as {t.name}" if measured.kept else "; deleted after measuring"))
    if measured.bench:
        render_bench([measured.bench])
