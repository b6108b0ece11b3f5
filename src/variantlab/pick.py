"""Which variant should I use? Three answers per task: fastest, balanced, best quality.

Candidates are the catalog's models of the flavour the task needs, at each rung of
``tasks.toml``'s list, plus the models in the store. Each is estimated with ``fit`` at the
requested context; those that fit in the memory budget are ranked with numbers from the
results database when there are some (measured), else from the machine's measured memory
bandwidth (predicted speed) and the published HumanEval score (accuracy of the original
weights). The tier rules are returned with the answer, so the choice can be checked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .bench import BenchPlan, SpeedUp, bench_models, measured_speedup
from .errors import UsageError
from .files import ProgressFn, no_progress
from .fit import Estimate, FitRequest, Network, estimate, network_for, network_from_catalog
from .hardware import memory_bandwidth, ram_available_bytes
from .knowledge import load_data
from .knowledge.catalog import CatalogModel, CatalogVariant, find_model, models
from .knowledge.quants import file_type, file_types
from .results import ResultsDB
from .store import Store
from .text import rate
from .twin import measure_twins

TIERS = ("fastest", "balanced", "best quality")


@dataclass(frozen=True)
class Candidate:
    """One variant that fits, with its speed and accuracy and where each number comes from."""

    variant: str
    source: str  # "catalog" or "store"
    model: CatalogModel
    file_type: str
    estimate: Estimate
    tokens_per_s: float
    tokens_per_s_source: str
    accuracy: float | None
    accuracy_source: str
    file_name: str | None
    speculation: SpeedUp | None = None  # a measured speed-up with speculative decoding, its own figure

    @property
    def level_bits(self) -> int:
        return file_types()[self.file_type].level_bits if self.file_type in file_types() else 16

    @property
    def rung(self) -> int:
        return list(file_types()).index(self.file_type) if self.file_type in file_types() else 0


def task_spec(task: str) -> dict[str, Any]:
    tasks = load_data("tasks.toml")["tasks"]
    if task not in tasks:
        raise UsageError(f"unknown task {task!r}", hint=f"use one of {', '.join(tasks)}")
    return tasks[task]


def suitable(model: CatalogModel, task: str) -> bool:
    """The flavour rule: the task's flavours only, and FIM where the task needs it."""
    spec = task_spec(task)
    return model.flavor in spec["flavors"] and (model.fim or not spec["requires_fim"])


@dataclass(frozen=True)
class Tier:
    """One answer of `pick`: the variant, where its figures come from, and why it was chosen."""

    tier: str
    variant: str
    source: str
    file: str | None
    repo: str | None
    file_type: str
    flavor: str
    fim: bool
    total_bytes: int
    file_bytes: int
    predicted_tokens_per_s: float
    tokens_per_s_source: str
    accuracy: float | None
    accuracy_source: str
    license: str | None
    reason: str
    speculation: str | None = None  # "×1.25 with prompt lookup (bench run 12)": measured, apart from the speed above


@dataclass(frozen=True)
class RankedVariant:
    """A candidate that fits, in the ranking under the tiers."""

    variant: str
    source: str
    file_type: str
    total_bytes: int
    tokens_per_s: float
    tokens_per_s_source: str
    accuracy: float | None
    accuracy_source: str
    speculation: str | None = None


@dataclass(frozen=True)
class PickResult:
    """The three tiers for a task on this machine, with what they were chosen from and the rules."""

    task: str
    task_text: str
    ctx: int
    memory_budget_bytes: int
    bandwidth_bytes_per_s: float
    bandwidth_efficiency: float | None
    candidates: int
    tiers: list[Tier]
    rules: list[str]
    ranked: list[RankedVariant]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return asdict(self)


def pick(task: str, ctx: int | None = None, ram_bytes: int | None = None, *, store: Store | None = None,
         db: ResultsDB | None = None, bandwidth: float | None = None) -> PickResult:
    """The three tiers for ``task`` on this machine, with the candidates' count and the rules."""
    spec = task_spec(task)
    ctx = ctx if ctx is not None else spec["default_ctx"]
    budget = ram_bytes if ram_bytes is not None else ram_available_bytes()
    request = FitRequest(ctx=ctx, ram_bytes=budget, vram_bytes=None).checked()
    bandwidth = bandwidth or memory_bandwidth()
    with _open_db(db) as results:
        efficiency = _measured_efficiency(results)
        found = [c for c in _candidates(task, request, store or Store(), results, bandwidth, efficiency) if c.estimate.fits]
    tiers = choose_tiers(found, spec)
    return PickResult(task, spec["text"], ctx, budget, bandwidth, efficiency, len(found),
                      [_tier_record(name, c, spec) for name, c in tiers], tier_rules(spec),
                      [_ranked_record(c) for c in ranked(found)])


