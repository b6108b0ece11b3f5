"""How `serve` answers: a request's pieces from the engine, whole or as a server-sent event stream,
in the shape of its route (OpenAI completions, chat completions, llama-server's /infill)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from ..engine import Piece
from .schema import ApiError
from .state import Metrics, Served


@dataclass
class Job:
    served: Served
    route: str
    prompt: str | None
    add_special: bool
    fim: tuple[str, str, tuple[tuple[str, str], ...]] | None
    max_tokens: int
    stop: list[str]
    sampling: dict[str, Any]

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        """The request's text as it comes; the slot is freed if the consumer stops early."""
        served = self.served
        if not served.engine.alive:
            raise ApiError(503, "the engine process is not running", kind="server_error")
        request_id, queue = served.engine.submit(prompt=self.prompt, max_tokens=self.max_tokens, stop=self.stop,
                                                 sampling=self.sampling, fim=self.fim, add_special=self.add_special)
        finished = False
        try:
            while True:
                piece = await queue.get()
                if piece.done is not None:
                    finished = True
                    if "error" in piece.done:
                        status = piece.done["status"]
                        raise ApiError(status, piece.done["error"], code=piece.done["code"],
                                       kind="server_error" if status >= 500 else "invalid_request_error")
                    served.metrics.prompt_tokens.inc(piece.done["prompt_tokens"])
                    served.metrics.completion_tokens.inc(piece.done["completion_tokens"])
                yield piece
                if finished:
                    return
        finally:
            if finished:
                served.engine.finished(request_id)
            else:
                served.engine.cancel(request_id)


Shape = tuple[Callable[[str, dict[str, Any]], dict[str, Any]], Callable[[str, str, dict[str, Any] | None], list[dict[str, Any]]]]


async def respond(job: Job, stream: bool, shape: Shape) -> Any:
    whole, chunk = shape
    metrics = job.served.metrics
    started = time.perf_counter()
    metrics.begin()
    pieces = job.pieces()
    if not stream:
        try:
            texts, done = [], None
            async for piece in pieces:
                texts.append(piece.text)
                done = piece.done
            metrics.requests.labels(job.route, "200").inc()
            return whole("".join(texts), done or {})
        finally:
            metrics.end()
            metrics.latency.labels(job.route).observe(time.perf_counter() - started)
    first = await _first_piece(pieces, metrics, job.route, started)  # an error before the stream is a plain 4xx

    async def events() -> AsyncIterator[str]:
        try:
            for event in chunk("", "start", None):
                yield f"data: {json.dumps(event)}\n\n"
            piece: Piece | None = first
            while piece is not None:
                for event in chunk(piece.text, "piece", piece.done):
                    yield f"data: {json.dumps(event)}\n\n"
                piece = None if piece.done is not None else await anext(pieces, None)
            yield "data: [DONE]\n\n"
            metrics.requests.labels(job.route, "200").inc()
        except ApiError as exc:  # the engine died mid-stream: say so in the stream
            yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.kind}})}\n\n"
        finally:
            await pieces.aclose()
            metrics.end()
            metrics.latency.labels(job.route).observe(time.perf_counter() - started)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _first_piece(pieces: AsyncGenerator[Piece, None], metrics: Metrics, route: str, started: float) -> Piece:
    try:
        return await anext(pieces)
    except BaseException:
        metrics.end()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        raise


def _usage(done: dict[str, Any] | None) -> dict[str, int] | None:
    if not done:
        return None
    return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
            "total_tokens": done["prompt_tokens"] + done["completion_tokens"]}


def completion_shape(served: Served) -> Shape:
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def whole(text: str, done: dict[str, Any]) -> dict[str, Any]:
        return {"id": ident, "object": "text_completion", "created": created, "model": served.model_id,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": done.get("finish_reason")}],
                "usage": _usage(done)}

    def chunk(text: str, kind: str, done: dict[str, Any] | None) -> list[dict[str, Any]]:
        if kind == "start":
            return []
        return [{"id": ident, "object": "text_completion", "created": created, "model": served.model_id,
                 "choices": [{"index": 0, "text": text, "logprobs": None,
                              "finish_reason": done["finish_reason"] if done else None}],
                 **({"usage": _usage(done)} if done else {})}]

    return whole, chunk


def chat_shape(served: Served, usage_chunk: bool) -> Shape:
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": served.model_id}

    def whole(text: str, done: dict[str, Any]) -> dict[str, Any]:
        return {"id": ident, "object": "chat.completion", "created": created, "model": served.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": done.get("finish_reason")}], "usage": _usage(done)}

    def chunk(text: str, kind: str, done: dict[str, Any] | None) -> list[dict[str, Any]]:
        if kind == "start":
            return [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
        events = []
        if text:
            events.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        if done:
            events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": done["finish_reason"]}]})
            if usage_chunk:
                events.append({**base, "choices": [], "usage": _usage(done)})
        return events

    return whole, chunk


def infill_shape(served: Served) -> Shape:
    def whole(text: str, done: dict[str, Any]) -> dict[str, Any]:
        return {"content": text, "stop": True, "model": served.model_id, "stop_type": done.get("finish_reason"),
                "tokens_predicted": done.get("completion_tokens"), "tokens_evaluated": done.get("prompt_tokens")}

    def chunk(text: str, kind: str, done: dict[str, Any] | None) -> list[dict[str, Any]]:
        if kind == "start":
            return []
        return [{"content": text, "stop": done is not None, **({"stop_type": done["finish_reason"]} if done else {})}]

    return whole, chunk
