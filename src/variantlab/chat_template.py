"""Chat templates rendered in a child process with a time and memory budget.

A GGUF's chat template is code from the file: Jinja's sandbox stops attribute tricks but not a
template that loops ``range(100000)`` inside ``range(100000)``, which would hold whatever thread
renders it (the server's event loop, an eval) for hours and cannot be interrupted in-process.
So templates render in a spawned child (llama-cpp-python's Jinja2ChatFormatter there), under an
address-space limit; a render over its time is refused and the child replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import threading
from typing import Any

from .errors import TemplateRefused

RENDER_TIMEOUT_S = 2.0
START_TIMEOUT_S = 120  # spawning the renderer imports llama-cpp-python (not counted in the budget)
RENDER_MEMORY_BYTES = 1 << 30
MAX_PROMPT_CHARS = 4 << 20


def _child(conn: Any, template: str, bos: str, eos: str, memory_bytes: int, max_chars: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    except Exception as exc:  # a template that does not even parse
        conn.send(("error", f"the model's chat template does not parse: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            messages = conn.recv()
        except EOFError:
            return
        try:
            prompt = formatter(messages=messages).prompt
            if len(prompt) > max_chars:
                conn.send(("error", f"the chat template wrote {len(prompt)} characters, over the budget of {max_chars}"))
            else:
                conn.send(("ok", prompt))
        except MemoryError:
            conn.send(("error", f"the chat template needed more than {memory_bytes >> 20} MiB"))
        except Exception as exc:  # a template that rejects the conversation (roles out of order …)
            conn.send(("error", f"the model's chat template refused these messages: {exc}"))


class TemplateRenderer:
    """One model's chat template, rendered out of process; safe to call from several threads."""

    def __init__(self, template: str, bos: str = "", eos: str = "", *, timeout_s: float = RENDER_TIMEOUT_S,
                 memory_bytes: int = RENDER_MEMORY_BYTES, max_chars: int = MAX_PROMPT_CHARS) -> None:
        self._args = (template, bos, eos, memory_bytes, max_chars)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt for ``messages``; TemplateRefused when the template fails or runs over budget."""
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            self._conn.send(messages)
            if not self._conn.poll(self.timeout_s):
                self._stop()
                raise TemplateRefused(f"the model's chat template ran longer than {self.timeout_s:g} s and was stopped",
                                      hint="the template loops; fix it or serve the model through /v1/completions")
            try:
                status, value = self._conn.recv()
            except EOFError:
                self._stop()
                raise TemplateRefused("the chat template's renderer died (over its memory budget)") from None
        if status != "ok":
            raise TemplateRefused(value)
        return str(value)

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child_conn, *self._args), daemon=True)
        self._proc.start()
        child_conn.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self._stop()
            raise TemplateRefused(f"the chat template's renderer did not start within {START_TIMEOUT_S} s")
        status, value = self._conn.recv()
        if status != "ready":
            self._stop()
            raise TemplateRefused(value)

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._stop()
