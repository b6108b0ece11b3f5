"""llama.cpp's quantizer (``llama_model_quantize``) run in a child process.

A crash in llama.cpp (a malformed source it did not expect) ends the child, not the tool:
the caller gets ``EngineCrashed``. The child is forked, not spawned, because the quantizer
needs nothing of Python beyond ctypes and a fresh interpreter would cost a second of start-up
on a job that llama-quantize does in a few seconds. Its per-tensor log lines ("[ 12/ 290] …")
come back as progress.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import re
from collections.abc import Callable
from typing import Any

from .child import EngineCrashed
from .llama import EngineError, _capture_llama_logs, llama_reason

_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")


def _child(conn: Any, src: str, dst: str, ftype: int, threads: int, allow_requantize: bool) -> None:
    import llama_cpp as L

    def on_log(text: bytes) -> None:
        found = _TENSOR_LINE.search(text)
        if found:
            conn.send(("progress", (int(found.group(1)), int(found.group(2)))))

    _capture_llama_logs(on_log)
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.allow_requantize = allow_requantize
    rc = L.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    conn.send(("done", rc, llama_reason() if rc != 0 else ""))
    conn.close()


def quantize_file(src: str, dst: str, ftype: int, threads: int, *, allow_requantize: bool = False,
                  on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``src`` quantized to llama.cpp file type ``ftype`` at ``dst``; raise if llama.cpp refuses or dies."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, src, dst, ftype, threads, allow_requantize), daemon=True)
    proc.start()
    child.close()
    try:
        while True:
            try:
                message = parent.recv()
            except EOFError:
                proc.join()
                code = proc.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise EngineCrashed(f"llama.cpp's quantizer died ({how}) on {src}") from None
            if message[0] == "progress":
                if on_progress:
                    on_progress(*message[1])
                continue
            _, rc, reason = message
            if rc != 0:
                raise EngineError(f"llama.cpp could not quantize {src} (code {rc}): {reason}")
            return
    finally:
        parent.close()
        proc.join(timeout=2)
        if proc.is_alive():  # interrupted, or a reply that never came: stop the quantizer now
            proc.kill()
            proc.join()