MEASURE_PLAN = BenchPlan(n_prompt=128, n_gen=64, reps=2)  # pick --measure: enough to rank, minutes not hours


def pick_measured(task: str, ctx: int | None = None, ram_bytes: int | None = None, *, store: Store | None = None,
                  plan: BenchPlan = MEASURE_PLAN, progress: ProgressFn = no_progress) -> PickResult:
    """``pick --measure``: bench every tier's variant whose speed is only predicted (a stored file
    itself, a catalog variant on its twin: the variant's tensors, random weights), then answer again."""
    first = pick(task, ctx, ram_bytes, store=store)
    predicted = [t for t in first.tiers if not t.tokens_per_s_source.startswith("measured")]
    stored = list(dict.fromkeys(t.variant for t in predicted if t.source == "store"))
    catalog = list(dict.fromkeys(t.variant for t in predicted if t.source == "catalog"))
    if stored:
        bench_models(stored, plan, store=store, progress=progress)
    if catalog:
        measure_twins(catalog, plan, store=store, progress=progress)
    return pick(task, ctx, ram_bytes, store=store) if predicted else first


def ranked(found: list[Candidate]) -> list[Candidate]:
    """Every candidate that fits, most accurate first, then fastest."""
    return sorted(found, key=lambda c: (-(c.accuracy if c.accuracy is not None else -1), -c.tokens_per_s))


def _ranked_record(c: Candidate) -> RankedVariant:
    return RankedVariant(c.variant, c.source, c.file_type, c.estimate.total_bytes, _three_figures(c.tokens_per_s),
                         c.tokens_per_s_source, c.accuracy, c.accuracy_source,
                         c.speculation.describe() if c.speculation else None)


@contextlib.contextmanager
def _open_db(db: ResultsDB | None) -> Iterator[ResultsDB]:
    """Use the caller's results database, or open (and close) the default one."""
    if db is not None:
        yield db
        return
    with ResultsDB() as opened:
        yield opened


