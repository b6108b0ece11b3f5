"""`variantlab models …`: fetch, scan, list, path, verify and remove models in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..lock import gc as gc_lib
from ..store import Store, builtin_models
from ..store import fetch as fetch_model
from ..store.discover import Found, ImportOutcome, ScanReport, import_found
from ..store.discover import scan as scan_models
from .output import human_bytes, print_json, progress_bars, stderr_console, stdout_console

app = typer.Typer(help="Fetch, list, locate and verify models in the store.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@app.command()
def fetch(
    spec: Annotated[str, typer.Argument(help="A built-in name (see `models list --available`), file:PATH, or hf:OWNER/REPO/FILE.gguf[@REVISION].")],
    name: Annotated[Optional[str], typer.Option(help="Store the model under this name.")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Refuse the file unless it hashes to this.")] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even when the name is stored.")] = False,
    link: Annotated[bool, typer.Option("--link", help="Register a file:PATH in place (hashed, not copied); "
                                       "variantlab never deletes it.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Bring a model into the store, verifying its sha256 before registering it."""
    with progress_bars() as progress:
        result = fetch_model(spec, name=name, expected_sha256=sha256, force=force, link=link, progress=progress)
    m = result.manifest
    if json_out:
        print_json({**m.to_dict(), "already_present": result.already_present})
        return
    state = "already in the store" if result.already_present else \
        f"registered in place at {m.external_paths[0]}" if m.external else "fetched and verified"
    stdout_console().print(f"{m.name}: {state} ({m.file_type or 'unknown type'}, {human_bytes(m.size)}, sha256 {m.sha256})")


