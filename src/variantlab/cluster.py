"""`--cluster`: ladders, evals, benches and twin ladders fanned out over a Ray cluster.

Ray does the scheduling, the moving of bytes and the retrying; this module keeps variantlab's
promises across it. Each unit of work (a ladder rung, a shard of eval problems, one bench of one
model, one twin rung) is a Ray task that takes the node's one ``variantlab`` slot, so timed work
never shares a node, and ``num_cpus`` equal to its threads. A worker brings the model into *its
own* store, from the driver through Ray's object store in chunks (or, for an ``hf:`` model, from
the hub itself), and the sha256 is checked before anything loads it. The unit then runs the same
library calls as the local path, into a results file of the worker's own, and returns its runs.

The driver writes what comes back to its results database, each run with the worker's hardware
and node, one unit in one transaction, with a ``cluster_unit`` record saying that unit is done.
A unit whose node dies is retried by Ray elsewhere and only its finished attempt is recorded; an
interrupted driver finds the done units and does not send them again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import __version__
from .bench import BenchPlan, BenchResult, bench_models
from .errors import ClusterError, UsageError, VariantlabError
from .eval import humaneval as he
from .eval.reports import EvalReport, Scores
from .eval.run import EvalPlan, decode_groups, evaluate, score_metrics, task_ids
from .eval.sandbox import isolation_warning, weakest_of
from .files import ProgressFn, no_progress
from .hardware import machine_facts, profile
from .ladder import LadderPlan, LadderResult, LadderRow, choose, choose_twins, run_ladder, run_twin_ladder
from .lock.pins import resolve_for_use
from .results import ResultsDB, Run
from .store import Manifest, ResolvedModel, Store, fetch

LOG = logging.getLogger(__name__)
SLOT = "variantlab"  # the per-node resource each unit takes whole: one timed unit per node at a time
CHUNK_BYTES = 64 * 1024 * 1024  # a model crosses the object store in pieces of this size
UNIT_KIND = "cluster_unit"  # the results-database record of a finished unit (what a resumed driver skips)
INSTALL_HINT = "install the extra: pip install 'variantlab[cluster]'"
START_HINT = ("start one with `ray start --head --resources '{\"variantlab\": 1}'` (and on each other machine "
              "`ray start --address HEAD:6379 --resources '{\"variantlab\": 1}'`), or give its address")


@dataclass(frozen=True)
class ClusterPlan:
    """Where the cluster is and how often a unit whose node died is tried again elsewhere."""

    address: str = "auto"  # "auto": $RAY_ADDRESS, else the cluster started on this machine
    max_retries: int = 2

    def checked(self) -> ClusterPlan:
        if not self.address.strip():
            raise UsageError("--cluster needs an address", hint="give auto, HOST:PORT or ray://HOST:PORT")
        if not 0 <= self.max_retries <= 10:
            raise UsageError(f"--retries {self.max_retries} is out of range", hint="use 0 to 10")
        return self


@dataclass(frozen=True)
class Shipment:
    """How a worker gets one model's bytes: from the driver in chunks, or from its origin (``hf:``)."""

    name: str
    sha256: str
    size: int
    file_name: str
    source: str
    file_type: str | None
    revision: str | None
    lineage: dict[str, Any] | None
    chunks: tuple[Any, ...] = ()  # Ray object refs, in order; empty when the worker fetches from the origin


@dataclass(frozen=True)
class UnitOutcome:
    """What a unit sends back: where it ran, the runs it made, and its result (or the one-line error)."""

    node: dict[str, Any]
    runs: list[Run]
    result: dict[str, Any]
    error: str | None = None


# -- connecting --------------------------------------------------------------------------------

