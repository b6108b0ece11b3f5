"""`bench`: the standardized speed and resource test, at parity with llama-bench.

Each model runs in a fresh engine process (one measurement cannot warm or pollute another).
Per repetition, as llama-bench does: a prompt of ``n_prompt`` random tokens from an empty
cache (prompt tokens/s; time to first token adds the first sampled token), then ``n_gen``
tokens generated one at a time from an empty cache (generation tokens/s), after one
warm-up of each. Load time is measured ``reps`` times in the same process. Every run,
failed ones too, goes into the results database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from typing import Any

from . import __version__
from .engine import EngineCrashed, EngineError, EngineProcess, EngineSettings, filler_prompt, is_openai_spec, resolve_endpoint, system_info, time_completion
from .errors import UsageError
from .files import ProgressFn, no_progress
from .fit import Estimate, FitRequest, fit
from .hardware import machine_facts, memory_bandwidth
from .knowledge import load_data
from .lock.pins import resolve_draft_for_use, resolve_for_use
from .modelfile import read_model_file
from .results import Metric, ResultsDB, Run
from .store import ResolvedModel, Store

SPECULATION_CTX = 512  # room for the speculation test's code prompt (bench_prompts.toml), before its --gen tokens


@dataclass(frozen=True)
class BenchPlan:
    """What to measure: prompt and generation lengths, repetitions, engine settings."""

    n_prompt: int = 512
    n_gen: int = 128
    reps: int = 5
    settings: EngineSettings = EngineSettings()
    explicit_ctx: bool = False  # False: the context is n_depth + n_prompt + n_gen, as in llama-bench
    n_depth: int = 0  # tokens already in the KV cache when each test starts (llama-bench -d)
    speculate: str = ""  # "lookup" or "draft": also time greedy generation of a code prompt with and without it
    draft: str | None = None  # the draft model (a model reference) for "draft"
    mem_bytes: int | None = None  # the memory the target and its draft must fit in (None: RAM available now)

    def checked(self) -> BenchPlan:
        if self.reps < 1 or self.reps > 1000:
            raise UsageError(f"--reps {self.reps} is out of range", hint="use 1 to 1000")
        if self.n_prompt < 0 or self.n_gen < 0 or self.n_prompt + self.n_gen == 0:
            raise UsageError("--prompt and --gen must be ≥ 0 and not both 0")
        if self.n_depth < 0:
            raise UsageError(f"--depth {self.n_depth} is negative", hint="give the tokens already in the cache, 0 or more")
        needed = self.n_depth + max(self.n_prompt, self.n_gen)
        if self.explicit_ctx and self.settings.n_ctx < needed:
            raise UsageError(f"--ctx {self.settings.n_ctx} cannot hold --depth {self.n_depth} plus the test's {needed - self.n_depth} tokens",
                             hint=f"use --ctx {needed} or more, or leave --ctx out")
        if self.speculate not in ("", "lookup", "draft") or (self.speculate == "draft") != bool(self.draft):
            raise UsageError("speculation is --lookup or --draft MODEL, one of them")
        if self.speculate and self.n_gen < 16:
            raise UsageError(f"--gen {self.n_gen} is too short to time speculation", hint="use --gen 64 or more")
        total = self.n_depth + self.n_prompt + self.n_gen
        if self.speculate:
            total = max(total, SPECULATION_CTX + self.n_gen)
        settings = self.settings if self.explicit_ctx else replace(self.settings, n_ctx=max(16, total))
        return replace(self, settings=settings.resolved())

    def recorded(self) -> dict[str, Any]:
        """The settings a bench run records (and a resumed ladder matches): engine settings plus the test."""
        found = {**self.settings.to_dict(), "n_prompt": self.n_prompt, "n_gen": self.n_gen, "reps": self.reps,
                 "n_depth": self.n_depth}
        if self.speculate:
            found["speculate"] = self.speculate
        return found


@dataclass(frozen=True)
class BenchResult:
    """One model's bench: medians of the repetitions, their spreads (``spread[figure]``: min, max,
    stdev, n), and what the numbers were measured with. A model that failed has ``status`` "failed"
    and its ``error``; a server benched over HTTP (``backend`` "openai") has no load time or memory."""

    model: str
    status: str
    run_id: int | None
    error: str | None = None
    backend: str = "llama.cpp"
    model_sha256: str | None = None
    file_type: str | None = None
    load_s: float | None = None
    ttft_s: float | None = None
    prompt_tokens_per_s: float | None = None
    gen_tokens_per_s: float | None = None
    peak_rss_bytes: int | None = None
    peak_vram_bytes: int | None = None
    bandwidth_fraction: float | None = None
    ceiling_tokens_per_s: float | None = None
    bandwidth_bytes_per_s: float | None = None
    bytes_read_per_token: int | None = None
    reps: int | None = None
    threads: int | None = None
    n_prompt: int | None = None
    n_gen: int | None = None
    n_depth: int = 0
    depth_fill: str | None = None  # "decoded" (as llama-bench) or "written" (a twin's cells written as state)
    ctx: int | None = None
    prompt_tokens: int | None = None
    spread: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine_version: str | None = None
    note: str | None = None
    twin_of: str | None = None  # measured on a twin (random weights) of this variant
    speculation: dict[str, Any] | None = None  # --lookup / --draft: the code prompt's speeds with and without, and the counts
    node: str | None = None  # bench --cluster: the node that measured it (host, address, Ray node id)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return asdict(self)


def engine_version(system_info: str) -> str:
    return f"llama-cpp-python {version('llama-cpp-python')} | {system_info.strip()}"


def current_engine_version() -> str:
    """The engine build a measurement made now would record: an older result is not comparable to it."""
    return engine_version(system_info())


def bench_models(refs: list[str], plan: BenchPlan, *, store: Store | None = None, db: ResultsDB | None = None,
                 progress: ProgressFn = no_progress, api_model: str | None = None,
                 api_key: str | None = None, verify_hash: bool = False) -> list[BenchResult]:
    """Bench each model in turn; a model that fails is recorded as failed and the rest go on.

    A ref ``openai:URL[#MODEL]`` benches a running OpenAI-compatible server instead.
    """
    plan = plan.checked()
    store = store or Store()
    # every name is resolved before anything runs: a misspelt third name fails at once
    # a role of the lock in force resolves to its pinned blob, hash-checked before loading
    resolved = {ref: resolve_for_use(ref, store=store, verify_hash=verify_hash) for ref in refs if not is_openai_spec(ref)}
    if plan.speculate and len(resolved) < len(refs):
        raise UsageError("--lookup/--draft time variantlab's engine; a server decides its own speculation", hint="drop them for openai: models")
    drafts = {ref: resolve_draft_for_use(ref, r, plan.draft, FitRequest(ctx=plan.settings.n_ctx, ram_bytes=plan.mem_bytes),
                                         store=store, verify_hash=verify_hash)
              for ref, r in resolved.items()} if plan.draft else {}
    bandwidth = memory_bandwidth()
    hardware = machine_facts()
    own_db = db is None
    db = db or ResultsDB()
    try:
        return [
            _bench_openai(ref, plan, db, hardware, progress, api_model, api_key) if is_openai_spec(ref)
            else _bench_one(resolved[ref], plan, db, hardware, bandwidth, progress, drafts.get(ref))
            for ref in refs
        ]
    finally:
        if own_db:
            db.close()


def _bench_one(resolved: ResolvedModel, plan: BenchPlan, db: ResultsDB, hardware: dict[str, Any],
               bandwidth: float, progress: ProgressFn, draft: ResolvedModel | None = None) -> BenchResult:
    info = read_model_file(resolved.path)
    if info.context_length and plan.settings.n_ctx > info.context_length:
        raise UsageError(f"context {plan.settings.n_ctx} exceeds {resolved.label}'s maximum of {info.context_length} tokens")
    sha = resolved.manifest.sha256 if resolved.manifest else None
    settings = plan.recorded()
    if resolved.manifest and resolved.manifest.synthetic:  # a twin: its figures are the variant's, labelled so
        settings["twin_of"] = resolved.manifest.synthetic.get("variant")
        settings["twin_generator"] = resolved.manifest.synthetic.get("generator")  # its blocks' recipe
    if draft is not None:
        settings.update(draft_model=draft.label, draft_sha256=draft.manifest.sha256 if draft.manifest else None)
        plan = replace(plan, settings=replace(plan.settings, draft_model=str(draft.path)))
    run = Run(kind="bench", model=resolved.label, backend="llama.cpp", settings=settings, hardware=hardware,
              variantlab_version=__version__, model_sha256=sha, file_type=info.file_type)
    try:
        measured, run.engine_version = _measure(str(resolved.path), plan, f"bench {resolved.label}", progress,
                                                synthetic_depth="twin_of" in settings)
    except (EngineError, EngineCrashed) as exc:
        run.status, run.error = "failed", exc.message
        db.record(run)
        return BenchResult(resolved.label, "failed", run.id, error=exc.message)
    per_token = info.bytes_read_per_token
    gen = measured["gen_tokens_per_s"]
    run.metrics = {
        "load_s": Metric.of("load_s", measured["load_s"], "s"),
        "ttft_s": Metric.of("ttft_s", measured["ttft_s"], "s"),
        "prompt_tokens_per_s": Metric.of("prompt_tokens_per_s", measured["prompt_tokens_per_s"], "tokens/s"),
        "gen_tokens_per_s": Metric.of("gen_tokens_per_s", gen, "tokens/s"),
        "peak_rss_bytes": Metric.of("peak_rss_bytes", [measured["peak_rss_bytes"]], "bytes"),
        "bandwidth_fraction": Metric.of("bandwidth_fraction", [g * per_token / bandwidth for g in gen], "ratio"),
        "ceiling_tokens_per_s": Metric.of("ceiling_tokens_per_s", [bandwidth / per_token], "tokens/s"),
    }
    if plan.n_depth:
        run.settings["depth_fill"] = measured["depth_fill"]
    if "speculation" in measured:
        run.metrics.update(_speculation_metrics(measured["speculation"]))
    db.record(run)
    return summary(run, bandwidth, per_token)


def _measure(path: str, plan: BenchPlan, label: str, progress: ProgressFn,
             synthetic_depth: bool = False) -> tuple[dict[str, Any], str]:
    """Load, warm up as llama-bench does, then ``plan.reps`` of each test. ``synthetic_depth``
    (twins): the depth's cells are written, not decoded (engine/kv_state.py)."""
    steps = plan.reps + 2
    found: dict[str, Any] = {"ttft_s": [], "prompt_tokens_per_s": [], "gen_tokens_per_s": []}
    progress(label, 0, steps)
    with EngineProcess(path, plan.settings) as engine:
        found["load_s"] = [engine.load_s]
        progress(label, 1, steps)
        depth = plan.n_depth
        if plan.n_prompt:
            engine.call("time_prompt", n_prompt=plan.n_prompt, seed=0, depth=depth, synthetic_depth=synthetic_depth)  # warm-up
        if plan.n_gen:
            engine.call("time_generation", n_gen=1, depth=depth, synthetic_depth=synthetic_depth)
        progress(label, 2, steps)
        for rep in range(plan.reps):
            if plan.n_prompt:
                prompt_s, ttft = engine.call("time_prompt", n_prompt=plan.n_prompt, seed=rep + 1, depth=depth,
                                             synthetic_depth=synthetic_depth)
                found["prompt_tokens_per_s"].append(plan.n_prompt / prompt_s)
                found["ttft_s"].append(ttft)
            if plan.n_gen:
                seconds = engine.call("time_generation", n_gen=plan.n_gen, depth=depth, synthetic_depth=synthetic_depth)
                found["gen_tokens_per_s"].append(plan.n_gen / seconds)
            progress(label, rep + 3, steps)
        if plan.speculate:
            found["speculation"] = _time_speculation(engine, plan, label, progress)
        info = engine.call("info")  # peak memory before the extra loads below, which overlap the first
        found["load_s"] += engine.call("reload_times", times=plan.reps - 1)
    found["peak_rss_bytes"] = info["peak_rss_bytes"]
    found["depth_fill"] = info["depth_fill"]
    return found, engine_version(info["system_info"])


def _time_speculation(engine: EngineProcess, plan: BenchPlan, label: str, progress: ProgressFn) -> list[dict[str, Any]]:
    """Greedy generation of ``plan.n_gen`` tokens from the code prompt, without and with
    speculation in turn, ``plan.reps`` times (after one warm-up of each): each pair's speeds,
    counts and whether the two outputs are the same tokens."""
    prompt = engine.call("tokenize", text=load_data("bench_prompts.toml")["speculation"]["text"])
    pairs = []
    for rep in range(plan.reps + 1):
        progress(f"{label}: speculation", rep, plan.reps + 1)
        plain = engine.call("generate", prompt=prompt, max_tokens=plan.n_gen, sampling={})
        fast = engine.call("generate", prompt=prompt, max_tokens=plan.n_gen, sampling={"speculate": plan.speculate})
        if rep:  # the first pair warms up
            pairs.append({"plain": plain, "fast": fast})
    progress(f"{label}: speculation", plan.reps + 1, plan.reps + 1)
    return pairs


def _speculation_metrics(pairs: list[dict[str, Any]]) -> dict[str, Metric]:
    """Speeds after the first token (tokens ÷ seconds), the speed-up of each pair, the share of
    guessed tokens the target kept, tokens per target pass, and identical outputs (1) or not (0)."""
    def speed(g: dict[str, Any]) -> float:
        return (len(g["tokens"]) - 1) / g["gen_s"]

    fast = [p["fast"] for p in pairs]
    return {
        "code_gen_tokens_per_s": Metric.of("code_gen_tokens_per_s", [speed(p["plain"]) for p in pairs], "tokens/s"),
        "spec_gen_tokens_per_s": Metric.of("spec_gen_tokens_per_s", [speed(g) for g in fast], "tokens/s"),
        "spec_speedup": Metric.of("spec_speedup", [speed(p["fast"]) / speed(p["plain"]) for p in pairs], "ratio"),
        "spec_acceptance": Metric.of("spec_acceptance", [g["accepted"] / g["drafted"] if g["drafted"] else 0.0 for g in fast], "ratio"),
        "spec_tokens_per_pass": Metric.of("spec_tokens_per_pass", [(len(g["tokens"]) - 1) / max(1, g["passes"]) for g in fast], "tokens"),
        "spec_identical": Metric.of("spec_identical", [float(p["fast"]["tokens"] == p["plain"]["tokens"]) for p in pairs], "ratio"),
    }


def _bench_openai(ref: str, plan: BenchPlan, db: ResultsDB, hardware: dict[str, Any], progress: ProgressFn,
                  api_model: str | None, api_key: str | None) -> BenchResult:
    """Time a server's streamed completions; load time and memory are the server's, not measured."""
    endpoint = resolve_endpoint(ref, api_model, api_key)
    if plan.n_gen < 2:
        raise UsageError("an OpenAI endpoint is timed from its stream: use --gen 2 or more")
    settings = {"n_prompt": plan.n_prompt, "n_gen": plan.n_gen, "reps": plan.reps, "endpoint": endpoint.base_url}
    run = Run(kind="bench", model=endpoint.label, backend="openai", settings=settings, hardware=hardware,
              variantlab_version=__version__, engine_version=f"openai-compatible server at {endpoint.base_url}")
    prompt = filler_prompt(plan.n_prompt)
    samples: list[dict[str, float | None]] = []
    time_completion(endpoint, prompt, 2)  # warm-up: the server may load the model on first use
    for rep in range(plan.reps):
        progress(f"bench {endpoint.label}", rep, plan.reps)
        samples.append(time_completion(endpoint, prompt, plan.n_gen))
    run.metrics = {  # a figure the server does not report (prompt tokens) is left out, not zeroed
        name: Metric.of(name, [v for s in samples if (v := s[name]) is not None], unit)
        for name, unit in (("ttft_s", "s"), ("gen_tokens_per_s", "tokens/s"), ("prompt_tokens_per_s", "tokens/s (estimate)"))
    }
    db.record(run)
    med, spread = _medians_and_spreads(run)
    prompt_tokens = samples[-1]["prompt_tokens"]
    return BenchResult(endpoint.label, "ok", run.id, backend="openai", ttft_s=med["ttft_s"],
                       prompt_tokens_per_s=med["prompt_tokens_per_s"], gen_tokens_per_s=med["gen_tokens_per_s"],
                       reps=plan.reps, n_prompt=plan.n_prompt, n_gen=plan.n_gen,
                       prompt_tokens=int(prompt_tokens) if prompt_tokens is not None else None, spread=spread,
                       engine_version=run.engine_version,
                       note="timed from the stream: prompt tokens/s is prompt tokens ÷ TTFT, network included")


def _medians_and_spreads(run: Run) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    """Each metric's median, and its spread (min, max, stdev, n), as the JSON reports them."""
    medians = {name: m.median for name, m in run.metrics.items()}
    spreads = {name: {"min": m.min, "max": m.max, "stdev": m.stdev, "n": m.n} for name, m in run.metrics.items()}
    return medians, spreads


def summary(run: Run, bandwidth: float, bytes_per_token: int) -> BenchResult:
    """One bench result from its recorded run: medians at the top level, spreads beside them."""
    med, spread = _medians_and_spreads(run)
    return BenchResult(
        run.model, run.status, run.id, model_sha256=run.model_sha256, file_type=run.file_type,
        load_s=med["load_s"], ttft_s=med["ttft_s"], prompt_tokens_per_s=med["prompt_tokens_per_s"],
        gen_tokens_per_s=med["gen_tokens_per_s"], peak_rss_bytes=int(med["peak_rss_bytes"] or 0),
        bandwidth_fraction=med["bandwidth_fraction"], ceiling_tokens_per_s=med["ceiling_tokens_per_s"],
        bandwidth_bytes_per_s=bandwidth, bytes_read_per_token=bytes_per_token, reps=run.settings["reps"],
        threads=run.settings["n_threads"], n_prompt=run.settings["n_prompt"], n_gen=run.settings["n_gen"],
        ctx=run.settings["n_ctx"], spread=spread, engine_version=run.engine_version,
        n_depth=run.settings.get("n_depth", 0), depth_fill=run.settings.get("depth_fill"), twin_of=run.settings.get("twin_of"),
        speculation=_speculation_summary(run, med),
    )


SPECULATION_FIGURES = ("code_gen_tokens_per_s", "spec_gen_tokens_per_s", "spec_speedup", "spec_acceptance",
                       "spec_tokens_per_pass", "spec_identical")


def _speculation_summary(run: Run, med: dict[str, float | None]) -> dict[str, Any] | None:
    if "spec_speedup" not in run.metrics:
        return None
    return {"method": run.settings.get("speculate"), "draft_model": run.settings.get("draft_model"),
            **{name: med[name] for name in SPECULATION_FIGURES}}




@dataclass(frozen=True)
class SpeedUp:
    """The measured speed-up of greedy generation with speculative decoding, for pick and the ladder's table."""

    speedup: float
    method: str  # "lookup" or "draft"
    draft_model: str | None
    run_id: int

    def describe(self) -> str:
        how = f"draft {self.draft_model}" if self.method == "draft" else "prompt lookup"
        return f"×{self.speedup:.2f} with {how} (bench run {self.run_id})"


def measured_speedup(db: ResultsDB, sha256: str | None) -> SpeedUp | None:
    """The latest speculation bench of this file on this engine (its own figure: a single-stream
    speed-up on the code prompt, not a change to the plain generation speed)."""
    if not sha256:
        return None
    for run in db.runs(kind="bench", model_sha256=sha256, limit=50):
        metric = run.metrics.get("spec_speedup")
        if run.status == "ok" and metric is not None and metric.median is not None and run.id is not None:
            return SpeedUp(float(metric.median), str(run.settings.get("speculate")), run.settings.get("draft_model"), run.id)
    return None


@dataclass(frozen=True)
class MeasuredFit:
    """``fit --measure``: the estimate beside the peak memory of a real load at that context."""

    estimate: Estimate
    bench: BenchResult

    @property
    def error(self) -> float | None:
        """Estimate ÷ measured − 1 (positive: the estimate is high)."""
        peak = self.bench.peak_rss_bytes
        return self.estimate.total_bytes / peak - 1 if peak else None

    def to_dict(self) -> dict[str, Any]:
        return {**self.estimate.to_dict(), "measured": self.bench.to_dict(), "estimate_error": self.error}


def fit_measured(ref: str, request: FitRequest, *, store: Store | None = None, db: ResultsDB | None = None,
                 progress: ProgressFn = no_progress, label: str | None = None) -> MeasuredFit:
    """Load ``ref`` at the request's context, run a prompt and a few tokens, and report the peak
    memory beside the estimate: the KV cache is cleared at load, so the peak holds it whole.
    The load is without mmap, as the estimate counts (each weight resident once: with mmap, the
    page cache's copy of a tensor llama.cpp repacks for this CPU would count a second time)."""
    request = request.checked()
    est = fit(ref, request, store)
    plan = BenchPlan(n_prompt=min(512, request.ctx - 16), n_gen=16, reps=1,
                     settings=EngineSettings(n_ctx=request.ctx, load_mode="none"), explicit_ctx=True)
    result = bench_models([ref], plan, store=store, db=db, progress=progress)[0]
    if not result.ok:
        raise EngineError(f"{label or ref} did not load at {request.ctx} tokens: {result.error}")
    return MeasuredFit(replace(est, variant=label or est.variant), result)


__all__ = ["BenchPlan", "BenchResult", "MeasuredFit", "SpeedUp", "bench_models", "current_engine_version", "engine_version",
           "fit_measured", "measured_speedup"]
