"""Serving many clients from one engine, parent side: requests in, pieces out to each request's queue.

The model runs in its child process (``EngineProcess``) in the serving loop (``serving.py``).
``ServingEngine`` posts typed messages to it, and a reader thread hands each request's pieces to
that request's own queue on the event loop. If the child stops serving by itself, every waiting
request gets a 503 piece and ``on_death`` is told, so the server ends instead of lingering.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import EngineCrashed, EngineError
from .child import EngineProcess
from .messages import Cancel, Failed, Fim, Piece, Request, Served, StopServing, Submit
from .settings import EngineSettings


@dataclass
class ServingEngine:
    """The model in its child process, serving requests from the event loop."""

    model_path: str
    settings: EngineSettings
    slots: int
    speculate: str = ""  # "lookup" or "draft" (settings.draft_model loaded beside): every request speculates
    _engine: EngineProcess | None = None
    _queues: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Piece]]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None
    alive: bool = False
    specials: dict[str, str] = field(default_factory=dict)
    has_fim: bool = False
    # Called (from the reader thread) with the reason when the engine stops serving by itself: the
    # server must then end, not linger answering 503 (the CLI exits non-zero).
    on_death: Callable[[str], None] | None = None
    _closing: bool = False

    def start(self) -> None:
        self._engine = EngineProcess(self.model_path, self.settings).__enter__()
        self.specials = self._engine.call("special_tokens")
        try:
            self._engine.call("fim_prompt", prefix="a", suffix="b")
            self.has_fim = True
        except EngineError:
            self.has_fim = False
        self._engine.post("serve_loop", slots=self.slots)
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="engine-reader", daemon=True)
        self._reader.start()

    def submit(self, *, prompt: str | None, max_tokens: int, stop: list[str], sampling: dict[str, Any],
               fim: Fim | None = None, add_special: bool = True) -> tuple[int, asyncio.Queue[Piece]]:
        """Queue a request; its pieces arrive on the returned queue, in the caller's event loop."""
        if not self.alive or self._engine is None:
            raise EngineCrashed("the engine process is not running")
        queue: asyncio.Queue[Piece] = asyncio.Queue()
        request_id = next(self._ids)
        self._queues[request_id] = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._engine.post_raw(Submit(Request(request_id, prompt, fim, add_special, max_tokens, stop,
                                                 {**sampling, "speculate": self.speculate})))
        return request_id, queue

    def cancel(self, request_id: int) -> None:
        """Free the request's slot (a client that went away)."""
        if self._queues.pop(request_id, None) is not None and self.alive and self._engine is not None:
            with self._lock:
                self._engine.post_raw(Cancel(request_id))

    def finished(self, request_id: int) -> None:
        self._queues.pop(request_id, None)

    def _read(self) -> None:
        assert self._engine is not None
        reason = "the engine's serving loop ended"
        while True:
            try:
                message = self._engine.receive_raw()
            except (EngineCrashed, EOFError, OSError) as exc:
                reason = str(exc)
                break
            if not isinstance(message, Served):
                if isinstance(message, Failed):
                    reason = f"the engine's serving loop failed: {message.message}"
                break  # the loop's reply after StopServing, or its failure
            for request_id, piece in message.pieces:
                target = self._queues.get(request_id)
                if target is not None:
                    target[0].call_soon_threadsafe(target[1].put_nowait, piece)
        self.alive = False
        for loop, queue in list(self._queues.values()):
            loop.call_soon_threadsafe(queue.put_nowait, Piece("", {"error": "the engine process died", "status": 503,
                                                                   "code": "engine_down"}))
        if not self._closing and self.on_death is not None:
            self.on_death(reason)

    def close(self) -> None:
        if self._engine is None:
            return
        self._closing = True
        if self.alive:
            with self._lock:
                self._engine.post_raw(StopServing())
        if self._reader is not None:
            self._reader.join(timeout=10)
        self._engine.close()
        self._engine = None
        self.alive = False