def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--cluster needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def connect(plan: ClusterPlan, threads: int | None = None) -> Any:
    """Join the cluster (once per process) and check it has a node that can take a unit; returns ``ray``."""
    plan = plan.checked()
    ray = _ray()
    if not ray.is_initialized():
        _require_reachable(plan.address)
        try:
            with _stderr_held():
                ray.init(address=plan.address, logging_level=logging.ERROR, log_to_driver=False,
                         include_dashboard=False, configure_logging=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or ValueError for the same mistake
            raise ClusterError(f"cannot join the Ray cluster at {plan.address!r}: {_first_line(exc)}", hint=START_HINT) from None
        _notices_to_log(ray)
    _require_slots(ray, threads or 1)
    return ray


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Ray's C++ core writes its start-up notices straight to file descriptor 2; they are held back while
    joining (the error, if any, is raised as one line), so stderr keeps to progress and errors."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _notices_to_log(ray: Any) -> None:
    """Ray prints the cluster's notices (a node that died, a unit retried) on the driver's *stdout*, where
    they would corrupt ``--json``; they go to this module's logger instead, one line each (stderr by default)."""
    module = getattr(getattr(ray, "_private", None), "worker", None)
    if module is None or not hasattr(module, "print_to_stdstream"):
        return

    def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines") or []:
            text = str(line).strip()
            if text:
                LOG.warning("ray: %s", text.splitlines()[0][:300])

    module.print_to_stdstream = to_log


def _require_reachable(address: str) -> None:
    """Refuse at once an address nothing answers on (Ray itself retries for minutes)."""
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    target = target.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        if address != "auto":
            raise UsageError(f"--cluster {address!r} is not an address", hint="give auto, HOST:PORT or ray://HOST:PORT")
        return  # auto without $RAY_ADDRESS: Ray looks for the cluster started on this machine and says if there is none
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: nothing answers on {host}:{port} ({exc.strerror or exc})",
                           hint=START_HINT) from None


def _require_slots(ray: Any, cpus: int) -> None:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    able = [n for n in nodes if n["Resources"].get(SLOT, 0) >= 1 and n["Resources"].get("CPU", 0) >= cpus]
    if not able:
        have = ", ".join(f"{n['NodeManagerAddress']} (CPU {n['Resources'].get('CPU', 0):g}, {SLOT} "
                         f"{n['Resources'].get(SLOT, 0):g})" for n in nodes) or "no live node"
        raise ClusterError(f"no node of the cluster has a {SLOT!r} slot and {cpus} CPU(s): {have}",
                           hint="start nodes with `ray start ... --resources '{\"variantlab\": 1}'`"
                                + (f" and at least {cpus} CPUs, or ask for fewer --threads" if cpus > 1 else ""))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# -- moving model bytes ------------------------------------------------------------------------

def ship(ray: Any, manifest: Manifest, store: Store) -> Shipment:
    """A model's shipment: an ``hf:`` model is fetched by the worker from the hub; any other is put into
    Ray's object store in chunks by the driver (checked by hash here first, as every use is)."""
    base = Shipment(manifest.name, manifest.sha256, manifest.size, manifest.file_name, manifest.source,
                    manifest.file_type, manifest.revision, manifest.lineage)
    if manifest.source.startswith("hf:"):
        return base
    path = store.model_file(manifest, verify_hash=True)
    chunks = []
    with open(path, "rb") as f:
        while piece := f.read(CHUNK_BYTES):
            chunks.append(ray.put(piece))
    return replace(base, chunks=tuple(chunks))


def receive(shipment: Shipment, store: Store) -> Manifest:
    """On the worker: the model in its own store, with the sha256 the driver named, checked before use."""
    have = store.manifest(shipment.name)
    if have is not None and have.sha256 == shipment.sha256:
        store.model_file(have, verify_hash=True)
        return have
    if not shipment.chunks:
        return fetch(shipment.source, store=store, name=shipment.name, expected_sha256=shipment.sha256, force=True).manifest
    import ray

    digest = hashlib.sha256()
    with store.staging(".gguf") as staged:
        with open(staged, "wb") as out:
            for ref in shipment.chunks:
                piece = ray.get(ref)
                digest.update(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        return store.commit(staged, name=shipment.name, source=shipment.source, file_name=shipment.file_name,
                            sha256=digest.hexdigest(), expected_sha256=shipment.sha256, revision=shipment.revision,
                            lineage=shipment.lineage, file_type=shipment.file_type)


# -- the units (run on the workers) ------------------------------------------------------------

def _node() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname()}


def _node_threads() -> int:
    """The CPUs the worker's node offers Ray: the threads a unit uses when none were asked for."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            return max(1, int(node["Resources"].get("CPU", 1)))
    return 1


@contextlib.contextmanager
def _worker_db() -> Iterator[ResultsDB]:
    """The worker's own results file (beside its store, never the user's database): a unit sent again to the
    same node reuses what it measured, as the local ladder does."""
    from . import config

    with ResultsDB(config.home() / "cluster-worker.sqlite") as db:
        yield db


def _unit(work: Callable[[], tuple[list[Run], dict[str, Any]]]) -> UnitOutcome:
    """Run a unit's work, turning a variantlab error into one line the driver reports (nothing recorded)."""
    node = _node()
    try:
        runs, result = work()
    except VariantlabError as exc:
        return UnitOutcome(node, [], {}, error=str(exc))
    facts = {**machine_facts(), "node": node}
    for run in runs:
        run.hardware = {**run.hardware, "node": node}
    return UnitOutcome({**node, "machine": facts}, runs, result)


