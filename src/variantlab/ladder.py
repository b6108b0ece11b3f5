"""`ladder`: quantize a model to each rung and measure every rung the same way, on this machine.

For each rung: make it (llama.cpp's quantizer, from the F16/F32 reference; a quantized source
is first dequantized to F16 and every row says so), then ``fit`` at the context, ``bench``,
HumanEval (or the infill suite) and KL-divergence against the reference: the same library
calls, with the same settings, as the separate commands. Every measurement goes into the
results database; a rung whose measurement is already there (same file by sha256, same
settings) is not measured again, which is how an interrupted ladder resumes. The three picks
follow the rules in ``data/ladder.toml``, and the rules are returned with the table.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from . import __version__
from .bench import BenchPlan, bench_models, current_engine_version, measured_speedup
from .engine import EngineSettings
from .errors import UsageError
from .eval import humaneval as he
from .eval import infill, repo, repo_suite
from .eval.kld import KldPlan, corpus, evaluate_kld
from .eval.run import EvalPlan, evaluate
from .eval.sandbox import REPO_LIMITS
from .files import ProgressFn, no_progress
from .fit import Estimate, FitRequest, fit
from .hardware import machine_facts, profile
from .knowledge import load_data
from .knowledge.catalog import CatalogVariant, find_model
from .knowledge.quants import file_type, quick_ladder
from .knowledge.quants import ladder as full_ladder
from .modelfile import read_model_file
from .quantize import FLOAT_TYPES, Rung, dequantize, plan_quantize, run_quantize
from .results import SETTING_DEFAULTS, ResultsDB, Run
from .store import Manifest, Store
from .text import rate
from .twin import GENERATOR, twin_for

STEPS = ("make", "fit", "bench", "accuracy", "kld")
REPO_TASKS = ("infill", "complete")  # the tasks a repository's holes measure (ladder --suite repo:PATH)


@dataclass(frozen=True)
class LadderPlan:
    """Which model, which rungs, for which task, at which context, how thoroughly, in how much memory."""

    source: str
    types: tuple[str, ...] = ()  # empty: the suite's rungs
    task: str = "chat"
    ctx: int = 4096
    suite: str = "quick"
    ram_bytes: int | None = None  # None: the RAM available now
    threads: int | None = None
    reps: int | None = None  # bench repetitions per rung; None: the suite's

    def checked(self) -> LadderPlan:
        if self.reps is not None and self.reps < 1:
            raise UsageError(f"--reps {self.reps} measures nothing", hint="use --reps 1 or more, or leave it out for the suite's")
        suites = [s for s in load_data("ladder.toml")["suite"] if s != "repo"]  # repo: is written repo:PATH
        tasks = list(load_data("tasks.toml")["tasks"])
        if self.suite.startswith("repo:"):
            if self.task not in REPO_TASKS:
                raise UsageError(f"--suite repo: measures infilling, not the {self.task!r} task", hint="use --task infill or --task complete")
        elif self.suite not in suites:
            raise UsageError(f"unknown suite {self.suite!r}", hint=f"use {' or '.join(suites)}, or repo:PATH (with --task infill or complete)")
        if self.task not in tasks:
            raise UsageError(f"unknown task {self.task!r}", hint=f"use one of {', '.join(tasks)}")
        FitRequest(ctx=self.ctx, ram_bytes=self.ram_bytes).checked()
        rungs = self.types or tuple(ft.name for ft in (full_ladder() if self.suite == "full" else quick_ladder()))
        return replace(self, types=tuple(file_type(t).name for t in rungs))

    @property
    def accuracy_suite(self) -> str:
        if self.suite.startswith("repo:"):
            return self.suite
        return "infill" if self.task == "infill" else "humaneval"


@dataclass(frozen=True)
class LadderRow:
    """One rung: the file, its memory at the context, its measured speed (median and the range of the
    repetitions), pass@1 with its interval, mean KLD, and the results-database runs behind them."""

    file_type: str
    model: str
    file_bytes: int
    memory_bytes: int
    fits: bool
    gen_tokens_per_s: float | None
    pass_at_1: float | None
    pass_at_1_low: float
    pass_at_1_high: float
    mean_kld: float | None
    passed: int
    problems: int
    load_s: float | None = None
    ttft_s: float | None = None
    lineage: str = ""
    sha256: str | None = None
    verdict: str = ""
    prompt_tokens_per_s: float | None = None
    gen_tokens_per_s_min: float | None = None  # None in ladders recorded before the range was kept
    gen_tokens_per_s_max: float | None = None
    gen_tokens_per_s_reps: int = 0
    same_top_p: float | None = None
    ppl: float | None = None
    runs: dict[str, int | None] = field(default_factory=dict)
    # a twin ladder's rung: measured on the variant's twin (random weights), accuracy not measured
    twin: bool = False
    peak_rss_bytes: int | None = None  # measured at the context
    depth: int = 0  # the depth of the *_at_depth speeds (tokens already in the cache)
    prompt_tokens_per_s_at_depth: float | None = None
    gen_tokens_per_s_at_depth: float | None = None
    accuracy_note: str = ""
    speculation: str | None = None  # a measured speed-up with speculative decoding (bench --lookup/--draft), its own figure
    node: str = ""  # ladder --cluster: the node that measured this rung (host, address, Ray node id)
    machine: str = ""  # ladder --cluster: its kind of machine (speed compares only within one)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LadderRow:
        """A row as the results database recorded it (fields added later keep their defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Pick:
    """One of the three picks: the rung and why; ``tied`` names the rungs the measurement could not separate."""

    model: str
    file_type: str
    reason: str
    tied: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LadderResult:
    """The variation table of one ladder, its picks and rules, the machine, and how each figure was measured."""

    source: str
    source_type: str | None
    reference: str
    reference_sha256: str
    reference_note: str
    task: str
    ctx: int
    suite: str
    ram_budget_bytes: int | None
    types: list[str]
    rows: list[LadderRow]
    picks: dict[str, Pick | None]
    rules: list[str]
    how: dict[str, str]
    machine: dict[str, Any]
    run_id: int | None = None
    created_at: str | None = None
    twin: bool = False  # every rung measured on a twin: speed and memory only
    guide: list[dict[str, Any]] = field(default_factory=list)  # a published guide's picks for this model, if known

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form, and what the results database records."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LadderResult:
        picks = {tier: Pick(**p) if p else None for tier, p in data["picks"].items()}
        known = {f.name for f in fields(cls)}
        rest = {k: v for k, v in data.items() if k in known and k not in ("rows", "picks")}
        return cls(**rest, rows=[LadderRow.from_dict(r) for r in data["rows"]], picks=picks)


def suite_settings(suite: str) -> dict[str, Any]:
    """How thoroughly each rung is measured; ``repo:PATH`` measures as ``quick`` with the repository's holes."""
    suites = load_data("ladder.toml")["suite"]
    return {**suites["quick"], **suites["repo"]} if suite.startswith("repo:") else suites[suite]


def plan_settings(plan: LadderPlan) -> dict[str, Any]:
    """The suite's settings with the plan's own bench repetitions, where it gives them (a 13B ladder
    of nine rungs takes hours on two cores; fewer reps trade the speed column's range for time)."""
    settings = suite_settings(plan.suite)
    return settings if plan.reps is None else {**settings, "bench_reps": plan.reps}


def pick_rules() -> dict[str, Any]:
    return load_data("ladder.toml")["picks"]


# -- running -----------------------------------------------------------------------------------

def run_ladder(plan: LadderPlan, *, store: Store | None = None, db: ResultsDB | None = None,
               progress: ProgressFn = no_progress) -> LadderResult:
    """Make and measure every rung (reusing what is already measured), pick, record, return the table."""
    plan = plan.checked()
    store = store or Store()
    source = store.resolve(plan.source)
    source_type = read_model_file(source.path).file_type
    reference = _reference(plan.source, source_type, store, progress)
    qplan = plan_quantize(reference.name, list(plan.types), threads=plan.threads, store=store)  # disk checked here
    total = len(qplan.rungs) * len(STEPS)
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results:
        rows = []
        for i, rung in enumerate(qplan.rungs):
            def step(k: int, what: str, i: int = i, rung: Rung = rung) -> None:
                progress(f"ladder: {rung.file_type} ({i + 1}/{len(qplan.rungs)}) {what}", i * len(STEPS) + k, total)
            step(0, "make")
            made = run_quantize(replace(qplan, rungs=[rung]), store=store, progress=progress)[0].manifest
            rows.append(_measure_rung(plan, made, reference, store, results, progress, step))
        progress(f"ladder: {len(rows)} rungs measured", total, total)
        result = _result(plan, source.label, source_type, reference, rows)
        return replace(result, run_id=_record(results, plan, source, result))


def _reference(ref: str, source_type: str | None, store: Store, progress: ProgressFn) -> Manifest:
    """The float file the rungs are quantized from and compared with (dequantized if need be)."""
    if source_type in FLOAT_TYPES:
        resolved = store.resolve(ref)
        if resolved.manifest is None:
            raise UsageError(f"{ref} is not in the store", hint=f"run `variantlab models fetch file:{ref}` first")
        return resolved.manifest
    return dequantize(ref, "f16", store=store, progress=progress)


def _measure_rung(plan: LadderPlan, made: Manifest, reference: Manifest, store: Store, db: ResultsDB,
                  progress: ProgressFn, step: Callable[[int, str], None]) -> LadderRow:
    settings = plan_settings(plan)
    step(1, "fit")
    est = fit(made.name, FitRequest(ctx=plan.ctx, ram_bytes=plan.ram_bytes), store)
    step(2, "bench")
    bench_run = _bench(made, settings, plan, store, db, progress)
    depth_run = _bench(made, settings, plan, store, db, progress, at_depth=True) if depth_for(plan, settings) else None
    step(3, plan.accuracy_suite)
    eval_run = _accuracy(made, settings, plan, store, db, progress)
    step(4, "kld")
    kld_run = _kld(made, reference, settings, plan, store, db, progress)
    row = _with_depth(_row(made, est, bench_run, eval_run, kld_run), depth_run)
    speedup = measured_speedup(db, made.sha256)
    return replace(row, speculation=speedup.describe()) if speedup else row


def depth_for(plan: LadderPlan, settings: dict[str, Any]) -> int:
    """The depth the second speed is measured at: the far end of the context the user asked for
    (a user who asks for 8192 tokens wants the speed there), leaving room for the test itself."""
    return max(0, plan.ctx - max(settings["bench_prompt"], settings["bench_gen"]))


def depth_plan(settings: dict[str, Any], plan: LadderPlan) -> BenchPlan:
    """The bench at depth: the context the user asked for, filled up to ``depth_for``."""
    return replace(bench_plan(settings, plan.threads), settings=EngineSettings(n_ctx=plan.ctx, n_threads=plan.threads),
                   explicit_ctx=True, n_depth=depth_for(plan, settings))


def _with_depth(row: LadderRow, depth_run: Run | None) -> LadderRow:
    if depth_run is None:
        return row
    return replace(row, depth=int(depth_run.settings.get("n_depth") or 0),
                   prompt_tokens_per_s_at_depth=_median(depth_run, "prompt_tokens_per_s"),
                   gen_tokens_per_s_at_depth=_median(depth_run, "gen_tokens_per_s"),
                   runs={**row.runs, "bench_at_depth": depth_run.id})


def bench_plan(settings: dict[str, Any], threads: int | None) -> BenchPlan:
    return BenchPlan(n_prompt=settings["bench_prompt"], n_gen=settings["bench_gen"], reps=settings["bench_reps"],
                     settings=EngineSettings(n_threads=threads))


def eval_plan(settings: dict[str, Any], suite: str, threads: int | None) -> EvalPlan:
    if suite.startswith("repo:"):
        return EvalPlan(suite=suite, holes=settings["repo_holes"], seed=settings["repo_seed"], max_tokens=settings["repo_max_tokens"],
                        limits=REPO_LIMITS, settings=EngineSettings(n_threads=threads))
    if suite == "infill":
        return EvalPlan(suite="infill", limit=settings.get("infill_limit"), settings=EngineSettings(n_threads=threads))
    return EvalPlan(suite="humaneval", subset=settings["humaneval_subset"], settings=EngineSettings(n_threads=threads))


def kld_plan(settings: dict[str, Any], threads: int | None) -> KldPlan:
    return KldPlan(max_chunks=settings["kld_chunks"], settings=EngineSettings(n_threads=threads))


def _bench(made: Manifest, settings: dict[str, Any], plan: LadderPlan, store: Store, db: ResultsDB,
           progress: ProgressFn, at_depth: bool = False) -> Run:
    bplan = (depth_plan(settings, plan) if at_depth else bench_plan(settings, plan.threads)).checked()
    want = bplan.recorded()
    found = find_run(db, "bench", made.sha256, None, want, conditions_now())
    if found is None:
        result = bench_models([made.name], bplan, store=store, db=db, progress=progress)[0]
        found = db.get(_recorded(result.run_id))
    return found


def _accuracy(made: Manifest, settings: dict[str, Any], plan: LadderPlan, store: Store, db: ResultsDB,
              progress: ProgressFn) -> Run:
    eplan = eval_plan(settings, plan.accuracy_suite, plan.threads).checked()
    want = {**eplan.settings.to_dict(), "limit": eplan.limit, "subset": eplan.subset, "temperature": eplan.temperature,
            "samples_per_task": eplan.samples_per_task, "max_tokens": eplan.max_tokens}
    if eplan.suite_kind == "repo":
        suite_version, dataset = repo.SUITE_VERSION, repo_suite.holes_identity(eplan.repo_job())
    else:
        suite_version, dataset = (infill.SUITE_VERSION if eplan.suite == "infill" else he.SUITE_VERSION), he.dataset_sha256()
    found = find_run(db, "eval", made.sha256, eplan.suite_kind, want, conditions_now(suite_version, dataset))
    if found is None:
        found = db.get(_recorded(evaluate(made.name, eplan, store=store, db=db, progress=progress).run_id))
    return found


def _kld(made: Manifest, reference: Manifest, settings: dict[str, Any], plan: LadderPlan, store: Store,
         db: ResultsDB, progress: ProgressFn) -> Run:
    kplan = kld_plan(settings, plan.threads).checked()
    want = {**kplan.engine_settings().to_dict(), "reference_sha256": reference.sha256, "max_chunks": kplan.max_chunks,
            "top_k": kplan.top_k}
    _, corpus_sha, corpus_version = corpus()
    found = find_run(db, "eval", made.sha256, "kld", want, conditions_now(corpus_version, corpus_sha))
    if found is None:
        found = db.get(_recorded(evaluate_kld(made.name, reference.name, kplan, store=store, db=db, progress=progress).run_id))
    return found


def _recorded(run_id: int | None) -> int:
    """The id of a run the step has just recorded (the database always gives one)."""
    if run_id is None:
        raise RuntimeError("a measurement was not recorded in the results database")
    return run_id


def find_run(db: ResultsDB, kind: str, sha256: str | None, suite: str | None, want: dict[str, Any],
             now: dict[str, Any], model: str | None = None) -> Run | None:
    """The newest successful run of this file whose settings match ``want`` and that is comparable with a
    measurement made now (a measurement to reuse).

    ``now`` holds the conditions of a run made today (engine build, hardware, suite version, dataset):
    a run is reused only when putting them in its place leaves its ``comparable_key`` unchanged, so
    after an engine upgrade, on other hardware or with another suite version it is measured again.
    """
    for run in db.runs(kind=kind, model_sha256=sha256, model=model, limit=1000):
        if run.status == "ok" and run.suite == suite \
                and all(run.settings.get(k, SETTING_DEFAULTS.get(k)) == v for k, v in want.items()) \
                and run.comparable_key() == replace(run, **now).comparable_key():
            return run
    return None


def conditions_now(suite_version: str | None = None, dataset_sha256: str | None = None) -> dict[str, Any]:
    """What a measurement made now would record besides its settings (for ``find_run``)."""
    return {"engine_version": current_engine_version(), "hardware": machine_facts(), "suite_version": suite_version,
            "dataset_sha256": dataset_sha256}


# -- the table ---------------------------------------------------------------------------------

def wilson_interval(passed: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a pass rate: sound at 0 and n, unlike the normal approximation."""
    if n == 0:
        return 0.0, 1.0
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if passed == 0 else max(0.0, centre - half)), (1.0 if passed == n else min(1.0, centre + half))


def _median(run: Run, name: str) -> float | None:
    metric = run.metrics.get(name)
    return metric.median if metric else None


def speed_range(row: LadderRow) -> tuple[float, float]:
    """A rung's generation speed as the range of its repetitions (its median alone where none are recorded)."""
    median = row.gen_tokens_per_s or 0.0
    low, high = row.gen_tokens_per_s_min, row.gen_tokens_per_s_max
    return (median if low is None else low), (median if high is None else high)


def _fastest(fitting: list[LadderRow]) -> tuple[LadderRow, list[LadderRow]]:
    """The fastest rung, and the rungs tied with it: those whose range of repetitions overlaps the
    fastest median's range. A tie goes to the least memory, since the measurement cannot tell them apart."""
    top = max(fitting, key=lambda r: (r.gen_tokens_per_s or 0, -r.memory_bytes))
    top_low, top_high = speed_range(top)
    tied = [r for r in fitting if speed_range(r)[1] >= top_low and speed_range(r)[0] <= top_high]
    return min(tied, key=lambda r: (r.memory_bytes, -(r.gen_tokens_per_s or 0))), tied


def _fastest_reason(fastest: LadderRow, tied: list[LadderRow]) -> str:
    if fastest.gen_tokens_per_s_reps == 1:  # one rep has no range: a lead of any size may be noise
        return (f"highest generation speed that fits ({rate(fastest.gen_tokens_per_s)} tokens/s) over one rep, which "
                "has no range to tell a lead from noise; --reps 3 or more to separate close rungs")
    low, high = speed_range(fastest)
    spread = f"{rate(fastest.gen_tokens_per_s)} tokens/s, {rate(low)}–{rate(high)} over {fastest.gen_tokens_per_s_reps} reps"
    if len(tied) == 1:
        return f"highest generation speed that fits ({spread}), clear of every other rung's range"
    others = ", ".join(r.file_type for r in tied if r is not fastest)
    return (f"tied for the highest generation speed with {others}: their ranges over the repetitions overlap, so "
            f"too few repetitions to separate them; of the tied rungs, the least memory ({spread}); "
            "more repetitions (--suite full) may separate them")


def accuracy_counts(eval_run: Run) -> tuple[float | None, int, int]:
    """The rung's accuracy, successes and trials: pass@1 over HumanEval's or the infill suite's
    programs, or exact match over a repository's holes (``--suite repo:PATH``)."""
    if eval_run.suite == "repo":
        holes, rate = int(_median(eval_run, "holes") or 0), _median(eval_run, "exact_match")
        return rate, round((rate or 0.0) * holes), holes
    return _median(eval_run, "pass@1"), int(_median(eval_run, "passed") or 0), int(_median(eval_run, "samples") or 0)


def _row(made: Manifest, est: Estimate, bench_run: Run, eval_run: Run, kld_run: Run) -> LadderRow:
    accuracy, passed, samples = accuracy_counts(eval_run)
    low, high = wilson_interval(passed, samples, pick_rules()["confidence"])
    lineage = made.lineage or {}
    speed = bench_run.metrics.get("gen_tokens_per_s")
    return LadderRow(
        file_type=lineage.get("to_type") or made.file_type or "?", model=made.name, sha256=made.sha256,
        lineage=lineage.get("note", made.source), file_bytes=made.size, memory_bytes=est.total_bytes, fits=est.fits,
        verdict=est.verdict, load_s=_median(bench_run, "load_s"), ttft_s=_median(bench_run, "ttft_s"),
        prompt_tokens_per_s=_median(bench_run, "prompt_tokens_per_s"), gen_tokens_per_s=_median(bench_run, "gen_tokens_per_s"),
        gen_tokens_per_s_min=speed.min if speed else None, gen_tokens_per_s_max=speed.max if speed else None,
        gen_tokens_per_s_reps=speed.n if speed else 0,
        pass_at_1=accuracy, passed=passed, problems=samples, pass_at_1_low=low, pass_at_1_high=high,
        mean_kld=_median(kld_run, "mean_kld"), same_top_p=_median(kld_run, "same_top_p"), ppl=_median(kld_run, "ppl"),
        runs={"bench": bench_run.id, "accuracy": eval_run.id, "kld": kld_run.id},
    )


def choose(rows: list[LadderRow], rules: dict[str, Any] | None = None) -> dict[str, Pick | None]:
    """The three picks among the rows that fit; each with the reason it was chosen."""
    rules = rules or pick_rules()
    fitting = [r for r in rows if r.fits]
    if not fitting:
        return {"fastest": None, "balanced": None, "best quality": None}
    fastest, tied = _fastest(fitting)
    best = max(fitting, key=lambda r: (r.pass_at_1 or 0, -(r.mean_kld or 0), -r.memory_bytes))
    close = [r for r in fitting if r.pass_at_1_high >= best.pass_at_1_low
             and r.mean_kld is not None and r.mean_kld <= rules["balanced_kld_max"]]
    balanced = min(close, key=lambda r: r.memory_bytes) if close else best
    return {
        "fastest": Pick(fastest.model, fastest.file_type, _fastest_reason(fastest, tied), [r.file_type for r in tied]),
        "balanced": Pick(balanced.model, balanced.file_type,
                         (f"least memory ({balanced.memory_bytes / 2**30:.2f} GiB) with pass@1 within the best's "
                          f"interval and mean KLD {balanced.mean_kld or 0:.4f} ≤ {rules['balanced_kld_max']}")
                         if close else "no rung is both close to the best and under the KLD bound: the best quality"),
        "best quality": Pick(best.model, best.file_type,
                             f"highest pass@1 that fits ({(best.pass_at_1 or 0):.1%}; ties: lower KLD)"),
    }


def rules_text(plan: LadderPlan, rules: dict[str, Any] | None = None) -> list[str]:
    rules = rules or pick_rules()
    budget = "the memory available now" if plan.ram_bytes is None else f"{plan.ram_bytes / 2**30:.1f} GiB"
    return [
        f"fits: fit's estimate at {plan.ctx} tokens of context (weights + KV cache + compute) is within {budget}",
        "fastest: the highest measured generation tokens/s among the rungs that fit; rungs whose ranges over the "
        "bench repetitions overlap the fastest's range are tied (the measurement cannot separate them), and a tie "
        "goes to the least memory",
        "best quality: the highest pass@1 among the rungs that fit; ties go to the lower mean KLD",
        f"balanced: the least memory among the rungs that fit whose pass@1 {rules['confidence']:.0%} Wilson interval "
        f"reaches the best rung's interval and whose mean KLD is at most {rules['balanced_kld_max']} nats; "
        "if none, the best quality (rungs of one model, all measured here; `pick`, which compares different "
        "models from published and predicted figures, has its own balanced rule, based on a comfortable speed)",
    ]


def how_measured(plan: LadderPlan, reference: str) -> dict[str, str]:
    s = plan_settings(plan)
    accuracy = (f"infill suite, {s.get('infill_limit') or 'all'} holes" if plan.accuracy_suite == "infill" else
                "HumanEval, " + ("the fixed stratified 20-problem subset" if s["humaneval_subset"] == "quick" else "all 164 problems"))
    measure = f"pass@1 with its {pick_rules()['confidence']:.0%} Wilson interval"
    if plan.suite.startswith("repo:"):
        accuracy = (f"--suite {plan.suite} --holes {s['repo_holes']} --seed {s['repo_seed']}: fill-in-the-middle on your "
                    "repository's code, its tests run in the sandbox")
        measure = f"exact match over the holes (in the pass@1 column) with its {pick_rules()['confidence']:.0%} Wilson interval"
    return {
        "memory": f"variantlab fit MODEL --ctx {plan.ctx}: weights + KV cache (f16) + compute buffers + overhead",
        "speed": f"variantlab bench MODEL --prompt {s['bench_prompt']} --gen {s['bench_gen']} --reps {s['bench_reps']}: "
                 "medians; load time, time to first token, generation tokens/s as llama-bench's tg"
                 + (f"; at ctx: the same with --ctx {plan.ctx} --depth {depth_for(plan, s)} (the cache filled to the "
                    "context's far end)" if depth_for(plan, s) else ""),
        "accuracy": f"variantlab eval MODEL: {accuracy}, greedy, programs run in the sandbox; {measure}",
        "kld": f"variantlab eval MODEL --suite kld --reference {reference} --chunks {s['kld_chunks']}: mean KL-divergence "
               "per token over chunks of 512 tokens of a fixed stdlib corpus",
    }


def _result(plan: LadderPlan, source: str, source_type: str | None, reference: Manifest,
            rows: list[LadderRow]) -> LadderResult:
    return LadderResult(
        source=source, source_type=source_type, reference=reference.name, reference_sha256=reference.sha256,
        reference_note=(reference.lineage or {}).get("note", "original float weights"), task=plan.task, ctx=plan.ctx,
        suite=plan.suite, ram_budget_bytes=plan.ram_bytes, types=list(plan.types), rows=rows, picks=choose(rows),
        rules=rules_text(plan), how=how_measured(plan, reference.name), machine=profile(),
    )


def _record(db: ResultsDB, plan: LadderPlan, source: Any, result: LadderResult) -> int | None:
    run = Run(kind="ladder", model=source.label, backend="llama.cpp", settings=result.to_dict(),
              hardware=machine_facts(), variantlab_version=__version__,
              model_sha256=source.manifest.sha256 if source.manifest else None, suite=plan.suite)
    db.record(run)
    return run.id


def latest_ladder(db: ResultsDB, run_id: int | None = None) -> LadderResult:
    """A recorded ladder's table (the newest, or run ``run_id``), for the report."""
    run = db.get(run_id) if run_id is not None else next(iter(db.runs(kind="ladder", limit=1)), None)
    if run is None or run.kind != "ladder":
        raise UsageError("no ladder has been recorded yet" if run_id is None else f"run {run_id} is not a ladder",
                         hint="run `variantlab ladder MODEL` first")
    return replace(LadderResult.from_dict(run.settings), run_id=run.id, created_at=run.created_at)




# -- the twin ladder: every rung of a model not downloaded, measured on twins --------------------

def run_twin_ladder(plan: LadderPlan, *, store: Store | None = None, db: ResultsDB | None = None,
                    progress: ProgressFn = no_progress) -> LadderResult:
    """``ladder MODEL --twin``: each rung of a catalog model as a twin (its header and tensor table,
    random weights), fitted at the context and benched at depth 0 and at the context's far end.

    One twin is on disk at a time; a rung that does not fit is not written (the row gives fit's
    numbers). Accuracy is not measured on twins: rows give the published HumanEval of the
    original weights, labelled. Measurements already in the database are reused (resume).
    """
    plan = plan.checked()
    store = store or Store()
    model = find_model(plan.source)
    if model is None:
        raise UsageError(f"{plan.source!r} is not a catalog model", hint="ladder --twin takes a catalog model such as "
                         "codellama:13b-instruct (see `variantlab catalog`); for a file of your own, ladder it without --twin")
    settings = plan_settings(plan)
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results:
        rows = []
        for i, type_name in enumerate(plan.types):
            variant = CatalogVariant(model, file_type(type_name))
            progress(f"ladder --twin: {type_name} ({i + 1}/{len(plan.types)})", i, len(plan.types))
            rows.append(_twin_rung(variant, plan, settings, store, results, progress))
        progress(f"ladder --twin: {len(rows)} rungs", len(rows), len(rows))
        result = LadderResult(
            source=model.tag, source_type=None, reference="", reference_sha256="",
            reference_note="twins: random weights, no reference", task=plan.task, ctx=plan.ctx, suite=plan.suite,
            ram_budget_bytes=plan.ram_bytes, types=list(plan.types), rows=rows, picks=choose_twins(rows),
            rules=twin_rules_text(plan), how=twin_how_measured(plan, settings), machine=profile(), twin=True,
            guide=guide_picks(model.tag),
        )
        run = Run(kind="ladder", model=f"twin:{model.tag}", backend="llama.cpp", settings=result.to_dict(),
                  hardware=machine_facts(), variantlab_version=__version__, suite=plan.suite)
        results.record(run)
        return replace(result, run_id=run.id)


def _twin_rung(variant: CatalogVariant, plan: LadderPlan, settings: dict[str, Any], store: Store, db: ResultsDB,
               progress: ProgressFn) -> LadderRow:
    est = fit(variant.tag, FitRequest(ctx=plan.ctx, ram_bytes=plan.ram_bytes), store)
    note = _published_note(variant)
    base = LadderRow(file_type=variant.file_type.name, model=f"twin:{variant.tag}", file_bytes=est.file_bytes,
                     memory_bytes=est.total_bytes, fits=est.fits, verdict=est.verdict, gen_tokens_per_s=None,
                     pass_at_1=None, pass_at_1_low=0.0, pass_at_1_high=1.0, mean_kld=None, passed=0, problems=0,
                     lineage=f"twin of {variant.file_name}", twin=True, accuracy_note=note)
    if not est.fits:
        return base
    # at the context the user asked for (the peak holds its whole cache), loaded without mmap as fit counts:
    # with mmap, the file's pages of every tensor llama.cpp repacks for this CPU count a second time
    # (a 13B Q4_K_M twin peaked at 16.3 GiB with mmap against about 10.7 GiB of weights, cache and buffers)
    deep = replace(depth_plan(settings, plan), settings=replace(depth_plan(settings, plan).settings, load_mode="none"))
    depth = depth_for(plan, settings)
    plans = [replace(deep, n_depth=0)] + ([deep] if depth else [])
    wanted = [_find_twin_run(db, variant.tag, p.checked()) for p in plans]  # measured before: a resumed ladder
    if any(run is None for run in wanted):
        with twin_for(variant.tag, store=store, progress=progress) as made:
            wanted = [run or db.get(_recorded(bench_models([made.name], p, store=store, db=db, progress=progress)[0].run_id))
                      for run, p in zip(wanted, plans)]
    at_zero, at_depth = wanted[0], (wanted[1] if depth else None)
    assert at_zero is not None
    speed = at_zero.metrics.get("gen_tokens_per_s")
    return replace(
        base, sha256=at_zero.model_sha256, load_s=_median(at_zero, "load_s"), ttft_s=_median(at_zero, "ttft_s"),
        prompt_tokens_per_s=_median(at_zero, "prompt_tokens_per_s"), gen_tokens_per_s=_median(at_zero, "gen_tokens_per_s"),
        gen_tokens_per_s_min=speed.min if speed else None, gen_tokens_per_s_max=speed.max if speed else None,
        gen_tokens_per_s_reps=speed.n if speed else 0, peak_rss_bytes=int(_median(at_zero, "peak_rss_bytes") or 0),
        depth=depth, prompt_tokens_per_s_at_depth=_median(at_depth, "prompt_tokens_per_s") if at_depth else None,
        gen_tokens_per_s_at_depth=_median(at_depth, "gen_tokens_per_s") if at_depth else None,
        runs={"bench": at_zero.id, "bench_at_depth": at_depth.id if at_depth else None},
    )


def _find_twin_run(db: ResultsDB, tag: str, bplan: BenchPlan) -> Run | None:
    """A comparable bench run of this variant's twin with these settings."""
    want = {**bplan.recorded(), "twin_generator": GENERATOR}  # a twin of older blocks ran at another speed
    return find_run(db, "bench", None, None, want, conditions_now(), model=f"twin:{tag}")


def _published_note(variant: CatalogVariant) -> str:
    m = variant.model
    if m.humaneval is None:
        return "not measured: twin (no published HumanEval)"
    return f"not measured: twin; published HumanEval {m.humaneval:.1f} of the original weights ({m.humaneval_source})"


def choose_twins(rows: list[LadderRow]) -> dict[str, Pick | None]:
    """Picks from speed and memory alone (twins have no accuracy): fastest as measured; best quality the
    most bits that fit; balanced the least memory at or above the recommended level (ladder.toml)."""
    fitting = [r for r in rows if r.fits and r.gen_tokens_per_s is not None]
    if not fitting:
        return {"fastest": None, "balanced": None, "best quality": None}
    fastest, tied = _fastest(fitting)
    best = max(fitting, key=lambda r: r.file_bytes)  # one model: more bytes is more bits per weight
    floor = file_type(pick_rules()["twin_balanced_floor"]).typical_bpw
    above = [r for r in fitting if file_type(r.file_type).typical_bpw >= floor]
    balanced = min(above, key=lambda r: r.memory_bytes) if above else best
    return {
        "fastest": Pick(fastest.model, fastest.file_type, _fastest_reason(fastest, tied), [r.file_type for r in tied]),
        "balanced": Pick(balanced.model, balanced.file_type,
                         f"least memory ({balanced.memory_bytes / 2**30:.2f} GiB) at or above "
                         f"{pick_rules()['twin_balanced_floor']}, llama.cpp's recommended level" if above else
                         "nothing at the recommended level fits: the most bits that fit"),
        "best quality": Pick(best.model, best.file_type, "the most bits per weight that fit (accuracy not measured on twins)"),
    }


def twin_rules_text(plan: LadderPlan) -> list[str]:
    budget = "the memory available now" if plan.ram_bytes is None else f"{plan.ram_bytes / 2**30:.1f} GiB"
    floor = pick_rules()["twin_balanced_floor"]
    return [
        f"fits: fit's estimate at {plan.ctx} tokens of context is within {budget}; a rung that does not fit is not written",
        "fastest: the highest generation tokens/s measured on the twins that fit (ranges that overlap are tied; a tie goes "
        "to the least memory)",
        f"balanced: the least memory among the rungs at or above {floor} (llama.cpp's quantize help calls it recommended)",
        "best quality: the most bits per weight that fit; twins carry random weights, so accuracy and KL-divergence are "
        "not measured (rows show the published HumanEval of the original weights)",
    ]


def twin_how_measured(plan: LadderPlan, settings: dict[str, Any]) -> dict[str, str]:
    bplan = bench_plan(settings, plan.threads)
    depth = depth_for(plan, settings)
    return {
        "memory": f"variantlab fit MODEL --ctx {plan.ctx} (estimate), and the peak RSS of the twin loaded at {plan.ctx} "
                  "tokens without mmap (each weight resident once, as fit counts)",
        "speed": f"variantlab bench --twin MODEL --ctx {plan.ctx} --prompt {bplan.n_prompt} --gen {bplan.n_gen} (no mmap) "
                 f"--reps {bplan.reps}" + (f", and again with --depth {depth} (the depth's cells written as cache state where "
                                           "the cache is a plain one, decoded otherwise: a twin's cells hold nothing either way)"
                                           if depth else ""),
        "twin": "the variant's header and tensor table (catalog architecture, llama.cpp's per-tensor recipe) filled "
                "with valid random blocks of each tensor's type",
    }


def guide_picks(model_tag: str) -> list[dict[str, Any]]:
    """A published guide's recommended files for this model (guides.toml), to print beside the picks."""
    return [dict(entry) for entry in load_data("guides.toml").get("pick", []) if entry["model"] == model_tag]


__all__ = ["LadderPlan", "LadderResult", "LadderRow", "Pick", "choose", "choose_twins", "latest_ladder", "rules_text",
           "run_ladder", "run_twin_ladder", "wilson_interval"]
