"""`variantlab fit MODEL`: memory for a model at a context length, and whether it fits here."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..bench import fit_measured
from ..errors import UsageError
from ..fit import FitRequest, check_claims, command_line, estimate, max_context, network_for
from ..twin import measure_fit
from .output import gib_option_bytes, human_bytes, print_json, progress_bars, stdout_console


def fit(
    model: Annotated[Optional[str], typer.Argument(help="Store name, GGUF path, or catalog variant (codellama:13b-instruct-q4_K_M, codellama-13b-instruct.Q4_K_M.gguf).")] = None,
    ctx: Annotated[int, typer.Option("--ctx", help="Context length in tokens.")] = 4096,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache element type: f16, q8_0 or q4_0.")] = "f16",
    gpu_layers: Annotated[str, typer.Option("--gpu-layers", help="Layers to offload: auto, or a number.")] = "auto",
    mem: Annotated[Optional[float], typer.Option("--mem", help="RAM budget in GiB (default: RAM available now).")] = None,
    n_cpu_moe: Annotated[Optional[int], typer.Option("--n-cpu-moe", help="Mixture of experts on a GPU: keep the experts of the first N layers in RAM (default: chosen with --gpu-layers auto).")] = None,
    max_ctx: Annotated[bool, typer.Option("--max-ctx", help="The largest context (multiple of 256, up to the model's limit) that fits the budget, with the terms at that context.")] = False,
    flags: Annotated[Optional[str], typer.Option("--flags", help="Also print the command that runs this plan: llama-server, llama-cli, or ollama (a Modelfile).")] = None,
    measure: Annotated[bool, typer.Option("--measure", help="Also load the model at --ctx and report its measured peak memory beside the estimate.")] = False,
    twin: Annotated[bool, typer.Option("--twin", help="With --measure: measure a twin of MODEL (header + random weights), for a variant not downloaded.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="With --twin: keep the twin in the store.")] = False,
    check: Annotated[Optional[list[str]], typer.Option("--check", help="NAME=SIZE_GB: is a claimed file size plausible for that variant? Repeatable.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Weights + KV cache + compute + overhead at --ctx, against this machine's memory."""
    if check:
        results = check_claims([_claim(c) for c in check])
        print_json(results) if json_out else render_checks(results)
        if not all(r["plausible"] for r in results):
            raise typer.Exit(1)
        return
    if model is None:
        raise UsageError("give a MODEL, or --check NAME=SIZE_GB", hint="for example: variantlab fit codellama:13b-instruct-q4_K_M --ctx 8192")
    request = FitRequest(ctx=ctx, kv_type=kv_type, gpu_layers=_gpu_layers(gpu_layers), ram_bytes=gib_option_bytes(mem),
                         n_cpu_moe=n_cpu_moe)
    if twin and not measure:
        raise UsageError("--twin measures: give --measure with it", hint=f"variantlab fit {model} --measure --twin")
    if max_ctx and measure:
        raise UsageError("--max-ctx and --measure are separate questions", hint="find the context with --max-ctx, then measure it with --ctx N --measure")
    if not measure:
        net = network_for(model)
        est = max_context(net, request) if max_ctx else estimate(net, request)
        result = est.to_dict() | {"max_ctx_search": max_ctx}
        if flags:
            result["command"] = command_line(est, net.path or model, flags)
        print_json(result) if json_out else render(result)
        return
    with progress_bars() as progress:
        measured = measure_fit(model, request, keep=keep, progress=progress).fit if twin else fit_measured(model, request, progress=progress)
    assert measured is not None
    print_json(measured.to_dict()) if json_out else render(measured.to_dict())