def _threads(threads: int | None) -> int:
    return threads if threads is not None else _node_threads()


def ladder_rung_unit(plan: LadderPlan, shipment: Shipment) -> UnitOutcome:
    """One rung of a ladder: quantize, fit, bench, accuracy and KLD, as the local ladder measures it."""
    def work() -> tuple[list[Run], dict[str, Any]]:
        store = Store()
        made = receive(shipment, store)
        with _worker_db() as db:
            result = run_ladder(replace(plan, source=made.name, threads=_threads(plan.threads)), store=store, db=db)
            row = result.rows[0]
            runs = [db.get(run_id) for run_id in _run_ids(row)]
        return runs, result.to_dict()
    return _unit(work)


def _run_ids(row: LadderRow) -> list[int]:
    """The distinct runs behind a row, in order (what a unit sends back and the driver records)."""
    return list(dict.fromkeys(r for r in row.runs.values() if r is not None))


def twin_rung_unit(plan: LadderPlan) -> UnitOutcome:
    """One rung of a twin ladder: the variant's twin written, fitted and benched on the worker."""
    def work() -> tuple[list[Run], dict[str, Any]]:
        with _worker_db() as db:
            result = run_twin_ladder(replace(plan, threads=_threads(plan.threads)), store=Store(), db=db)
            runs = [db.get(run_id) for run_id in _run_ids(result.rows[0])]
        return runs, result.to_dict()
    return _unit(work)


def eval_shard_unit(plan: EvalPlan, shipment: Shipment) -> UnitOutcome:
    """A shard of eval problems (``plan.only``), generated and scored in the worker's sandbox."""
    def work() -> tuple[list[Run], dict[str, Any]]:
        store = Store()
        made = receive(shipment, store)
        threaded = replace(plan, settings=replace(plan.settings, n_threads=_threads(plan.settings.n_threads)))
        with store.staging_dir("shard") as tmp, ResultsDB(Path(tmp) / "shard.sqlite") as db:  # recorded by the driver only
            report = evaluate(made.name, threaded, store=store, db=db)
            runs = [db.get(report.run_id)] if report.run_id is not None else []
        return runs, report.to_dict()
    return _unit(work)


def bench_unit(plan: BenchPlan, shipment: Shipment) -> UnitOutcome:
    """One bench of one model on the worker's node, alone on it."""
    def work() -> tuple[list[Run], dict[str, Any]]:
        store = Store()
        made = receive(shipment, store)
        threaded = replace(plan, settings=replace(plan.settings, n_threads=_threads(plan.settings.n_threads)))
        with _worker_db() as db:
            result = bench_models([made.name], threaded, store=store, db=db)[0]
            runs = [db.get(result.run_id)] if result.run_id is not None else []
        return runs, asdict(result)
    return _unit(work)


# -- the driver --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """One unit to send: what it is (for progress and resume), the function and its arguments."""

    key: str
    label: str
    work: Callable[..., UnitOutcome]
    args: tuple[Any, ...]
    num_cpus: int


def unit_key(kind: str, *parts: Any) -> str:
    """A stable name for a unit of work: same work, same key (how a resumed driver knows it is done)."""
    text = json.dumps([kind, __version__, *parts], sort_keys=True, default=str)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def done_units(db: ResultsDB) -> dict[str, Run]:
    """The units already recorded, by key."""
    return {run.settings["unit"]: run for run in db.runs(kind=UNIT_KIND, limit=100_000) if "unit" in run.settings}


