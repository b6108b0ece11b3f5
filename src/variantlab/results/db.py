"""The one results database: every measurement with what makes it comparable.

SQLite in the user directory. ``ResultsDB`` applies pending migrations when it opens.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import config
from ..errors import UsageError
from .migrations import MIGRATIONS

# The settings and facts that must be equal for two numbers to be compared.
COMPARABLE_SETTINGS = ("n_threads", "n_ctx", "n_batch", "n_ubatch", "n_gpu_layers", "flash_attn", "n_prompt", "n_gen", "n_depth")
SETTING_DEFAULTS = {"n_depth": 0}  # a setting recorded only since it existed: older runs had the default
COMPARABLE_HARDWARE = ("cpu", "physical_cores", "logical_cores", "gpus", "os")


@dataclass(frozen=True)
class Metric:
    """A measured quantity over repetitions: median with its spread."""

    name: str
    median: float | None
    min: float | None
    max: float | None
    stdev: float | None
    n: int
    unit: str
    samples: tuple[float, ...] = ()

    @classmethod
    def of(cls, name: str, values: Iterable[float], unit: str) -> Metric:
        vals = [float(v) for v in values]
        if not vals:
            return cls(name, None, None, None, None, 0, unit)
        return cls(name, statistics.median(vals), min(vals), max(vals),
                   statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), unit, tuple(vals))


@dataclass
class Run:
    """One recorded run and its metrics."""

    kind: str
    model: str
    backend: str
    settings: dict[str, Any]
    hardware: dict[str, Any]
    variantlab_version: str
    status: str = "ok"
    error: str | None = None
    model_sha256: str | None = None
    file_type: str | None = None
    engine_version: str | None = None
    suite: str | None = None
    suite_version: str | None = None
    dataset_sha256: str | None = None
    metrics: dict[str, Metric] = field(default_factory=dict)
    id: int | None = None
    created_at: str | None = None

    def comparable_key(self) -> str:
        facts = {
            "kind": self.kind, "model_sha256": self.model_sha256 or self.model, "backend": self.backend,
            "engine": self.engine_version, "suite": self.suite, "suite_version": self.suite_version,
            "dataset": self.dataset_sha256,
            "settings": {k: self.settings.get(k, SETTING_DEFAULTS.get(k)) for k in COMPARABLE_SETTINGS},
            "hardware": {k: _steady(k, self.hardware.get(k)) for k in COMPARABLE_HARDWARE},
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "metrics"}
        data["comparable_key"] = self.comparable_key()
        data["metrics"] = {name: m.__dict__ for name, m in self.metrics.items()}
        return data


def _steady(key: str, value: Any) -> Any:
    """A hardware fact without what changes from minute to minute (a GPU's free memory)."""
    if key == "gpus" and isinstance(value, list):
        return [{k: v for k, v in gpu.items() if k != "free_bytes"} if isinstance(gpu, dict) else gpu for gpu in value]
    return value


def default_path() -> Path:
    return config.home() / "results.sqlite"


class ResultsDB:
    """Open (creating and migrating as needed) the results database."""

    def __init__(self, path: Path | None = None, migrations: list[tuple[str, str]] = MIGRATIONS) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self._migrate(migrations)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM migrations ORDER BY name")]

    def _migrate(self, migrations: list[tuple[str, str]]) -> None:
        self.conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = set(self.applied_migrations())
        for name, sql in migrations:
            if name in done:
                continue
            quoted = name.replace("'", "''")
            record = f"INSERT INTO migrations VALUES ('{quoted}', '{_now()}');"
            try:  # the migration and its record in one transaction: all or nothing
                self.conn.executescript(f"BEGIN;\n{sql}\n{record}\nCOMMIT;")
            except sqlite3.Error:
                self.conn.rollback()
                raise

    def record(self, run: Run) -> int:
        """Store a run and its metrics; return its id."""
        return self.record_many([run])[0]

    def record_many(self, runs: list[Run], then: Callable[[list[int]], Run] | None = None) -> list[int]:
        """Store runs in one transaction (all or none: a unit of cluster work is recorded whole) and return
        their ids; ``then`` makes one more run from those ids (a record that names them), stored with them."""
        with self.conn:
            ids = [self._insert(run) for run in runs]
            if then is not None:
                self._insert(then(ids))
            return ids

    def _insert(self, run: Run) -> int:
        """Insert one run and its metrics inside the caller's transaction."""
        cur = self.conn.execute(
            """INSERT INTO runs (kind, created_at, status, error, model, model_sha256, file_type, backend,
               engine_version, variantlab_version, settings, hardware, comparable_key, suite, suite_version,
               dataset_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (run.kind, run.created_at or _now(), run.status, run.error, run.model, run.model_sha256, run.file_type,
             run.backend, run.engine_version, run.variantlab_version, json.dumps(run.settings),
             json.dumps(run.hardware), run.comparable_key(), run.suite, run.suite_version, run.dataset_sha256),
        )
        run_id = int(cur.lastrowid or 0)
        self.conn.executemany(
            "INSERT INTO metrics (run_id, name, median, min, max, stdev, n, unit, samples) VALUES (?,?,?,?,?,?,?,?,?)",
            [(run_id, m.name, m.median, m.min, m.max, m.stdev, m.n, m.unit, json.dumps(list(m.samples)))
             for m in run.metrics.values()],
        )
        run.id = run_id
        return run_id

    def runs(self, kind: str | None = None, model_sha256: str | None = None, limit: int = 100,
             model: str | None = None) -> list[Run]:
        sql, args = "SELECT * FROM runs WHERE 1=1", list[Any]()
        if kind:
            sql, args = sql + " AND kind = ?", [*args, kind]
        if model:
            sql, args = sql + " AND model = ?", [*args, model]
        if model_sha256:
            sql, args = sql + " AND model_sha256 = ?", [*args, model_sha256]
        rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
        return [self._run(row) for row in rows]

    def get(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no result with id {run_id}", hint="see `variantlab results list`")
        return self._run(row)

    def _run(self, row: sqlite3.Row) -> Run:
        metrics = {
            m["name"]: Metric(m["name"], m["median"], m["min"], m["max"], m["stdev"], m["n"], m["unit"],
                              tuple(json.loads(m["samples"] or "[]")))
            for m in self.conn.execute("SELECT * FROM metrics WHERE run_id = ? ORDER BY name", (row["id"],))
        }
        return Run(
            kind=row["kind"], model=row["model"], backend=row["backend"], settings=json.loads(row["settings"]),
            hardware=json.loads(row["hardware"]), variantlab_version=row["variantlab_version"], status=row["status"],
            error=row["error"], model_sha256=row["model_sha256"], file_type=row["file_type"],
            engine_version=row["engine_version"], suite=row["suite"], suite_version=row["suite_version"],
            dataset_sha256=row["dataset_sha256"], metrics=metrics, id=row["id"], created_at=row["created_at"],
        )


@dataclass(frozen=True)
class Comparison:
    """Two runs side by side: whether they are comparable, what differs, and metric ratios (b / a)."""

    a: Run
    b: Run
    comparable: bool
    differences: dict[str, tuple[Any, Any]]
    ratios: dict[str, float | None]


def compare(a: Run, b: Run) -> Comparison:
    diffs: dict[str, tuple[Any, Any]] = {}
    for attr in ("kind", "model_sha256", "backend", "engine_version", "suite", "suite_version", "dataset_sha256"):
        if getattr(a, attr) != getattr(b, attr):
            diffs[attr] = (getattr(a, attr), getattr(b, attr))
    for k in COMPARABLE_SETTINGS:
        va, vb = a.settings.get(k, SETTING_DEFAULTS.get(k)), b.settings.get(k, SETTING_DEFAULTS.get(k))
        if va != vb:
            diffs[f"settings.{k}"] = (va, vb)
    for k in COMPARABLE_HARDWARE:
        if a.hardware.get(k) != b.hardware.get(k):
            diffs[f"hardware.{k}"] = (a.hardware.get(k), b.hardware.get(k))
    ratios = {}
    for name in sorted(set(a.metrics) & set(b.metrics)):
        ma, mb = a.metrics[name].median, b.metrics[name].median
        ratios[name] = (mb / ma) if ma and mb is not None else None
    # a different model is the point of most comparisons; everything else must match
    comparable = not any(k not in ("model_sha256",) for k in diffs)
    return Comparison(a, b, comparable, diffs, ratios)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
