"""`serve`: the pinned model behind an OpenAI-compatible API (plus llama-server's ``/infill``): the app.

The model is resolved through the lock (the pinned blob, its hash checked before loading) and
runs in the one engine's child process; ``--parallel`` requests decode together in one batch
(the engine's scheduler). The HTTP side is FastAPI on uvicorn. Every bad request gets a 4xx
with an OpenAI-style error object, never a 500; the server binds to loopback by default,
sends no CORS permission, and checks an optional API key on every route but ``/health``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import TemplateRefused
from .responses import Job, chat_shape, completion_shape, infill_shape, respond
from .schema import ApiError, ChatRequest, CompletionRequest, InfillRequest, check_model, error_response, max_tokens, single_prompt, stops
from .state import ServeConfig, Served, start

__all__ = ["ServeConfig", "Served", "create_app", "start"]


def create_app(served: Served) -> FastAPI:
    """The ASGI app over a started model (the caller owns the engine's lifetime)."""
    app = FastAPI(title="variantlab serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    _install_error_handlers(app)
    app.add_middleware(_BodyLimit, limit=served.config.max_body_bytes)
    guard = [Depends(_api_key_checker(served.config.api_key))]

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = served.engine.alive  # the status alone: no model id or path for whoever asks without a key
        return JSONResponse({"status": "ok" if ok else "engine down"}, status_code=200 if ok else 503)

    @app.get("/v1/models", dependencies=guard)
    async def list_models() -> dict[str, Any]:
        m = served.resolved.manifest
        return {"object": "list", "data": [{"id": served.model_id, "object": "model", "owned_by": "variantlab",
                                            "created": int(served.resolved.path.stat().st_mtime),
                                            "sha256": m.sha256 if m else None, "file_type": served.info.file_type,
                                            "role": served.role, "context_per_request": served.config.ctx}]}

    @app.get("/metrics", dependencies=guard)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(served.metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions", dependencies=guard)
    async def completions(body: CompletionRequest) -> Any:
        check_model(body.model, served.model_id, served.aliases)
        prompt = body.prompt if isinstance(body.prompt, str) else single_prompt(body.prompt)
        if body.suffix is not None and not served.engine.has_fim:
            raise ApiError(400, f"{served.model_id} has no fill-in-the-middle tokens", param="suffix", code="infill_not_supported")
        fim = (prompt, body.suffix, ()) if body.suffix is not None else None
        job = Job(served, "completions", prompt="" if fim else prompt, add_special=fim is None, fim=fim,
                  max_tokens=max_tokens(body.max_tokens, served.config.max_tokens_cap), stop=stops(body.stop),
                  sampling=body.sampling())
        return await respond(job, body.stream, completion_shape(served))

    @app.post("/v1/chat/completions", dependencies=guard)
    async def chat(body: ChatRequest) -> Any:
        check_model(body.model, served.model_id, served.aliases)
        messages = [m.model_dump() for m in body.messages]
        prompt = await asyncio.get_running_loop().run_in_executor(None, render_messages, served, messages)
        job = Job(served, "chat", prompt=prompt, add_special=False, fim=None,
                  max_tokens=max_tokens(body.max_tokens, served.config.max_tokens_cap), stop=stops(body.stop),
                  sampling=body.sampling())
        usage_chunk = bool((body.stream_options or {}).get("include_usage"))
        return await respond(job, body.stream, chat_shape(served, usage_chunk))

    @app.post("/infill", dependencies=guard)
    async def infill(body: InfillRequest) -> Any:
        if not served.engine.has_fim:
            raise ApiError(400, f"{served.model_id} has no fill-in-the-middle tokens", code="infill_not_supported")
        wanted = body.n_predict if body.n_predict is not None else body.max_tokens
        cap = served.config.max_tokens_cap
        if wanted is not None and wanted > cap:
            raise ApiError(400, f"n_predict {wanted} exceeds this server's cap of {cap}", param="n_predict")
        extra = tuple((c.filename, c.text) for c in body.input_extra)
        job = Job(served, "infill", prompt=body.prompt or None, add_special=False, fim=(body.input_prefix, body.input_suffix, extra),
                  max_tokens=wanted if wanted and wanted > 0 else cap, stop=body.stop, sampling=body.sampling())
        return await respond(job, body.stream, infill_shape(served))

    return app


def render_messages(served: Served, messages: list[dict[str, str]]) -> str:
    """The conversation through the chat template inside the GGUF, in the renderer's child (time and memory budget)."""
    if served.renderer is None:
        raise ApiError(400, f"{served.model_id} has no chat template; use /v1/completions", code="chat_not_supported")
    try:
        return served.renderer.render(messages)
    except TemplateRefused as exc:
        raise ApiError(400, exc.message, param="messages", code="chat_template_refused") from None


def _api_key_checker(key: str | None) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                           kind="authentication_error", code="invalid_api_key")
    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _count(request, exc.status)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count(request, 400)
        errors = exc.errors()
        # a union (str | list[str]) reports each branch; a value our own checks refused says most
        first = next((e for e in errors if e.get("type") == "value_error"), errors[0] if errors else {})
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON", code="invalid_json")
        return error_response(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        _count(request, exc.status_code)
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:  # never a bare 500 page
        _count(request, 500)
        return error_response(500, f"internal error: {type(exc).__name__}", kind="server_error")


def _count(request: Request, status: int) -> None:
    served: Served = request.app.state.served
    served.metrics.requests.labels(route_label(request), str(status)).inc()


def route_label(request: Request) -> str:
    """The route's template ("/v1/completions"), never the raw path: every unknown URL would make a new series."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by header or by counting what arrives."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        # A body without a declared length (chunked) is read here, up to the limit, before the app sees it,
        # so one over the limit gets the same 413 (an error raised inside the app's body parsing became a 400).
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, f"the request body is over {limit} bytes", code="request_too_large")
