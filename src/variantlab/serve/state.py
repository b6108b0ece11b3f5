"""What `serve` serves: its settings, the model loaded in its engine process, and the metrics every route updates."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..chat_template import TemplateRenderer
from ..engine import EngineSettings, ServingEngine
from ..errors import UsageError
from ..fit import FitRequest
from ..lock.lockfile import find_lockfile, read_lock
from ..lock.pins import resolve_draft_for_use, resolve_for_use
from ..modelfile import ModelFile, read_model_file
from ..store import ResolvedModel, Store


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
    lookup: bool = False  # speculative decoding from the prompt and reply (n-gram lookup)
    draft: str | None = None  # speculative decoding with this draft model (default: the one pinned with the role)
    no_draft: bool = False  # do not use the draft pinned with the role

    def checked(self) -> ServeConfig:
        if not 1 <= self.parallel <= 64:
            raise UsageError(f"--parallel {self.parallel} is out of range", hint="use 1 to 64")
        if not 64 <= self.ctx <= 131072:
            raise UsageError(f"--ctx {self.ctx} is out of range", hint="use 64 to 131072 tokens per request")
        if not 1 <= self.max_tokens_cap < self.ctx:
            raise UsageError(f"--max-tokens-cap {self.max_tokens_cap} must be at least 1 and below --ctx {self.ctx}")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port {self.port} is not a TCP port")
        if self.lookup and self.draft:
            raise UsageError("--lookup and --draft are two ways to guess tokens; a server uses one", hint="drop one of them")
        return self


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
    draft: ResolvedModel | None = None


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
    return resolve_for_use(ref, store=store, verify_hash=True, lock_path=path).refuse_twin("served"), ref if ref in roles else None


def start(ref: str | None, config: ServeConfig, store: Store | None = None) -> Served:
    """Load the model in its engine process and get it ready to serve."""
    config = config.checked()
    resolved, role = open_model(ref, config, store)
    info = read_model_file(resolved.path)
    settings = EngineSettings(n_ctx=config.ctx * config.parallel, n_seq_max=config.parallel, n_threads=config.threads)
    draft = None
    if not config.lookup and not config.no_draft:
        draft = resolve_draft_for_use(role or ref or resolved.label, resolved, config.draft,
                                      FitRequest(ctx=config.ctx * config.parallel, n_seq=config.parallel), store=store,
                                      verify_hash=True)
    if draft is not None:
        settings = replace(settings, draft_model=str(draft.path))
    speculate = "lookup" if config.lookup else "draft" if draft is not None else ""
    engine = ServingEngine(str(resolved.path), settings, config.parallel, speculate)
    engine.start()
    model_id = role or resolved.label
    aliases = {model_id, resolved.label, resolved.path.name}
    if resolved.manifest:
        aliases |= {resolved.manifest.name, resolved.manifest.file_name, resolved.manifest.sha256}
    specials = engine.specials
    renderer = (TemplateRenderer(info.chat_template, specials.get("bos", ""), specials.get("eos", ""))
                if info.chat_template else None)
    return Served(config, resolved, info, model_id, frozenset(aliases), role, engine, Metrics(config.parallel), renderer, draft)
