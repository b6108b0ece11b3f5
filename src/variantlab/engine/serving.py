"""Serving many clients from one engine: a slot loop in the child, a dispatcher in the parent.

The child keeps up to ``slots`` requests decoding together, one token each per
``llama_decode`` call; a request that finishes (or is cancelled) frees its slot for the next
one waiting, so a new request never cuts another one short. New text goes back to the parent
once per step, held back by as many characters as the longest stop string could still need,
so a stop string is never sent. The parent's reader thread hands each request's pieces to
that request's own queue on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .child import EngineCrashed, EngineProcess
from .llama import EngineError, LlamaEngine, Sampling, _Sequence
from .settings import EngineSettings


@dataclass
class _Request:
    id: int
    prompt: str | None
    fim: tuple[str, str] | None
    add_special: bool
    max_tokens: int
    stop: list[str]
    sampling: dict[str, Any]


@dataclass
class _Stream:
    request: _Request
    seq: _Sequence
    sent: int = 0  # characters of text already sent


class RequestRefused(EngineError):
    """A request the engine cannot run (an empty prompt, or one longer than a slot's context)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# -- child side ---------------------------------------------------------------------------------

def serve_loop(engine: LlamaEngine, poll: Callable[[float | None], bool], recv: Callable[[], Any],
               send: Callable[[Any], None], slots: int) -> None:
    """Run requests until the parent says "stop"; see the module docstring."""
    per_slot = engine.settings.n_ctx // engine.settings.n_seq_max
    waiting: deque[_Request] = deque()
    live: dict[int, _Stream] = {}
    engine.clear()
    while True:
        while poll(0 if (live or waiting) else None):
            message = recv()
            if message[0] == "stop":
                for stream in live.values():
                    engine.release(stream.seq)
                return
            if message[0] == "submit":
                waiting.append(_Request(*message[1:]))
            elif message[0] == "cancel":
                waiting = deque(r for r in waiting if r.id != message[1])
                for slot, stream in list(live.items()):
                    if stream.request.id == message[1]:
                        engine.release(stream.seq)
                        del live[slot]
        out: list[tuple[int, str, dict[str, Any] | None]] = []
        for slot in range(slots):
            if slot not in live and waiting:
                request = waiting.popleft()
                try:
                    live[slot] = _start(engine, slot, request, per_slot)
                except EngineError as exc:
                    out.append((request.id, "", {"error": exc.message, "status": 400, "code": getattr(exc, "code", None)}))
                except Exception as exc:  # a bug met by this request: it fails alone, the loop goes on
                    engine.release_slot(slot)
                    out.append((request.id, "", _internal_error(request.id, exc)))
        if not waiting and engine.compact([s.seq for s in live.values()]):
            live = {s.seq.seq_id: s for s in live.values()}
        engine.step([s.seq for s in live.values() if not s.seq.done])
        for slot, stream in list(live.items()):
            text, done = _take(stream)
            if text or done:
                out.append((stream.request.id, text, done))
            if done:
                engine.release(stream.seq)
                del live[slot]
        if out:
            send(("step", out))


def _internal_error(request_id: int, exc: BaseException) -> dict[str, Any]:
    """The error record of a request that met a bug, logged with its id (the child's stderr is the server's)."""
    print(f"variantlab serve: request {request_id} failed: {''.join(traceback.format_exception(exc)).rstrip()}",
          file=sys.stderr, flush=True)
    return {"error": f"internal error ({type(exc).__name__}) in request {request_id}; it is logged", "status": 500,
            "code": "internal_error"}


def _start(engine: LlamaEngine, slot: int, request: _Request, per_slot: int) -> _Stream:
    if request.fim is not None:
        prompt = engine.fim_prompt(*request.fim) + (engine.tokenize(request.prompt, False) if request.prompt else [])
    else:
        prompt = engine.tokenize(request.prompt or "", request.add_special)
    if not prompt:
        raise RequestRefused("the prompt is empty", "empty_prompt")
    if len(prompt) >= per_slot:
        raise RequestRefused(f"the prompt has {len(prompt)} tokens; the context holds {per_slot} per request (--ctx)",
                             "context_length_exceeded")
    engine._decode([(t, i, slot, i == len(prompt) - 1) for i, t in enumerate(prompt)])
    max_tokens = min(request.max_tokens, per_slot - len(prompt))  # the context's end is a hard "length" stop
    seq = _Sequence(slot, prompt, engine._new_sampler(Sampling(**request.sampling)), request.stop, max_tokens)
    engine._accept(seq, engine.sample(seq.sampler, -1))
    return _Stream(request, seq)


def _take(stream: _Stream) -> tuple[str, dict[str, Any] | None]:
    """New text that is safe to send, and the finish record when the sequence is done."""
    seq = stream.seq
    if seq.done:
        seq.finish_text()
        text = seq.result.text[stream.sent:]
        stream.sent += len(text)
        reason = "length" if seq.result.finish_reason == "length" else "stop"
        return text, {"finish_reason": reason, "prompt_tokens": len(seq.prompt),
                      "completion_tokens": len(seq.result.tokens)}
    whole = sum(len(c) for c in seq.chunks)
    safe = whole - seq.keep if seq.stop else whole
    if safe <= stream.sent:
        return "", None
    joined = "".join(seq.chunks)  # chunks are merged so this stays short-lived
    seq.chunks[:] = [joined]
    text = joined[stream.sent:safe]
    stream.sent = safe
    return text, None


# -- parent side --------------------------------------------------------------------------------

@dataclass
class Piece:
    """What a request's queue receives: text, and at the end a finish record, or an error record
    (``error``, the HTTP ``status`` it maps to, and a ``code``)."""

    text: str
    done: dict[str, Any] | None = None


@dataclass
class ServingEngine:
    """The model in its child process, serving requests from the event loop."""

    model_path: str
    settings: EngineSettings
    slots: int
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
               fim: tuple[str, str] | None = None, add_special: bool = True) -> tuple[int, asyncio.Queue[Piece]]:
        """Queue a request; its pieces arrive on the returned queue, in the caller's event loop."""
        if not self.alive or self._engine is None:
            raise EngineCrashed("the engine process is not running")
        queue: asyncio.Queue[Piece] = asyncio.Queue()
        request_id = next(self._ids)
        self._queues[request_id] = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._engine.post_raw(("submit", request_id, prompt, fim, add_special, max_tokens, stop, sampling))
        return request_id, queue

    def cancel(self, request_id: int) -> None:
        """Free the request's slot (a client that went away)."""
        if self._queues.pop(request_id, None) is not None and self.alive and self._engine is not None:
            with self._lock:
                self._engine.post_raw(("cancel", request_id))

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
            if message[0] != "step":
                if message[0] == "error":
                    reason = f"the engine's serving loop failed: {message[2]}"
                break  # the loop's return value after "stop", or an error
            for request_id, text, done in message[1]:
                target = self._queues.get(request_id)
                if target is not None:
                    target[0].call_soon_threadsafe(target[1].put_nowait, Piece(text, done))
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
                self._engine.post_raw(("stop",))
        if self._reader is not None:
            self._reader.join(timeout=10)
        self._engine.close()
        self._engine = None
        self.alive = False