@app.command("list")
def list_models(
    available: Annotated[bool, typer.Option("--available", help="List the built-in names that can be fetched.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """The models in the store (or, with --available, the ones variantlab can fetch)."""
    if available:
        rows: list[dict[str, Any]] = [{"name": b.name, "size": b.size, "sha256": b.sha256, "description": b.description,
                                       "in_store": Store().manifest(b.name) is not None} for b in builtin_models().values()]
        if json_out:
            print_json(rows)
            return
        table = Table("name", "size", "in store", "description")
        for r in rows:
            table.add_row(r["name"], human_bytes(r["size"]), "yes" if r["in_store"] else "no", r["description"])
        stdout_console().print(table)
        return
    manifests, bad = Store().readable_manifests()
    for problem in bad:  # named, and the rest still listed
        stderr_console().print(f"variantlab: warning: {problem.message}", markup=False, highlight=False)
    if json_out:
        print_json([m.to_dict() for m in manifests])
        return
    if not manifests:
        stderr_console().print("The store is empty: `variantlab models fetch NAME` (see `models list --available`).")
        return
    table = Table("name", "type", "size", "sha256", "source", "added")
    for m in manifests:
        source = f"{m.source} (in place: {m.external_paths[0]})" if m.external else m.source
        table.add_row(m.name, m.file_type or "?", human_bytes(m.size), m.sha256[:12], source, m.added_at)
    stdout_console().print(table)


@app.command()
def path(name: Annotated[str, typer.Argument(help="A model name in the store.")]) -> None:
    """Print the file path of a stored model (for use with other tools)."""
    print(Store().resolve(name).path)


@app.command()
def scan(
    paths: Annotated[Optional[list[Path]], typer.Option("--path", help="Also search this folder (repeatable).")] = None,
    import_: Annotated[bool, typer.Option("--import", help="Register each model found in place (hashed, not copied).")] = False,
    only_paths: Annotated[bool, typer.Option("--only-paths", help="Search only the --path folders, not the tools' own.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Find the GGUF files Ollama, LM Studio, the Hugging Face cache, llama.cpp and --path folders hold.

    Problems (unreadable folders, missing blobs, unfinished downloads, link loops) are listed and the
    scan goes on; exit 0 when something was found.
    """
    with progress_bars() as progress:
        report = scan_models(tuple(paths or ()), defaults=not only_paths, progress=progress)
        outcomes = import_found(report.found, progress=progress) if import_ else []
    if json_out:
        print_json({"found": [_found_row(f) for f in report.found], "imported": [_outcome_row(o) for o in outcomes],
                    "problems": [p.__dict__ for p in report.problems],
                    "searched": [{"tool": t, "folder": f} for t, f in report.searched]})
    else:
        _print_scan(report, outcomes)
    if not report.found and report.problems:
        raise typer.Exit(1)


def _found_row(f: Found) -> dict[str, Any]:
    return {"tool": f.tool, "name": f.name, "store_name": f.store_name, "paths": [str(p) for p in f.paths],
            "size": f.size, "kind": f.kind, "file_type": f.file_type, "sha256": f.sha256, "fetch": f.fetch,
            "known_as": f.known_as, "problem": f.problem}


def _outcome_row(o: ImportOutcome) -> dict[str, Any]:
    return {"name": o.found.store_name, "path": str(o.found.paths[0]), "imported": o.manifest is not None and not o.already,
            "already": o.already, "sha256": o.manifest.sha256 if o.manifest else None, "problem": o.problem}


def _print_scan(report: ScanReport, outcomes: list[ImportOutcome]) -> None:
    out = stdout_console()
    if not report.found:
        folders = ", ".join(f for _, f in report.searched)
        out.print(f"No GGUF files found (searched {folders}).", markup=False, highlight=False)
    else:
        table = Table("tool", "name", "kind", "type", "size", "in variantlab", "path")
        for f in report.found:
            parts = f" (+{len(f.paths) - 1} parts)" if len(f.paths) > 1 else ""
            table.add_row(f.tool, f.name, f.kind, f.file_type or "?", human_bytes(f.size), f.known_as or "no",
                          f"{f.paths[0]}{parts}")
        out.print(table)
    for o in outcomes:
        if o.problem:
            out.print(f"not imported  {o.found.name}: {o.problem}", markup=False, highlight=False)
        elif not o.already and o.manifest is not None:
            out.print(f"imported      {o.manifest.name} (sha256 {o.manifest.sha256[:12]}…, in place)", markup=False, highlight=False)
    for p in report.problems:
        out.print(f"problem       [{p.tool}] {p.where}: {p.problem}", markup=False, highlight=False)
    if report.found and not outcomes and any(f.importable and not f.known_as for f in report.found):
        stderr_console().print("Register them in place with `variantlab models scan --import`.")


@app.command()
def rm(name: Annotated[str, typer.Argument(help="A model name in the store.")]) -> None:
    """Forget a name. Its blob stays until `models gc`; a file registered in place is never deleted."""
    manifest = Store().remove_name(name)
    where = f"; its file {manifest.external_paths[0]} is left as it was" if manifest.external else ""
    stdout_console().print(f"removed the name {name}{where}", markup=False, highlight=False)


@app.command()
def verify(
    names: Annotated[Optional[list[str]], typer.Argument(help="Models to check (default: all).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-hash stored blobs; exit 1 if any differs from its manifest or is missing."""
    with progress_bars() as progress:
        reports = Store().verify(names or None, progress=progress)
    if json_out:
        print_json([r.__dict__ for r in reports])
    else:
        table = Table("name", "status", "expected sha256", "found")
        for r in reports:
            status = "[green]ok[/green]" if r.ok else f"[red]{r.problem}[/red]"
            table.add_row(r.name, status, r.expected[:16], (r.found or "-")[:16])
        stdout_console().print(table)
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and stop.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    keep_days: Annotated[int, typer.Option(help="Keep blobs with results newer than this many days.")] = 30,
    json_out: JsonOpt = False,
) -> None:
    """Remove blobs that no lockfile pins and no recent result refers to (plan and confirmation first)."""
    plan = gc_lib.plan(keep_days=keep_days)
    history_only = gc_lib.history_only_pins()
    if json_out and (dry_run or not plan.remove):
        print_json({"remove": plan.remove, "keep": plan.keep, "bytes_freed": plan.bytes_freed, "removed": []})
        return
    err = stderr_console()
    for sha, why in plan.keep.items():
        err.print(f"keep   {sha[:12]}…  {why}")
    for sha, names in plan.remove.items():
        note = " (an earlier pin in a lock's history: rolling back to it will need a fetch)" if sha in history_only else ""
        err.print(f"remove {sha[:12]}…  {', '.join(names) or 'no name'}{note}")
    err.print(f"{len(plan.remove)} blobs to remove, {human_bytes(plan.bytes_freed)} freed")
    if dry_run or not plan.remove:
        return
    if not yes and not typer.confirm("Remove them?", err=True):
        raise typer.Exit(1)
    removed = gc_lib.collect(plan)
    if json_out:
        print_json({"remove": plan.remove, "keep": plan.keep, "bytes_freed": plan.bytes_freed, "removed": removed})
    else:
        stdout_console().print(f"removed {len(removed)} blobs")
