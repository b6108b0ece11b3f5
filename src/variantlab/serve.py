"""`serve`: the pinned model behind an OpenAI-compatible API (plus llama-server's ``/infill``).

The model is resolved through the lock (the pinned blob, its hash checked before loading) and
runs in the one engine's child process; ``--parallel`` requests decode together in one batch
(``engine/serving.py``). The HTTP side is FastAPI on uvicorn. Every bad request gets a 4xx
with an OpenAI-style error object, never a 500; the server binds to loopback by default,
sends no CORS permission, and checks an optional API key on every route but ``/health``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .chat_template import TemplateRefused, TemplateRenderer
from .engine import EngineSettings
from .engine.serving import Piece, ServingEngine
from .errors import UsageError
from .lock.pins import resolve_for_use
from .lock.lockfile import find_lockfile, read_lock
from .modelfile import ModelFile, read_model_file
from .store import ResolvedModel, Store


@dataclass(frozen=True)
class ServeConfig:
    """How to serve: where, how many requests at once, how long each may be, who may ask."""

    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 4
    ctx: int = 4096  # tokens of context per request (prompt + output)
    max_tokens_cap: int = 512  # the most tokens one request may generate; also the default
    max_body_bytes: int = 1 << 20
    api_key: str | None = None
    threads: int | None = None

    def checked(self) -> ServeConfig:
        if not 1 <= self.parallel <= 64:
            raise UsageError(f"--parallel {self.parallel} is out of range", hint="use 1 to 64")
        if not 64 <= self.ctx <= 131072:
            raise UsageError(f"--ctx {self.ctx} is out of range", hint="use 64 to 131072 tokens per request")
        if not 1 <= self.max_tokens_cap < self.ctx:
            raise UsageError(f"--max-tokens-cap {self.max_tokens_cap} must be at least 1 and below --ctx {self.ctx}")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port {self.port} is not a TCP port")
        return self


# -- requests -------------------------------------------------------------------------------------

def _encodable(text: str) -> str:
    """Refuse text that is not Unicode the engine can encode (a lone surrogate such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds a lone surrogate at character {exc.start}; send valid Unicode text") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]  # every string a request hands to the engine


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Sampling(_Strict):
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = Field(0.8, ge=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(40, ge=0, le=1000)
    seed: int | None = None
    stop: Text | list[Text] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


class CompletionRequest(_Sampling):
    prompt: Text | list[Text]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    stream_options: dict[str, Any] | None = None


class InfillRequest(_Strict):
    """llama-server's /infill shape, as editor plugins send it."""

    input_prefix: Text
    input_suffix: Text = ""
    prompt: Text = ""
    n_predict: int | None = None
    max_tokens: int | None = None
    temperature: float = Field(0.0, ge=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(40, ge=0, le=1000)
    seed: int | None = None
    stop: list[Text] = Field(default_factory=list)
    stream: bool = False


class ApiError(Exception):
    """A request the server refuses: HTTP status plus the OpenAI error object's fields."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, kind=self.kind, param=self.param, code=self.code)


def error_response(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


# -- the served model -------------------------------------------------------------------------------

@dataclass
class Served:
    """What the server serves and the state every route shares."""

    config: ServeConfig
    resolved: ResolvedModel
    info: ModelFile
    model_id: str
    aliases: frozenset[str]
    role: str | None
    engine: ServingEngine
    metrics: Metrics
    renderer: TemplateRenderer | None = None


class Metrics:
    """Prometheus counters: requests, tokens, requests in flight, the queue, latency."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.registry = CollectorRegistry()
        self.requests = Counter("variantlab_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry)
        self.prompt_tokens = Counter("variantlab_prompt_tokens", "prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter("variantlab_completion_tokens", "tokens generated", registry=self.registry)
        self.in_flight = Gauge("variantlab_requests_in_flight", "generation requests being served or queued", registry=self.registry)
        self.queue = Gauge("variantlab_queue_length", "generation requests waiting for a free slot", registry=self.registry)
        self.latency = Histogram("variantlab_request_seconds", "time from request to last token", ["route"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self._active = 0

    def begin(self) -> None:
        self._active += 1
        self.in_flight.set(self._active)
        self.queue.set(max(0, self._active - self.slots))

    def end(self) -> None:
        self._active -= 1
        self.in_flight.set(self._active)
        self.queue.set(max(0, self._active - self.slots))


def open_model(ref: str | None, config: ServeConfig, store: Store | None = None) -> tuple[ResolvedModel, str | None]:
    """The file to serve: a role or name, through the lock, hash checked now; or the lock's only role."""
    path = find_lockfile()
    roles = read_lock(path).roles if path else {}
    if ref is None:
        if len(roles) != 1:
            raise UsageError("name the role or model to serve" + (f" (the lock has {', '.join(roles)})" if roles else ""),
                             hint="for example `variantlab serve chat`")
        ref = next(iter(roles))
    return resolve_for_use(ref, store=store, verify_hash=True, lock_path=path), ref if ref in roles else None


def start(ref: str | None, config: ServeConfig, store: Store | None = None) -> Served:
    """Load the model in its engine process and get it ready to serve."""
    config = config.checked()
    resolved, role = open_model(ref, config, store)
    info = read_model_file(resolved.path)
    settings = EngineSettings(n_ctx=config.ctx * config.parallel, n_seq_max=config.parallel, n_threads=config.threads)
    engine = ServingEngine(str(resolved.path), settings, config.parallel)
    engine.start()
    model_id = role or resolved.label
    aliases = {model_id, resolved.label, resolved.path.name}
    if resolved.manifest:
        aliases |= {resolved.manifest.name, resolved.manifest.file_name, resolved.manifest.sha256}
    specials = engine.specials
    renderer = (TemplateRenderer(info.chat_template, specials.get("bos", ""), specials.get("eos", ""))
                if info.chat_template else None)
    return Served(config, resolved, info, model_id, frozenset(aliases), role, engine, Metrics(config.parallel), renderer)


# -- the app ------------------------------------------------------------------------------------------

def create_app(served: Served) -> FastAPI:
    """The ASGI app over a started model (the caller owns the engine's lifetime)."""
    app = FastAPI(title="variantlab serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    _install_error_handlers(app)
    app.add_middleware(_BodyLimit, limit=served.config.max_body_bytes)  # type: ignore[arg-type]
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
        _check_model(served, body.model)
        prompt = body.prompt if isinstance(body.prompt, str) else _single(body.prompt)
        job = _Job(served, "completions", prompt=prompt, add_special=True, fim=None,
                   max_tokens=_max_tokens(served, body.max_tokens), stop=_stops(body.stop), sampling=_sampling(body))
        return await _respond(job, body.stream, _completion_shape(served))

    @app.post("/v1/chat/completions", dependencies=guard)
    async def chat(body: ChatRequest) -> Any:
        _check_model(served, body.model)
        messages = [m.model_dump() for m in body.messages]
        prompt = await asyncio.get_running_loop().run_in_executor(None, render_messages, served, messages)
        job = _Job(served, "chat", prompt=prompt, add_special=False, fim=None,
                   max_tokens=_max_tokens(served, body.max_tokens), stop=_stops(body.stop), sampling=_sampling(body))
        usage_chunk = bool((body.stream_options or {}).get("include_usage"))
        return await _respond(job, body.stream, _chat_shape(served, usage_chunk))

    @app.post("/infill", dependencies=guard)
    async def infill(body: InfillRequest) -> Any:
        if not served.engine.has_fim:
            raise ApiError(400, f"{served.model_id} has no fill-in-the-middle tokens", code="infill_not_supported")
        wanted = body.n_predict if body.n_predict is not None else body.max_tokens
        cap = served.config.max_tokens_cap
        if wanted is not None and wanted > cap:
            raise ApiError(400, f"n_predict {wanted} exceeds this server's cap of {cap}", param="n_predict")
        job = _Job(served, "infill", prompt=body.prompt or None, add_special=False, fim=(body.input_prefix, body.input_suffix),
                   max_tokens=wanted if wanted and wanted > 0 else cap, stop=body.stop,
                   sampling={"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
                             "seed": body.seed if body.seed is not None else 1234})
        return await _respond(job, body.stream, _infill_shape(served))

    return app


def render_messages(served: Served, messages: list[dict[str, str]]) -> str:
    """The conversation through the chat template inside the GGUF, in the renderer's child (time and memory budget)."""
    if served.renderer is None:
        raise ApiError(400, f"{served.model_id} has no chat template; use /v1/completions", code="chat_not_supported")
    try:
        return served.renderer.render(messages)
    except TemplateRefused as exc:
        raise ApiError(400, exc.message, param="messages", code="chat_template_refused") from None


def _single(prompts: list[str]) -> str:
    if len(prompts) != 1:
        raise ApiError(400, f"this server takes one prompt per request, not {len(prompts)}", param="prompt")
    return prompts[0]


def _check_model(served: Served, model: str | None) -> None:
    if model is not None and model not in served.aliases:
        raise ApiError(404, f"the model {model!r} does not exist here; this server serves {served.model_id!r}",
                       param="model", code="model_not_found")


def _max_tokens(served: Served, wanted: int | None) -> int:
    cap = served.config.max_tokens_cap
    if wanted is None:
        return cap
    if wanted < 1:
        raise ApiError(400, f"max_tokens must be at least 1, not {wanted}", param="max_tokens")
    if wanted > cap:
        raise ApiError(400, f"max_tokens {wanted} exceeds this server's cap of {cap}", param="max_tokens")
    return wanted


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise ApiError(400, "stop takes up to 4 non-empty strings", param="stop")
    return stops


def _sampling(body: _Sampling) -> dict[str, Any]:
    return {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k,
            "seed": body.seed if body.seed is not None else 1234}


# -- running a request ---------------------------------------------------------------------------------

@dataclass
class _Job:
    served: Served
    route: str
    prompt: str | None
    add_special: bool
    fim: tuple[str, str] | None
    max_tokens: int
    stop: list[str]
    sampling: dict[str, Any]

    async def pieces(self) -> AsyncIterator[Piece]:
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


async def _respond(job: _Job, stream: bool, shape: Shape) -> Any:
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


async def _first_piece(pieces: AsyncIterator[Piece], metrics: Metrics, route: str, started: float) -> Piece:
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


def _completion_shape(served: Served) -> Shape:
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


def _chat_shape(served: Served, usage_chunk: bool) -> Shape:
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


def _infill_shape(served: Served) -> Shape:
    def whole(text: str, done: dict[str, Any]) -> dict[str, Any]:
        return {"content": text, "stop": True, "model": served.model_id, "stop_type": done.get("finish_reason"),
                "tokens_predicted": done.get("completion_tokens"), "tokens_evaluated": done.get("prompt_tokens")}

    def chunk(text: str, kind: str, done: dict[str, Any] | None) -> list[dict[str, Any]]:
        if kind == "start":
            return []
        return [{"content": text, "stop": done is not None, **({"stop_type": done["finish_reason"]} if done else {})}]

    return whole, chunk


# -- guards ----------------------------------------------------------------------------------------------

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
    served.metrics.requests.labels(request.url.path, str(status)).inc()


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