def _gpu_layers(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--gpu-layers {value!r} is not 'auto' or a number") from None


def _claim(text: str) -> tuple[str, float]:
    name, sep, size = text.rpartition("=")
    try:
        value = float(size.strip().removesuffix("GB").removesuffix("G"))
    except ValueError:
        value = -1.0
    if not sep or not name or value <= 0:
        raise UsageError(f"--check {text!r} is not NAME=SIZE_GB", hint="for example: --check codellama-34b-instruct.Q5_K_M.gguf=20.22")
    return name, value


def render(r: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(style="dim")
    rows = [
        ("file", r["file_bytes"], f"{r['source']}, {r['file_type'] or 'file type not stated'}"),
        ("weights", r["weights_bytes"], "every tensor once (no-mmap, or mmap with all pages touched)"),
        ("KV cache", r["kv_cache_bytes"], f"{r['ctx']} tokens (padded to 256), {r['kv_type']}"),
        ("compute", r["compute_bytes"], "one micro-batch of activations + attention mask"),
        ("overhead", r["overhead_bytes"], "runtime, vocabulary, output buffer"),
        ("total", r["total_bytes"], ""),
    ]
    for label, value, note in rows:
        table.add_row(label, human_bytes(value), note)
    console = stdout_console()
    if r.get("max_ctx_search"):
        limit = f" (the model's limit is {r['max_ctx']})" if r.get("max_ctx") else ""
        head = (f"largest context that fits: {r['ctx']} tokens{limit}" if r["fits"]
                else f"not even {r['ctx']} tokens fit{limit}")
        console.print(f"[bold]{r['variant']}[/bold]: {head}")
    else:
        console.print(f"[bold]{r['variant']}[/bold] at {r['ctx']} tokens")
    console.print(table)
    if r.get("experts"):
        console.print(f"mixture of experts: {r['experts']} experts per token; routed experts are "
                      f"{human_bytes(r['expert_bytes'])} of the weights, a token reads {human_bytes(r['bytes_read_per_token'])}")
    kinds = r.get("kv_layers") or {}
    if set(kinds) - {"full"}:
        console.print("cache layers: " + ", ".join(f"{n} {KV_KIND_TEXT[k]}" for k, n in kinds.items()))
    moe = f", experts of the first {r['cpu_moe_layers']} in RAM" if r.get("cpu_moe_layers") else ""
    where = f"{r['gpu_layers']} of {r['n_layers'] + 1} layers on the GPU{moe} ({human_bytes(r['gpu_bytes'])}), " if r["gpu_layers"] else ""
    console.print(f"{where}{human_bytes(r['cpu_bytes'])} in RAM of {human_bytes(r['ram_budget_bytes'])} budget")
    measured = r.get("measured")
    if measured:
        how = "the twin (random weights, same tensors)" if measured.get("twin_of") else "this file"
        console.print(f"measured peak RSS at {r['ctx']} tokens: {human_bytes(measured['peak_rss_bytes'])} on {how}, "
                      f"load {measured['load_s']:.2f} s; estimate {r['estimate_error']:+.1%}")
    style = "green" if r["fits"] else "red"
    console.print(f"[{style}]{r['verdict']}[/{style}], headroom {human_bytes(r['headroom_bytes']) if r['headroom_bytes'] >= 0 else '-' + human_bytes(-r['headroom_bytes'])}")
    if r.get("command"):
        console.print(r["command"], markup=False, highlight=False, soft_wrap=True)


KV_KIND_TEXT = {
    "full": "full attention (every context cell)",
    "sliding": "sliding-window (window + micro-batch cells)",
    "latent": "latent attention (one compressed row per cell, no V)",
    "recurrent": "recurrent (a fixed state, whatever the context)",
}


def render_checks(results: list[dict[str, Any]]) -> None:
    table = Table("claimed for", "claimed", "predicted", "difference", "verdict")
    for r in results:
        verdict = "plausible" if r["plausible"] else f"matches {r['matches']} ({r['matches_bytes'] / 1e9:.2f} GB)"
        table.add_row(r["variant"], f"{r['claimed_bytes'] / 1e9:.2f} GB", f"{r['predicted_bytes'] / 1e9:.2f} GB",
                      f"{r['difference']:+.1%}", verdict)
    stdout_console().print(table)
