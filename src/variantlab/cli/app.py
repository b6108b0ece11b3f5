"""The `variantlab` command: assembles the command groups and maps errors to exit codes.

Exit codes: 0 success; 1 a check that found a problem (verify, explain's disagreements);
2 bad input or a refused operation (one line on stderr); 130 interrupted (Ctrl-C, or SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import typer

from .. import config
from ..errors import VariantlabError
from . import bench as bench_cmd
from . import catalog as catalog_cmd
from . import eval as eval_cmd
from . import explain as explain_cmd
from . import fit as fit_cmd
from . import hw as hw_cmd
from . import inspect as inspect_cmd
from . import ladder as ladder_cmd
from . import lock as lock_cmd
from . import models as models_cmd
from . import pick as pick_cmd
from . import quantize as quantize_cmd
from . import results as results_cmd
from . import serve as serve_cmd
from . import twin as twin_cmd

app = typer.Typer(
    name="variantlab",
    help="Choose, test, pin and run the right local code LLM variant for your machine and task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_cmd.app, name="models")
app.command("inspect")(inspect_cmd.inspect)
app.command("explain")(explain_cmd.explain)
app.command("hw")(hw_cmd.hw)
app.command("fit")(fit_cmd.fit)
app.command("catalog")(catalog_cmd.catalog)
app.command("pick")(pick_cmd.pick)
app.command("bench")(bench_cmd.bench)
app.command("twin")(twin_cmd.twin)
app.command("eval")(eval_cmd.eval_cmd)
app.command("quantize")(quantize_cmd.quantize)
app.command("dequantize")(quantize_cmd.dequantize)
app.command("ladder")(ladder_cmd.ladder)
app.command("report")(ladder_cmd.report)
app.command("serve")(serve_cmd.serve)
app.add_typer(results_cmd.app, name="results")
app.add_typer(lock_cmd.app, name="lock")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) unwinds like Ctrl-C, so the cleanups of the work in
    hand run: a twin being measured is deleted, engine children stop. Python's default would end
    the process at once and leave a 5–14 GB twin in the store."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of raising, so tests can call it."""
    command = typer.main.get_command(app)
    try:
        with _sigterm_unwinds():
            result = command.main(args=argv, prog_name="variantlab", standalone_mode=False)
    except VariantlabError as exc:
        if config.debug():
            raise
        print(f"variantlab: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("variantlab: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: typer's (vendored click) errors print the usage and the reason
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:  # a bug: say so in one line, traceback on request
        if config.debug():
            raise
        print(f"variantlab: internal error: {_one_line(repr(exc))} (set VARIANTLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
