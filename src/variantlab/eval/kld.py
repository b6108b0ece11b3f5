"""Quantization loss: KL-divergence of a model's token distributions against a reference model.

Scored as ``llama-perplexity --kl-divergence`` does: the corpus is tokenized once (BOS first
when the model adds one), cut into chunks of ``n_ctx`` tokens whose first token becomes BOS,
and in each chunk the positions from ``n_ctx/2`` on predict the next token. The reference's
distributions are kept as their top-k tokens and log-probabilities (a few MB instead of the
full vocabulary per position); the KL-divergence per position is the sum over those k tokens
plus one term for the remaining probability mass of each model. The reference pass is cached
by reference sha256, corpus hash and settings, so the rungs of a ladder share it.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, config
from ..bench import engine_version
from ..engine import EngineProcess, EngineSettings
from ..errors import UsageError
from ..files import ProgressFn, no_progress
from ..hardware import machine_facts
from ..knowledge import load_data
from ..lock.pins import resolve_for_use
from ..modelfile import read_model_file
from ..results import Metric, ResultsDB, Run
from ..store import ResolvedModel, Store
from .reports import KldReport


@dataclass(frozen=True)
class KldPlan:
    """Chunk length, how many chunks, how many reference tokens kept per position."""

    n_ctx: int = 512
    max_chunks: int | None = 20
    top_k: int = 1024
    settings: EngineSettings = EngineSettings()

    def checked(self) -> KldPlan:
        if not 64 <= self.n_ctx <= 8192:
            raise UsageError(f"--ctx {self.n_ctx} is out of range for KL-divergence", hint="use 64 to 8192 tokens per chunk")
        if self.max_chunks is not None and not 1 <= self.max_chunks <= 10_000:
            raise UsageError(f"--chunks {self.max_chunks} is out of range", hint="use 1 or more")
        if not 1 <= self.top_k <= 1024:
            raise UsageError(f"top-k {self.top_k} is out of range", hint="use 1 to 1024")
        return self

    def engine_settings(self) -> EngineSettings:
        """The engine settings both passes run with (and the run records): one sequence of n_ctx tokens."""
        return replace(self.settings, n_ctx=self.n_ctx, n_batch=max(self.n_ctx, 512), n_ubatch=min(self.n_ctx, 512),
                       n_seq_max=1)


def corpus() -> tuple[str, str, str]:
    """(text, sha256 of its UTF-8 bytes, version): the fixed stdlib files joined."""
    spec = load_data("kld_corpus.toml")
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in spec["files"]:
        try:
            parts.append((root / name).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"the KL-divergence corpus file {root / name} cannot be read: {exc.strerror}") from None
    text = spec["separator"].join(parts)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest(), spec["version"]


def chunks_of(tokens: list[int], n_ctx: int, max_chunks: int | None, bos: int | None) -> list[list[int]]:
    """llama-perplexity's chunks: consecutive, whole, the first token of each replaced by BOS."""
    count = len(tokens) // n_ctx
    if max_chunks:
        count = min(count, max_chunks)
    if count == 0:
        raise UsageError(f"the corpus has {len(tokens)} tokens, fewer than one chunk of {n_ctx}")
    out = []
    for c in range(count):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
        if bos is not None:
            chunk = [bos] + chunk[1:]
        out.append(chunk)
    return out


