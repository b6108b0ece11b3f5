"""The one output path of the CLI: data on stdout (rich or --json), progress and errors on stderr."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import UsageError
from ..files import ProgressFn, no_progress

PHASE_LABELS = {"download": "downloading", "packages": "fetching packages", "copy": "copying", "hash": "hashing"}
BYTE_PHASES = {"download", "copy", "hash"}  # phases that count bytes; the others count steps


# Off a terminal (a pipe, a file, a log) nothing is cut to fit: a table takes its natural width, as
# pip's and git's output does, so a script or a person reading the log sees every name whole.
UNBOUNDED_WIDTH = 10_000


def stdout_console(min_width: int | None = None) -> Console:
    """A console on the current stdout (made per call so tests and redirections are obeyed).

    On a terminal, rich fits tables to the window (``min_width`` keeps a wide table's columns);
    off one, a table keeps its natural width instead of being squeezed into the 80 columns rich
    assumes, which cut names such as "qwen2.5-co…" that tell rungs apart.
    """
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, soft_wrap=False, width=UNBOUNDED_WIDTH)
    elif min_width and console.width < min_width:
        console = Console(file=sys.stdout, highlight=False, soft_wrap=False, width=min_width)
    return console


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def progress_bars(steps: str | None = None) -> Iterator[ProgressFn]:
    """A ProgressFn that draws one bar per phase on stderr, for work of more than a moment.

    Off a terminal rich draws no bars but still ends with a blank line, which would turn an
    error's one line on stderr into two: there the reporter draws nothing, except that a long
    job names its ``steps`` (phases that start with that word, e.g. "ladder") so that a log of
    a run that takes many minutes shows where it is: one plain line per step, as pip does.
    """
    if not stderr_console().is_terminal:
        yield _plain_step_lines(steps) if steps else no_progress
        return
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"), TimeElapsedColumn()]
    with Progress(*columns, console=stderr_console(), transient=True) as bars:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int | None) -> None:
            if phase not in BYTE_PHASES:
                amount = f"{done}/{total}" if total else str(done)
            else:
                amount = f"{human_bytes(done)} / {human_bytes(total)}" if total else human_bytes(done)
            if phase not in tasks:
                tasks[phase] = bars.add_task(PHASE_LABELS.get(phase, phase), total=total, amount=amount)
            bars.update(tasks[phase], completed=done, total=total, amount=amount)

        yield report


def _plain_step_lines(steps: str) -> ProgressFn:
    """One line on stderr the first time each phase starting with ``steps`` reports, with the overall count."""
    seen: set[str] = set()
    started = time.monotonic()

    def report(phase: str, done: int, total: int | None) -> None:
        if phase.startswith(steps) and phase not in seen:
            seen.add(phase)
            elapsed = int(time.monotonic() - started)
            count = f" [{done}/{total}]" if total else ""
            sys.stderr.write(f"{phase}{count} {elapsed // 60}:{elapsed % 60:02d}\n")
            sys.stderr.flush()

    return report


def gib_option_bytes(mem: float | None) -> int | None:
    """A --mem value in GiB as bytes; None stays None (the caller's default)."""
    if mem is None:
        return None
    if not 0 < mem <= 1 << 20:
        raise UsageError(f"--mem {mem} GiB is not a sensible memory size", hint="give a positive size in GiB, e.g. --mem 16")
    return int(mem * (1 << 30))


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


def split_list(value: str) -> list[str]:
    """A comma-separated option (--types Q2_K,Q8_0) as its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


def speculation_line(drafted: int, accepted: int, tokens: int, passes: int) -> str:
    """Speculative decoding's counts in one line: guesses kept, and tokens per pass of the target."""
    kept = f"{accepted} of {drafted} guessed tokens kept ({accepted / drafted:.0%})" if drafted else "no guesses"
    per_pass = f", {tokens / passes:.2f} tokens per target pass" if passes else ""
    return kept + per_pass
