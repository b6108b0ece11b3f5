"""One-shot jobs of llama.cpp's libraries in a fresh child interpreter (quantizing, making blocks).

A crash in llama.cpp ends the child, not the tool: the caller gets ``EngineCrashed``. The
child is a fresh interpreter (``python -m MODULE``), not a fork: llama.cpp starts OpenMP
threads for some quant types (the IQ grids), and OpenMP cannot start again in a child forked
from a process that already ran it (such a child waited forever); multiprocessing would also
import the caller's whole main module again. The job goes in as one JSON line; messages come
back as JSON lines after a marker, so anything a library prints is ignored.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ..errors import EngineCrashed

MARK = "@variantlab-job "


def read_job() -> dict[str, Any]:
    """In the child: the job the parent sent."""
    return dict(json.loads(sys.stdin.readline()))


def say(message: dict[str, Any]) -> None:
    """In the child: one message to the parent (progress, or the final one with ``done``)."""
    sys.stdout.write(MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


def run_job(module: str, job: dict[str, Any], on_message: Callable[[dict[str, Any]], None], what: str) -> dict[str, Any]:
    """Run ``module``'s child on ``job``; pass each message to ``on_message`` until the one with ``done``."""
    proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.close()
        for line in proc.stdout:
            if not line.startswith(MARK):
                continue
            message = json.loads(line[len(MARK):])
            if message.get("done"):
                return dict(message)
            on_message(message)
        code = proc.wait()
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise EngineCrashed(f"llama.cpp died ({how}) while {what}")
    finally:
        if proc.poll() is None:  # interrupted, or a reply that never came: stop the child now
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