def run_units(ray: Any, units: list[Unit], plan: ClusterPlan, db: ResultsDB, record: Callable[[Unit, UnitOutcome], None],
              progress: ProgressFn = no_progress) -> None:
    """Send the units not done yet, one bar over all of them, and record each as it comes back.

    Ray retries a unit whose worker or node died (``max_retries``); a unit that failed on its own
    terms (a variantlab error) stops the run with that error, after the units already recorded.
    """
    done = done_units(db)
    todo = [u for u in units if u.key not in done]
    total, finished = len(units), len(units) - len(todo)
    progress(f"cluster: {finished} of {total} units already done" if finished else f"cluster: {total} units", finished, total)
    pending = {}
    for unit in todo:
        remote = ray.remote(unit.work).options(num_cpus=unit.num_cpus, resources={SLOT: 1}, max_retries=plan.max_retries,
                                               retry_exceptions=False, name=unit.label)
        pending[remote.remote(*unit.args)] = unit
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            outcome = _outcome(ray, ready[0], unit)
            record(unit, outcome)
            finished += 1
            progress(f"cluster: {unit.label} done on {outcome.node.get('ip')} ({outcome.node.get('node_id', '')[:8]}); "
                     f"{len(pending)} running or queued", finished, total)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _outcome(ray: Any, ref: Any, unit: Unit) -> UnitOutcome:
    try:
        outcome: UnitOutcome = ray.get(ref)
    except Exception as exc:  # the unit's node died more often than it may be retried, or Ray itself failed
        raise ClusterError(f"{unit.label} did not finish on the cluster: {_first_line(exc)}",
                           hint="nothing of it was recorded; run again to send the units not done") from None
    if outcome.error:
        raise ClusterError(f"{unit.label} failed on {outcome.node.get('ip')}: {outcome.error}",
                           hint="nothing of it was recorded")
    return outcome


def _record_unit_only(db: ResultsDB, unit: Unit, outcome: UnitOutcome) -> None:
    record_unit(db, unit, outcome)


def record_unit(db: ResultsDB, unit: Unit, outcome: UnitOutcome) -> dict[int, int]:
    """Record a unit's runs and its done-record (with their ids here) in one transaction; returns the
    workers' run ids → ours."""
    fresh = [replace(run, id=None) for run in outcome.runs]

    def marker(ids: list[int]) -> Run:
        return Run(kind=UNIT_KIND, model=unit.label, backend="ray",
                   settings={"unit": unit.key, "runs": ids, "result": outcome.result},
                   hardware=outcome.node.get("machine", {}), variantlab_version=__version__)

    ids = db.record_many(fresh, then=marker)
    return {old.id: new for old, new in zip(outcome.runs, ids) if old.id is not None}


def _stored(ref: str, store: Store) -> tuple[ResolvedModel, Manifest]:
    """A model to send: a lock role or a store name (hash-checked as for local use); a bare path is refused."""
    resolved = resolve_for_use(ref, store=store)
    if resolved.manifest is None:
        raise UsageError(f"{ref} is a path, not a model in the store",
                         hint=f"run `variantlab models fetch file:{ref}` first: a cluster sends models by hash")
    return resolved, resolved.manifest


# -- ladder --------------------------------------------------------------------------------------

def cluster_ladder(plan: LadderPlan, cluster: ClusterPlan, *, store: Store | None = None, db: ResultsDB | None = None,
                   progress: ProgressFn = no_progress) -> LadderResult:
    """``ladder --cluster``: one unit per rung; the table is the local ladder's, each row naming its node."""
    plan = plan.checked()
    store = store or Store()
    ray = connect(cluster, plan.threads)
    source, manifest = _stored(plan.source, store)
    shipment = ship(ray, manifest, store)
    units = [Unit(unit_key("ladder_rung", manifest.sha256, _plan_key(plan, t)), f"rung {t}", ladder_rung_unit,
                  (replace(plan, types=(t,), source=manifest.name), shipment), plan.threads or 1)
             for t in plan.types]
    return _ladder(ray, plan, units, cluster, db, progress, source.label, manifest.sha256)


def cluster_twin_ladder(plan: LadderPlan, cluster: ClusterPlan, *, db: ResultsDB | None = None,
                        progress: ProgressFn = no_progress) -> LadderResult:
    """``ladder --twin --cluster``: one twin rung per unit; nothing is shipped (a twin is made where it runs)."""
    plan = plan.checked()
    ray = connect(cluster, plan.threads)
    units = [Unit(unit_key("twin_rung", _plan_key(plan, t)), f"twin {t}", twin_rung_unit, (replace(plan, types=(t,)),),
                  plan.threads or 1) for t in plan.types]
    return _ladder(ray, plan, units, cluster, db, progress, plan.source, None)


def _plan_key(plan: LadderPlan, rung: str) -> dict[str, Any]:
    return {**asdict(replace(plan, types=(rung,), source="")), "rung": rung}


