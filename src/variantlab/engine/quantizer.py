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
from typing import TYPE_CHECKING, Any

from .child import EngineCrashed
from .llama import EngineError, _capture_llama_logs, llama_reason

if TYPE_CHECKING:
    from ..imatrix import Imatrix

_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")


def _with_imatrix(params: Any, imatrix: Imatrix, label: str) -> list[Any]:
    """Point ``params`` at the matrix and add the metadata llama-quantize writes with it
    (file, first dataset, entry count, chunk count). Returns what must stay alive meanwhile."""
    import llama_cpp as L

    entries = (L.llama_model_imatrix_data * (len(imatrix.entries) + 1))()  # zeroed: the last one ends the array
    for slot, (name, values) in zip(entries, imatrix.entries.items()):
        slot.name = name.encode()
        slot.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        slot.size = values.size
    overrides: list[tuple[str, int, Any]] = [("quantize.imatrix.file", L.LLAMA_KV_OVERRIDE_TYPE_STR, label.encode()[:127])]
    if imatrix.datasets:
        overrides.append(("quantize.imatrix.dataset", L.LLAMA_KV_OVERRIDE_TYPE_STR, imatrix.datasets[0].encode()[:127]))
    overrides.append(("quantize.imatrix.entries_count", L.LLAMA_KV_OVERRIDE_TYPE_INT, len(imatrix.entries)))
    if imatrix.chunk_count > 0:
        overrides.append(("quantize.imatrix.chunks_count", L.LLAMA_KV_OVERRIDE_TYPE_INT, imatrix.chunk_count))
    kv = (L.llama_model_kv_override * (len(overrides) + 1))()  # zeroed: an empty key ends the array
    for slot, (key, tag, value) in zip(kv, overrides):
        slot.key, slot.tag = key.encode(), tag
        if tag == L.LLAMA_KV_OVERRIDE_TYPE_STR:
            slot.value.val_str = value
        else:
            slot.value.val_i64 = value
    params.imatrix = ctypes.cast(entries, ctypes.POINTER(L.llama_model_imatrix_data))
    params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(L.llama_model_kv_override))
    return [entries, kv, imatrix]


def _child(conn: Any, src: str, dst: str, ftype: int, threads: int, allow_requantize: bool,
           imatrix: Imatrix | None, imatrix_label: str) -> None:
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
    alive = _with_imatrix(params, imatrix, imatrix_label) if imatrix is not None else []
    rc = L.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    conn.send(("done", rc, llama_reason() if rc != 0 else ""))
    del alive
    conn.close()


def quantize_file(src: str, dst: str, ftype: int, threads: int, *, allow_requantize: bool = False,
                  imatrix: Imatrix | None = None, on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``src`` quantized to llama.cpp file type ``ftype`` at ``dst``; raise if llama.cpp refuses or dies.
    With ``imatrix``, the file records the matrix as llama-quantize does, under the path it was given by."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, src, dst, ftype, threads, allow_requantize, imatrix,
                                                   str(imatrix.path) if imatrix else ""), daemon=True)
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
