"""`variantlab lock …`: pin models to roles, verify, see history and diffs, roll back, sync."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import consistency
from .. import lock as lock_lib
from ..errors import UsageError
from ..lock.pins import default_lock_path, headline_results
from ..results import ResultsDB
from .output import human_bytes, print_json, progress_bars, stdout_console

app = typer.Typer(help="Pin models to roles in variantlab.lock, verify them, and roll back.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
LockOpt = Annotated[Optional[Path], typer.Option("--lockfile", help="The lockfile (default: ./variantlab.lock or the nearest parent's).")]
MessageOpt = Annotated[str, typer.Option("--message", "-m", help="Why: kept in the history.")]


def _pin_row(pin: lock_lib.Pin | None) -> dict[str, Any] | None:
    return pin.to_dict() if pin else None


def _figures(pin: lock_lib.Pin | None, db: ResultsDB) -> str:
    """The headline figures for a pin: recorded at pin time, updated with any later results."""
    if pin is None:
        return "-"
    figures = {**pin.results, **headline_results(db, pin.sha256)}
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items() if not k.endswith(" run")]
    return ", ".join(shown) or "no results"


@app.command()
def add(role: Annotated[str, typer.Argument(help="chat, complete, infill, … (your name for the job)")],
        model: Annotated[str, typer.Argument(help="A stored model name, or what `models fetch` takes (a built-in name, "
                                                   "file:PATH, hf:OWNER/REPO/FILE.gguf[@REV]); fetched first if missing.")],
        message: MessageOpt = "", lockfile: LockOpt = None, json_out: JsonOpt = False,
        draft: Annotated[Optional[str], typer.Option(help="A smaller model of the same tokenizer, pinned with MODEL as its "
                                                         "draft for speculative decoding (serve/eval/bench use it for the role).")] = None,
        fingerprint: Annotated[str, typer.Option(help="full: record the behaviour fingerprint `lock check` compares with (greedy outputs, "
                                                      "quick pass@1, speed; about a minute for a small model); outputs: the greedy outputs only; none.")] = "full") -> None:
    """Pin ROLE to MODEL (fetching it into the store if need be, hashing it first), recording the change, the results behind it and its behaviour fingerprint."""
    if fingerprint not in ("full", "outputs", "none"):
        raise UsageError(f"--fingerprint {fingerprint!r} is not known", hint="use full, outputs or none")
    with progress_bars("fingerprint") as progress:
        hook = consistency.fingerprint_for_add(figures=fingerprint == "full", progress=progress) if fingerprint != "none" else None
        entry = lock_lib.add(role, model, message=message, lock_path=lockfile, progress=progress, draft=draft, fingerprint=hook)
    if json_out:
        print_json({"revision": entry.revision, "role": role, "before": _pin_row(entry.before), "after": _pin_row(entry.after)})
        return
    was = f" (was {entry.before.model})" if entry.before else ""
    drafted = f", draft {entry.after.draft['model']}" if entry.after and entry.after.draft else ""
    stdout_console().print(f"revision {entry.revision}: {role} → {entry.after.model}{drafted}{was}")  # type: ignore[union-attr]


@app.command()
def show(lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """The roles and their pins."""
    path = default_lock_path(lockfile)
    state = lock_lib.read_lock(path)
    if json_out:
        print_json({"lockfile": str(path), "revision": state.revision, "roles": {r: p.to_dict() for r, p in state.roles.items()}})
        return
    table = Table("role", "model", "type", "size", "sha256", "results at pin time", title=f"{path} (revision {state.revision})")
    for role, pin in state.roles.items():
        table.add_row(role, pin.model + (f" (draft {pin.draft['model']})" if pin.draft else ""), pin.file_type or "?", human_bytes(pin.size), pin.sha256[:12] + "…",
                      ", ".join(f"{k} {v}" for k, v in pin.results.items() if not k.endswith(" run")) or "-")
    stdout_console().print(table)


@app.command()
def verify(lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """Re-hash every pinned blob; exit 1 if any is missing or changed."""
    with progress_bars():
        checks = lock_lib.verify(lock_path=lockfile, force=True)
    if json_out:
        print_json([c.__dict__ for c in checks])
    else:
        for c in checks:
            stdout_console().print(f"{'ok  ' if c.ok else 'FAIL'} {c.role}: {c.model}" + (f": {c.problem} (expected {c.expected}, found {c.found})" if not c.ok else ""))
    if any(not c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def history(role: Annotated[Optional[str], typer.Argument(help="Only this role.")] = None,
            lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """Every change: revision, when, who, why, the old and new pin, and their results."""
    entries = lock_lib.history(role, lock_path=lockfile)
    with ResultsDB() as db:
        if json_out:
            print_json([{"revision": e.revision, "at": e.at, "user": e.user, "action": e.action, "role": e.role,
                         "message": e.message, "before": _pin_row(e.before), "after": _pin_row(e.after),
                         "after_results": {**(e.after.results if e.after else {}), **(headline_results(db, e.after.sha256) if e.after else {})}}
                        for e in entries])
            return
        table = Table("rev", "when", "who", "role", "change", "results of the new pin", "why")
        for e in entries:
            change = f"{e.before.model if e.before else '∅'} → {e.after.model if e.after else '∅'}"
            table.add_row(str(e.revision), e.at, e.user, e.role, f"{e.action}: {change}", _figures(e.after, db), e.message)
    stdout_console().print(table)


@app.command()
def diff(rev1: Annotated[int, typer.Argument(help="Earlier revision (0: the empty lock).")],
         rev2: Annotated[int, typer.Argument(help="Later revision.")],
         lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """What changed between two lock states, with the figures side by side."""
    changes = lock_lib.diff(rev1, rev2, lock_path=lockfile)
    with ResultsDB() as db:
        if json_out:
            print_json([{"role": c.role, "before": _pin_row(c.before), "after": _pin_row(c.after)} for c in changes])
            return
        table = Table("role", f"at revision {rev1}", f"at revision {rev2}", "figures before", "figures after")
        for c in changes:
            table.add_row(c.role, c.before.model if c.before else "∅", c.after.model if c.after else "∅",
                          _figures(c.before, db), _figures(c.after, db))
    stdout_console().print(table if changes else f"no pin differs between revisions {rev1} and {rev2}")


@app.command()
def rollback(role: Annotated[str, typer.Argument()],
             to: Annotated[Optional[int], typer.Option("--to", help="The revision whose pin to restore (default: the previous pin).")] = None,
             message: MessageOpt = "", lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """Pin ROLE back to its previous model, from the store (no network)."""
    entry = lock_lib.rollback(role, to=to, message=message, lock_path=lockfile)
    if json_out:
        print_json({"revision": entry.revision, "role": role, "before": _pin_row(entry.before), "after": _pin_row(entry.after)})
        return
    stdout_console().print(f"revision {entry.revision}: {role} → {entry.after.model} (was {entry.before.model})")  # type: ignore[union-attr]


@app.command()
def remove(role: Annotated[str, typer.Argument()], message: MessageOpt = "", lockfile: LockOpt = None) -> None:
    """Unpin ROLE (recorded in the history, so it can be rolled back with --to)."""
    entry = lock_lib.remove(role, message=message, lock_path=lockfile)
    stdout_console().print(f"revision {entry.revision}: {role} removed")


@app.command()
def sync(lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """Fetch every pinned model that is missing or damaged, checking each against its pin."""
    with progress_bars() as progress:
        fetched = lock_lib.sync(lock_path=lockfile, progress=progress)
    if json_out:
        print_json({"fetched": fetched})
    else:
        stdout_console().print(f"fetched: {', '.join(fetched)}" if fetched else "every pinned model is present and intact")


@app.command(name="fingerprint")
def fingerprint_cmd(role: Annotated[str, typer.Argument(help="A pinned role.")],
                    kind: Annotated[Optional[str], typer.Option(help="The prompt set: chat, complete or infill (default: from the role's name).")] = None,
                    outputs_only: Annotated[bool, typer.Option("--outputs-only", help="Only the greedy outputs, not the quick pass@1 and speed.")] = False,
                    lockfile: LockOpt = None, json_out: JsonOpt = False) -> None:
    """Record ROLE's behaviour fingerprint now (greedy outputs of fixed prompts, quick pass@1, speed), as a change in the history."""
    with progress_bars("fingerprint") as progress:
        found = consistency.record(role, kind=kind, figures=not outputs_only, lock_path=lockfile, progress=progress)
    if json_out:
        print_json(found)
        return
    quick = found.get("quick", {})
    speed = found.get("speed", {})
    stdout_console().print(f"{role}: {len(found['outputs'])} {found['set']} prompts fingerprinted with {found['engine']}"
                           + (f"; pass@1 {quick['pass_at_1']:.3f}" if quick else "")
                           + (f"; {speed['gen_tokens_per_s']:.1f} tokens/s" if speed else ""))