def _ladder(ray: Any, plan: LadderPlan, units: list[Unit], cluster: ClusterPlan, db: ResultsDB | None,
            progress: ProgressFn, source_label: str, source_sha256: str | None) -> LadderResult:
    twin = source_sha256 is None  # a twin ladder has no source file
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results:
        def record(unit: Unit, outcome: UnitOutcome) -> None:
            row = LadderResult.from_dict(outcome.result).rows[0]
            mapping = record_unit(results, unit, outcome)
            rows[unit.key] = _row_here(row, mapping, outcome.node.get("machine", {}))

        rows: dict[str, LadderRow] = {}
        run_units(ray, units, cluster, results, record, progress)
        done = done_units(results)
        for unit in units:  # the units an earlier, interrupted driver finished
            if unit.key not in rows:
                marker = done[unit.key]
                row = LadderResult.from_dict(marker.settings["result"]).rows[0]
                mapping = dict(zip(_run_ids(row), marker.settings["runs"]))
                rows[unit.key] = _row_here(row, mapping, marker.hardware)
        first = LadderResult.from_dict(done[units[0].key].settings["result"])
        ordered = [rows[u.key] for u in units]
        result = replace(first, source=source_label, types=list(plan.types), rows=ordered,
                         picks=choose_twins(ordered) if twin else choose(ordered), machine=profile(), run_id=None,
                         created_at=None)
        result = replace(result, rules=[*result.rules, *_machine_rules(ordered)])
        run = Run(kind="ladder", model=f"twin:{source_label}" if twin else source_label, backend="llama.cpp",
                  settings=result.to_dict(), hardware=machine_facts(), variantlab_version=__version__,
                  model_sha256=source_sha256, suite=plan.suite)
        results.record(run)
        return replace(result, run_id=run.id)


def _row_here(row: LadderRow, mapping: dict[int, int], facts: dict[str, Any]) -> LadderRow:
    """A worker's row with its run ids turned into this database's, and the node and machine that measured it."""
    runs = {step: mapping.get(run_id) if run_id is not None else None for step, run_id in row.runs.items()}
    return replace(row, runs=runs, node=_node_label(facts.get("node", {})), machine=machine_label(facts))


def machine_label(facts: dict[str, Any]) -> str:
    """A kind of machine, as speed depends on it: CPU model, cores, GPUs."""
    gpus = ", ".join(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in facts.get("gpus") or [])
    return f"{facts.get('cpu', '?')}, {facts.get('physical_cores', '?')} cores" + (f", {gpus}" if gpus else "")


def _node_label(node: dict[str, Any]) -> str:
    return f"{node.get('hostname', '?')} {node.get('ip', '?')} ({str(node.get('node_id', ''))[:8]})"


def _machine_rules(rows: list[LadderRow]) -> list[str]:
    """When rungs were measured on different kinds of machine, speed compares only within one."""
    machines = {r.machine for r in rows}
    if len(machines) <= 1:
        return []
    return [f"speed was measured on {len(machines)} kinds of machine ({'; '.join(sorted(machines))}): compare speed "
            "only between rows of one machine; accuracy and KLD do not depend on it"]


# -- eval ------------------------------------------------------------------------------------------

def cluster_eval(ref: str, plan: EvalPlan, cluster: ClusterPlan, *, store: Store | None = None, db: ResultsDB | None = None,
                 progress: ProgressFn = no_progress) -> EvalReport:
    """``eval --cluster``: one shard per decoding group of the local eval (``decode_groups``), each
    generated and run in a worker's sandbox; the outcomes merged task by task into one run, as the
    local eval records it. Whole groups make the sharded run decode what the local run does."""
    plan = plan.checked()
    if plan.suite not in ("humaneval", "infill") or plan.draft:
        raise UsageError(f"eval --cluster runs the humaneval and infill suites, not {plan.suite!r}",
                         hint="run other suites (and --draft) without --cluster")
    store = store or Store()
    ray = connect(cluster, plan.settings.n_threads)
    resolved, manifest = _stored(ref, store)
    resolved.refuse_twin("evaluated")
    ids = task_ids(plan)
    parts = decode_groups(ids, plan.parallel)
    count = len(parts)
    shipment = ship(ray, manifest, store)
    shard_plan = replace(plan, samples_out=None)
    units = [Unit(unit_key("eval_shard", manifest.sha256, asdict(replace(shard_plan, only=part))),
                  f"shard {i + 1}/{count}", eval_shard_unit, (replace(shard_plan, only=part), shipment),
                  plan.settings.n_threads or 1) for i, part in enumerate(parts)]
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results:
        run_units(ray, units, cluster, results, functools.partial(_record_unit_only, results), progress)
        done = done_units(results)
        shard_runs = [results.get(done[u.key].settings["runs"][0]) for u in units]
        reports = [done[u.key].settings["result"] for u in units]
        return _merged(shard_runs, reports, ids, results)