def _reference_pass(ref: ResolvedModel, plan: KldPlan, text: str, corpus_sha: str, progress: ProgressFn) -> dict[str, np.ndarray]:
    sha = ref.manifest.sha256 if ref.manifest else hashlib.sha256(str(ref.path).encode()).hexdigest()
    cache = config.home() / "cache" / "kld" / f"{sha[:16]}-{corpus_sha[:12]}-c{plan.n_ctx}-n{plan.max_chunks}-k{plan.top_k}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            return {k: saved[k] for k in saved.files}
    label = f"reference {ref.label}"
    with EngineProcess(str(ref.path), plan.engine_settings()) as engine:
        chunks = chunks_of(engine.call("tokenize", text=text, add_special=True), plan.n_ctx, plan.max_chunks, engine.call("bos"))
        parts = []
        for i, chunk in enumerate(chunks):
            progress(label, i, len(chunks))
            parts.append(engine.call("score_chunk", tokens=chunk, first=plan.n_ctx // 2, top_k=plan.top_k))
        progress(label, len(chunks), len(chunks))
    found = {k: np.concatenate([p[k] for p in parts]) for k in ("nll", "argmax", "top_ids", "top_logp")}
    found["chunks"] = np.asarray(chunks, dtype=np.int32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **found)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
    tmp.replace(cache)
    return found


def _model_pass(model: ResolvedModel, plan: KldPlan, reference: dict[str, np.ndarray],
                progress: ProgressFn) -> tuple[dict[str, np.ndarray], str]:
    chunks = [list(map(int, c)) for c in reference["chunks"]]
    per_chunk = plan.n_ctx - 1 - plan.n_ctx // 2
    label = f"score {model.label}"
    with EngineProcess(str(model.path), plan.engine_settings()) as engine:
        parts = []
        for i, chunk in enumerate(chunks):
            progress(label, i, len(chunks))
            ids = reference["top_ids"][i * per_chunk:(i + 1) * per_chunk]
            parts.append(engine.call("score_chunk", tokens=chunk, first=plan.n_ctx // 2, ref_ids=ids))
        progress(label, len(chunks), len(chunks))
        system_info = engine.call("info")["system_info"]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("nll", "argmax", "logp_at_ref")}, engine_version(system_info)


def kl_per_position(ref_top_logp: np.ndarray, model_logp_at_ref: np.ndarray) -> np.ndarray:
    """KL(reference ‖ model) per position from the reference's top-k, the rest as one bucket.

    Grouping the tail into one outcome can only lower the divergence (log-sum inequality). On
    the default model's Q2_K, k = 128 gave 0.954 × llama-perplexity's full-vocabulary figure
    and k = 1024 gave 0.988, hence the default of 1024 (6 KB per position, against 300 KB for
    the full 151,936-token distribution); benchmarks/kld_vs_llama_perplexity.py checks it.
    """
    p_log = ref_top_logp.astype(np.float64)
    p = np.exp(p_log)
    q = np.exp(model_logp_at_ref)
    top = (p * (p_log - model_logp_at_ref)).sum(axis=1)
    p_rest = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q.sum(axis=1), 1e-12, 1.0)
    rest = np.where(p_rest > 1e-12, p_rest * (np.log(np.maximum(p_rest, 1e-12)) - np.log(q_rest)), 0.0)
    return top + rest


def evaluate_kld(ref: str, reference: str, plan: KldPlan = KldPlan(), *, store: Store | None = None,
                 db: ResultsDB | None = None, progress: ProgressFn = no_progress,
                 verify_hash: bool = False) -> KldReport:
    """KL-divergence, perplexities and top-token agreement of ``ref`` against ``reference``."""
    plan = plan.checked()
    store = store or Store()
    model = resolve_for_use(ref, store=store, verify_hash=verify_hash).refuse_twin("evaluated")
    base = resolve_for_use(reference, store=store, verify_hash=verify_hash).refuse_twin("a KL-divergence reference")
    info, base_info = read_model_file(model.path), read_model_file(base.path)
    if (info.architecture, info.vocab_size) != (base_info.architecture, base_info.vocab_size):
        raise UsageError(f"{model.label} ({info.architecture}, {info.vocab_size} tokens) and {base.label} "
                         f"({base_info.architecture}, {base_info.vocab_size} tokens) do not share a vocabulary",
                         hint="compare variants of the same model")
    text, corpus_sha, corpus_version = corpus()
    ref_data = _reference_pass(base, plan, text, corpus_sha, progress)
    found, engine = _model_pass(model, plan, ref_data, progress)
    kld = kl_per_position(ref_data["top_logp"], found["logp_at_ref"])
    figures = _figures(kld, found, ref_data)
    run = Run(kind="eval", model=model.label, backend="llama.cpp",
              settings={**plan.engine_settings().to_dict(), "top_k": plan.top_k, "max_chunks": plan.max_chunks,
                        "reference": base.label, "reference_sha256": base.manifest.sha256 if base.manifest else None},
              hardware=machine_facts(), variantlab_version=__version__,
              model_sha256=model.manifest.sha256 if model.manifest else None, file_type=info.file_type,
              engine_version=engine, suite="kld", suite_version=corpus_version, dataset_sha256=corpus_sha)
    run.metrics = {k: Metric.of(k, [figures[k]], unit) for k, unit in
                   (("mean_kld", "nats"), ("ppl", "perplexity"), ("ppl_reference", "perplexity"),
                    ("delta_ppl", "perplexity"), ("same_top_p", "fraction"))}
    own = db is None
    db = db or ResultsDB()
    try:
        db.record(run)
    finally:
        if own:
            db.close()
    return KldReport(**figures, model=model.label, reference=base.label, run_id=run.id, corpus_sha256=corpus_sha,
                     n_ctx=plan.n_ctx, chunks=len(ref_data["chunks"]), top_k=plan.top_k, file_type=info.file_type,
                     reference_file_type=base_info.file_type)


def _figures(kld: np.ndarray, found: dict[str, np.ndarray], ref_data: dict[str, np.ndarray]) -> dict[str, Any]:
    ppl, ppl_ref = float(np.exp(found["nll"].mean())), float(np.exp(ref_data["nll"].mean()))
    return {
        "mean_kld": float(kld.mean()),
        "mean_kld_stderr": float(kld.std(ddof=1) / np.sqrt(len(kld))) if len(kld) > 1 else 0.0,
        "median_kld": float(np.median(kld)),
        "p99_kld": float(np.percentile(kld, 99)),
        "max_kld": float(kld.max()),
        "ppl": ppl,
        "ppl_reference": ppl_ref,
        "delta_ppl": ppl - ppl_ref,
        "same_top_p": float((found["argmax"] == ref_data["argmax"]).mean()),
        "tokens": int(len(kld)),
    }
