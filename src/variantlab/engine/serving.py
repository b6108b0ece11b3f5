"""Serving many clients from one engine, child side: the serving loop over the one scheduler.

The child keeps up to ``slots`` requests decoding together (``Scheduler``, shared with eval's
``generate_many``); a request that finishes (or is cancelled) frees its slot for the next one
waiting, so a new request never cuts another one short. New text goes back to the parent once
per step (``Served``), held back by as many characters as the longest stop string could still
need, so a stop string is never sent. The parent side is ``dispatcher.py``.
"""

from __future__ import annotations

import sys
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import EngineError, RequestRefused
from .llama import LlamaEngine, Sampling, _Sequence
from .messages import Cancel, Piece, Request, Served, StopServing, Submit
from .scheduler import Scheduler


class _Sent:
    """How much of a request's text has gone to the parent."""

    def __init__(self) -> None:
        self.chars = 0


def serve_loop(engine: LlamaEngine, poll: Callable[[float | None], bool], recv: Callable[[], Any],
               send: Callable[[Any], None], slots: int) -> None:
    """Run requests until the parent sends ``StopServing``; see the module docstring."""
    per_slot = engine.settings.n_ctx // engine.settings.n_seq_max
    scheduler: Scheduler[int] = Scheduler(engine, slots)
    waiting: deque[Request] = deque()
    sent: dict[int, _Sent] = {}
    while True:
        while poll(0 if (scheduler.live or waiting) else None):
            message = recv()
            if isinstance(message, StopServing):
                scheduler.close()
                return
            if isinstance(message, Submit):
                waiting.append(message.request)
            elif isinstance(message, Cancel):
                waiting = deque(r for r in waiting if r.id != message.request_id)
                scheduler.cancel(message.request_id)
                sent.pop(message.request_id, None)
        out: list[tuple[int, Piece]] = []
        while waiting and scheduler.has_room():
            request = waiting.popleft()
            try:
                _admit(scheduler, request, per_slot)
                sent[request.id] = _Sent()
            except EngineError as exc:
                out.append((request.id, Piece("", {"error": exc.message, "status": 400, "code": getattr(exc, "code", None)})))
            except Exception as exc:  # a bug met by this request: it fails alone, the loop goes on
                out.append((request.id, Piece("", _internal_error(request.id, exc))))
        if not waiting:
            scheduler.compact()
        for request_id, seq in scheduler.step():
            out.append((request_id, _final_piece(seq, sent.pop(request_id))))
        for request_id, seq in scheduler.live.items():
            text = _new_text(seq, sent[request_id])
            if text:
                out.append((request_id, Piece(text)))
        if out:
            send(Served(out))


def _internal_error(request_id: int, exc: BaseException) -> dict[str, Any]:
    """The error record of a request that met a bug, logged with its id (the child's stderr is the server's)."""
    print(f"variantlab serve: request {request_id} failed: {''.join(traceback.format_exception(exc)).rstrip()}",
          file=sys.stderr, flush=True)
    return {"error": f"internal error ({type(exc).__name__}) in request {request_id}; it is logged", "status": 500,
            "code": "internal_error"}


def fim_budget(n_batch: int, per_slot: int, max_tokens: int) -> tuple[int, int, int]:
    """llama-server's /infill trimming: the prefix up to 3/4 of a batch, the suffix the rest of it,
    the neighbouring files what the slot's context leaves after a batch and twice the output (the
    batch shrunk first when the slot is smaller than a batch plus the output)."""
    room = max(64, min(n_batch, per_slot - max_tokens - 8))
    return 3 * (room // 4), max(0, room // 4 - 2), max(0, per_slot - room - 2 * max_tokens)


def _admit(scheduler: Scheduler[int], request: Request, per_slot: int) -> None:
    """Check the request's prompt against a slot's context, then start it in the scheduler."""
    engine = scheduler.engine
    if request.fim is not None:
        prefix, suffix, extra = request.fim
        prompt = engine.fim_prompt(prefix, suffix, extra, budget=fim_budget(engine.settings.n_batch, per_slot, request.max_tokens)) \
            + (engine.tokenize(request.prompt, False) if request.prompt else [])
    else:
        prompt = engine.tokenize(request.prompt or "", request.add_special)
    if not prompt:
        raise RequestRefused("the prompt is empty", "empty_prompt")
    if len(prompt) >= per_slot:
        raise RequestRefused(f"the prompt has {len(prompt)} tokens; the context holds {per_slot} per request (--ctx)",
                             "context_length_exceeded")
    max_tokens = min(request.max_tokens, per_slot - len(prompt))  # the context's end is a hard "length" stop
    scheduler.admit(request.id, prompt, Sampling(**request.sampling), request.stop, max_tokens)


def _final_piece(seq: _Sequence, sent: _Sent) -> Piece:
    """The rest of a finished sequence's text and its finish record."""
    reason = "length" if seq.result.finish_reason == "length" else "stop"
    return Piece(seq.result.text[sent.chars:], {"finish_reason": reason, "prompt_tokens": len(seq.prompt),
                                                "completion_tokens": len(seq.result.tokens)})


def _new_text(seq: _Sequence, sent: _Sent) -> str:
    """New text of a running sequence that is safe to send (no stop string can still start in it)."""
    whole = sum(len(c) for c in seq.chunks)
    safe = whole - seq.keep if seq.stop else whole
    if safe <= sent.chars:
        return ""
    joined = "".join(seq.chunks)  # chunks are merged so this stays short-lived
    seq.chunks[:] = [joined]
    text = joined[sent.chars:safe]
    sent.chars = safe
    return text
