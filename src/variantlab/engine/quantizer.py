"""llama.cpp's quantizer (``llama_model_quantize``) run as a child job (``jobs.py``).

A crash in llama.cpp (a malformed source it did not expect) ends the child, not the tool.
Progress ("[ 12/ 290] …" in llama.cpp's log) and the outcome come back as messages.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EngineError
from .jobs import read_job, run_job, say
from .llama import _capture_llama_logs, llama_reason

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


def _child_main() -> None:
    """The child: read the job, quantize, report progress and the outcome on stdout."""
    import llama_cpp as L

    job = read_job()

    def on_log(text: bytes) -> None:
        found = _TENSOR_LINE.search(text)
        if found:
            say({"progress": [int(found.group(1)), int(found.group(2))]})

    _capture_llama_logs(on_log)
    params = L.llama_model_quantize_default_params()
    params.ftype = job["ftype"]
    params.nthread = job["threads"]
    params.allow_requantize = job["allow_requantize"]
    alive: list[Any] = []
    if job["imatrix"]:
        from ..imatrix import read_imatrix

        matrix = read_imatrix(Path(job["imatrix"]))
        if matrix.sha256 != job["imatrix_sha256"]:
            say({"done": True, "rc": -1, "reason": f"the importance matrix {job['imatrix']} changed after the plan was made"})
            return
        alive = _with_imatrix(params, matrix, job["imatrix"])
    rc = L.llama_model_quantize(job["src"].encode(), job["dst"].encode(), ctypes.byref(params))
    say({"done": True, "rc": rc, "reason": llama_reason() if rc != 0 else ""})
    del alive


def quantize_file(src: str, dst: str, ftype: int, threads: int, *, allow_requantize: bool = False,
                  imatrix: Imatrix | None = None, on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``src`` quantized to llama.cpp file type ``ftype`` at ``dst``; raise if llama.cpp refuses or dies.
    With ``imatrix``, the file records the matrix as llama-quantize does, under the path it was given by."""
    job = {"src": src, "dst": dst, "ftype": ftype, "threads": threads, "allow_requantize": allow_requantize,
           "imatrix": str(imatrix.path) if imatrix else None, "imatrix_sha256": imatrix.sha256 if imatrix else None}
    outcome = run_job(__name__, job, lambda m: on_progress(*m["progress"]) if on_progress else None, f"quantizing {src}")
    if outcome["rc"] != 0:
        raise EngineError(f"llama.cpp could not quantize {src} (code {outcome['rc']}): {outcome['reason']}")


if __name__ == "__main__":
    _child_main()