@app.command(name="check")
def check_cmd(roles: Annotated[Optional[list[str]], typer.Argument(help="Roles to check (default: every pinned role).")] = None,
              against: Annotated[Optional[int], typer.Option("--against", help="Compare with the role's pin at this revision "
                                                                                 "(both blobs in the store, measured now), plus their KL-divergence.")] = None,
              fmt: Annotated[str, typer.Option("--format", help="text, json, junit or markdown.")] = "text",
              output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report to this file (stdout: a one-line verdict).")] = None,
              lockfile: LockOpt = None) -> None:
    """Measure each pin again with today's engine and compare with its fingerprint: exit 0 within the lockfile's [check] thresholds, 1 on a regression."""
    renderers = {"json": lambda r: json.dumps(r.to_dict(), indent=2) + "\n", "junit": consistency.to_junit,
                 "markdown": consistency.to_markdown, "text": lambda r: "\n".join(line for v in r.roles for line in consistency.summary_lines(v)) + "\n"}
    if fmt not in renderers:
        raise UsageError(f"--format {fmt!r} is not known", hint="use text, json, junit or markdown")
    with progress_bars("fingerprint") as progress:
        report = consistency.check(roles or None, against=against, lock_path=lockfile, progress=progress)
    text = renderers[fmt](report)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        stdout_console().print(f"lock check: {'pass' if report.ok else 'REGRESSION'}; report in {output}")
    elif fmt == "text":
        stdout_console().print(text, end="", highlight=False, markup=False)
    else:
        sys.stdout.write(text)
    if not report.ok:
        raise typer.Exit(1)