def _merged(shard_runs: list[Run], reports: list[dict[str, Any]], ids: list[str], db: ResultsDB) -> EvalReport:
    """One eval run from its shards: per-task outcomes in the suite's order, pass@k over all of them."""
    per_task = {tid: r["per_task"][tid] for r in reports for tid in r["per_task"]}
    per_task = {tid: per_task[tid] for tid in ids}
    by_task = {tid: [v["passed"] for v in (outcome if isinstance(outcome, list) else [outcome])] for tid, outcome in per_task.items()}
    isolation = weakest_of([r["sandbox_isolation"] for r in reports])
    first = shard_runs[0]
    settings = {k: v for k, v in first.settings.items() if k != "shard"}
    settings["cluster"] = {"shards": len(shard_runs), "nodes": sorted({_node_label(r.hardware.get("node", {})) for r in shard_runs})}
    scores = Scores(he.pass_at_k(by_task, (1, 10, 100)), len(ids), sum(len(v) for v in by_task.values()),
                    sum(sum(v) for v in by_task.values()), isolation, isolation_warning(isolation))
    run = replace(first, id=None, created_at=None, settings={**settings, "sandbox_isolation": isolation},
                  metrics=score_metrics(scores))
    db.record(run)
    head = reports[0]
    return EvalReport(**vars(scores), model=head["model"], run_id=run.id,
                      model_sha256=run.model_sha256, file_type=run.file_type, suite=head["suite"],
                      suite_version=run.suite_version, dataset_sha256=run.dataset_sha256, prompt_style=head["prompt_style"],
                      temperature=head["temperature"], samples_per_task=head["samples_per_task"],
                      generation_s=max(r["generation_s"] for r in reports),
                      generated_tokens=sum(r["generated_tokens"] for r in reports),
                      cut_at_max_tokens=sum(r["cut_at_max_tokens"] for r in reports), per_task=per_task,
                      drafted_tokens=sum(r["drafted_tokens"] for r in reports),
                      accepted_tokens=sum(r["accepted_tokens"] for r in reports),
                      decode_passes=sum(r["decode_passes"] for r in reports))


# -- bench -----------------------------------------------------------------------------------------

def cluster_bench(refs: list[str], plan: BenchPlan, cluster: ClusterPlan, *, store: Store | None = None,
                  db: ResultsDB | None = None, progress: ProgressFn = no_progress) -> list[BenchResult]:
    """``bench --cluster``: one unit per model, each alone on a node; results in the order given, each with its node."""
    asked = plan.settings.n_threads  # None: as many as each node gives Ray CPUs (checked() would take this machine's cores)
    plan = plan.checked()
    plan = replace(plan, settings=replace(plan.settings, n_threads=asked))
    if plan.speculate:
        raise UsageError("bench --cluster times plain decoding", hint="run --lookup/--draft benches without --cluster")
    store = store or Store()
    ray = connect(cluster, plan.settings.n_threads)
    manifests = [_stored(ref, store)[1] for ref in refs]  # every name resolved before anything is sent
    shipments = {m.sha256: ship(ray, m, store) for m in manifests}  # a model named twice is sent once
    units = [Unit(unit_key("bench", m.sha256, plan.recorded(), i), f"bench {m.name}", bench_unit, (plan, shipments[m.sha256]),
                  plan.settings.n_threads or 1) for i, m in enumerate(manifests)]
    with ResultsDB() if db is None else contextlib.nullcontext(db) as results:
        run_units(ray, units, cluster, results, functools.partial(_record_unit_only, results), progress)
        done = done_units(results)
        out = []
        for unit in units:
            marker = done[unit.key]
            data = dict(marker.settings["result"])
            data["run_id"] = marker.settings["runs"][0] if marker.settings["runs"] else None
            out.append(replace(BenchResult(**data), node=_node_label(marker.hardware.get("node", {}))))
        return out