def _measured_efficiency(db: ResultsDB) -> float | None:
    """The median share of the bandwidth ceiling this machine's bench runs reached, if any."""
    fractions = [r.metrics["bandwidth_fraction"].median for r in db.runs(kind="bench", limit=50)
                 if r.status == "ok" and "bandwidth_fraction" in r.metrics and r.metrics["bandwidth_fraction"].median]
    if not fractions:
        return None
    fractions.sort()
    return fractions[len(fractions) // 2]


def _candidates(task: str, request: FitRequest, store: Store, db: ResultsDB, bandwidth: float,
                efficiency: float | None) -> list[Candidate]:
    rungs = load_data("tasks.toml")["pick"]["file_types"]
    per_model = _model_efficiencies(store, db)
    found: dict[str, Candidate] = {}
    for model in models():
        if not suitable(model, task) or request.ctx > model.max_ctx:
            continue
        for rung in rungs:
            variant = CatalogVariant(model, file_type(rung))
            net = network_from_catalog(variant)
            found[variant.tag] = _candidate(variant.tag, "catalog", model, net, request, None, db, bandwidth,
                                            per_model.get(model.tag, efficiency), variant.file_name,
                                            same_model=model.tag in per_model)
    for cand in _store_candidates(task, request, store, db, bandwidth, efficiency):
        # the stored file stands in for the catalog variant it is (same model, same file type)
        found[CatalogVariant(cand.model, file_type(cand.file_type)).tag] = cand
    return list(found.values())


def _store_candidates(task: str, request: FitRequest, store: Store, db: ResultsDB, bandwidth: float,
                      efficiency: float | None) -> list[Candidate]:
    """Models already in the store that the catalog recognises, measured where possible."""
    found = []
    for manifest in store.manifests():
        model = None if manifest.synthetic else find_model(manifest.name)  # a twin's figures come by its variant
        if model is None or not suitable(model, task) or request.ctx > model.max_ctx:
            continue
        net = network_for(manifest.name, store)
        if net.file_type is None or net.file_type not in file_types():
            continue
        found.append(_candidate(manifest.name, "store", model, net, request, manifest.sha256, db, bandwidth,
                                efficiency, manifest.file_name))
    return found


def _model_efficiencies(store: Store, db: ResultsDB) -> dict[str, float]:
    """Per catalog model, the share of the bandwidth ceiling a bench run of one of its files
    in the store reached: a better basis for its other rungs than the machine-wide median."""
    found: dict[str, float] = {}
    for manifest in store.manifests():
        model = None if manifest.synthetic else find_model(manifest.name)
        if model is None:
            continue
        for run in db.runs(kind="bench", model_sha256=manifest.sha256, limit=5):
            metric = run.metrics.get("bandwidth_fraction")
            if run.status == "ok" and run.backend == "llama.cpp" and metric and metric.median:
                found[model.tag] = float(metric.median)
                break
    return found


def _candidate(tag: str, source: str, model: CatalogModel, net: Network, request: FitRequest, sha256: str | None,
               db: ResultsDB, bandwidth: float, efficiency: float | None, file_name: str | None,
               same_model: bool = False) -> Candidate:
    est = estimate(net, request)
    speed, speed_source = _speed(est, sha256, db, bandwidth, efficiency, same_model, twin_of=tag)
    accuracy, accuracy_source = _accuracy(model, sha256, db)
    return Candidate(tag, source, model, net.file_type or "", est, speed, speed_source, accuracy, accuracy_source,
                     file_name, measured_speedup(db, sha256))


def _speed(est: Estimate, sha256: str | None, db: ResultsDB, bandwidth: float,
           efficiency: float | None, same_model: bool = False, twin_of: str | None = None) -> tuple[float, str]:
    """Measured on this file, else measured on a twin of this variant, else predicted from bandwidth."""
    for runs, how in ((db.runs(kind="bench", model_sha256=sha256, limit=5) if sha256 else [], "measured"),
                      (db.runs(kind="bench", model=f"twin:{twin_of}", limit=5) if twin_of else [], "measured on a twin")):
        ok = [r for r in runs if r.status == "ok" and r.backend == "llama.cpp" and r.metrics.get("gen_tokens_per_s")
              and r.settings.get("n_depth", 0) == 0]
        if ok and ok[0].metrics["gen_tokens_per_s"].median:
            return float(ok[0].metrics["gen_tokens_per_s"].median), f"{how} (bench run {ok[0].id})"
    share = efficiency or 1.0
    basis = "a bench run of this model at another quantization" if same_model else "median of this machine's bench runs"
    label = (f"predicted: {share:.0%} of the measured bandwidth ({basis}) ÷ bytes per token"
             if efficiency else "predicted ceiling: measured bandwidth ÷ bytes per token (no bench runs yet)")
    if est.experts:
        label += (f"; a mixture of experts reads only its active experts ({est.experts}): "
                  f"{est.bytes_read_per_token / 2**30:.2f} GiB a token of {est.weights_bytes / 2**30:.2f} GiB of weights")
    return bandwidth * share / est.bytes_read_per_token, label


def _accuracy(model: CatalogModel, sha256: str | None, db: ResultsDB) -> tuple[float | None, str]:
    if sha256:
        for run in db.runs(kind="eval", model_sha256=sha256, limit=20):
            metric = run.metrics.get("pass@1")
            if run.status == "ok" and run.suite == "humaneval" and metric and metric.median is not None:
                return 100 * float(metric.median), f"measured HumanEval pass@1 (eval run {run.id}, this file)"
    if model.humaneval is None:
        return None, "no published HumanEval score"
    return model.humaneval, f"published HumanEval pass@1 of the original weights ({model.humaneval_source})"


def tier_rules(spec: dict[str, Any]) -> list[str]:
    cfg = load_data("tasks.toml")["pick"]
    return [
        f"candidates: catalog models of flavour {'/'.join(spec['flavors'])}"
        + (" with fill-in-the-middle" if spec["requires_fim"] else "")
        + f" at {', '.join(cfg['file_types'])}, plus matching store models; only those whose estimate fits the budget",
        f"no tier proposes a variant below {cfg['min_level_bits']} bits",
        "fastest: the highest generation tokens/s",
        f"balanced: the most accurate model whose {cfg['balanced_file_type']} (or nearest higher rung) reaches "
        f"{spec['comfortable_tokens_per_s']} tokens/s; if none does, the best accuracy × speed (different models "
        "from published and predicted figures; `ladder`, which measures the rungs of one model here, picks its "
        "balanced rung by interval overlap and a KLD bound instead)",
        "best quality: the most accurate model, at the highest rung that fits",
        "measured figures (results database, this file) replace published and predicted ones; a model's other "
        "rungs are predicted with the bandwidth share its measured file reached",
    ]


def choose_tiers(found: list[Candidate], spec: dict[str, Any]) -> list[tuple[str, Candidate]]:
    """Apply the three tier rules to the candidates that fit."""
    cfg = load_data("tasks.toml")["pick"]
    usable = [c for c in found if c.level_bits >= cfg["min_level_bits"]]
    if not usable:
        return []
    fastest = max(usable, key=lambda c: (c.tokens_per_s, c.accuracy or 0))
    scored = [c for c in usable if c.accuracy is not None] or usable
    best_acc = max(c.accuracy or 0 for c in scored)
    best = max((c for c in scored if (c.accuracy or 0) == best_acc), key=lambda c: (c.rung, c.source == "store"))
    return [("fastest", fastest), ("balanced", _balanced(scored, spec, cfg)), ("best quality", best)]


def _balanced(scored: list[Candidate], spec: dict[str, Any], cfg: dict[str, Any]) -> Candidate:
    floor = list(file_types()).index(cfg["balanced_file_type"])
    at_floor = [c for c in scored if c.rung >= floor] or scored
    quick = [c for c in at_floor if c.tokens_per_s >= spec["comfortable_tokens_per_s"]]
    if not quick:
        return max(at_floor, key=lambda c: (c.accuracy or 0) * c.tokens_per_s)
    top = max(c.accuracy or 0 for c in quick)
    same_model = [c for c in quick if (c.accuracy or 0) == top]
    return min(same_model, key=lambda c: (abs(c.rung - floor), c.source != "store"))


def _tier_record(tier: str, c: Candidate, spec: dict[str, Any]) -> Tier:
    est = c.estimate
    return Tier(tier, c.variant, c.source, c.file_name, c.model.gguf_repo, c.file_type, c.model.flavor, c.model.fim,
                est.total_bytes, est.file_bytes, _three_figures(c.tokens_per_s), c.tokens_per_s_source, c.accuracy,
                c.accuracy_source, c.model.license, _reason(tier, c, spec), c.speculation.describe() if c.speculation else None)


def _three_figures(tokens_per_s: float) -> float:
    """A speed kept to three significant figures: one decimal turned a 32B's 0.603 into 0.6 and a
    70B's 0.04 into 0.0, which reads as "does not run"."""
    return float(f"{tokens_per_s:.3g}")


def _reason(tier: str, c: Candidate, spec: dict[str, Any]) -> str:
    acc = f"HumanEval {c.accuracy:.1f}" if c.accuracy is not None else "no HumanEval score"
    how = c.tokens_per_s_source.split(" (")[0] if c.tokens_per_s_source.startswith("measured") else "predicted"
    if how == "predicted" and c.estimate.experts:
        how = f"predicted from the active experts' bytes ({c.estimate.experts} experts a token)"
    speed = f"{rate(c.tokens_per_s)} tok/s {how}"
    if tier == "fastest":
        return f"reads the fewest bytes per token that fit ({speed}); {acc}"
    if tier == "balanced":
        reached = c.tokens_per_s >= spec["comfortable_tokens_per_s"]
        return (f"most accurate ({acc}) at ≥ {spec['comfortable_tokens_per_s']} tok/s ({speed})" if reached
                else f"nothing reaches {spec['comfortable_tokens_per_s']} tok/s here; best accuracy × speed ({acc}, {speed})")
    return f"highest accuracy that fits ({acc}), at the highest rung that fits ({c.file_type}; {speed})"

