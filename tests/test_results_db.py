"""The results database: named, append-only migrations on empty and existing databases; comparisons."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from variantlab.errors import UsageError
from variantlab.results import Metric, ResultsDB, Run, compare
from variantlab.results.migrations import MIGRATIONS


def make_run(**over: object) -> Run:
    base = dict(kind="bench", model="m", backend="llama.cpp", settings={"n_threads": 2, "n_ctx": 640},
                hardware={"cpu": "cpu-x", "os": "linux"}, variantlab_version="0.1.0", model_sha256="a" * 64,
                metrics={"gen_tokens_per_s": Metric.of("gen_tokens_per_s", [10, 12, 11], "tokens/s")})
    base.update(over)
    return Run(**base)  # type: ignore[arg-type]


def test_empty_database_gets_every_migration(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]
        columns = {row[1] for row in db.conn.execute("PRAGMA table_info(runs)")}
        assert {"model_sha256", "engine_version", "suite", "dataset_sha256", "comparable_key"} <= columns


def test_existing_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsDB(path, migrations=MIGRATIONS[:1]) as old:  # a database made by an older variantlab
        run_id = old.conn.execute(
            "INSERT INTO runs (kind, created_at, status, model, backend, variantlab_version, settings, hardware, comparable_key)"
            " VALUES ('bench', '2026-01-01', 'ok', 'old-model', 'llama.cpp', '0.0.1', '{}', '{}', 'k')").lastrowid
        old.conn.execute("INSERT INTO metrics VALUES (?, 'gen_tokens_per_s', 5, 5, 5, 0, 1, 'tokens/s')", (run_id,))
        old.conn.commit()
        assert old.applied_migrations() == [MIGRATIONS[0][0]]
    with ResultsDB(path) as db:
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]
        kept = db.get(int(run_id))
        assert kept.model == "old-model" and kept.metrics["gen_tokens_per_s"].median == 5
        assert kept.suite is None and kept.metrics["gen_tokens_per_s"].samples == ()


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    broken = [*MIGRATIONS, ("0099_broken", "ALTER TABLE runs ADD COLUMN x TEXT; THIS IS NOT SQL;")]
    with pytest.raises(sqlite3.Error):
        ResultsDB(tmp_path / "r.sqlite", migrations=broken)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert "0099_broken" not in db.applied_migrations()
        assert "x" not in {row[1] for row in db.conn.execute("PRAGMA table_info(runs)")}


def test_record_and_read_back(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        run_id = db.record(make_run())
        back = db.get(run_id)
        m = back.metrics["gen_tokens_per_s"]
        assert (m.median, m.min, m.max, m.n, m.samples) == (11, 10, 12, 3, (10.0, 12.0, 11.0))
        assert back.comparable_key() == make_run().comparable_key()
        assert [r.id for r in db.runs(kind="bench")] == [run_id]
        with pytest.raises(UsageError, match="no result with id 999"):
            db.get(999)


def test_compare_reports_ratios_and_what_differs(tmp_path: Path) -> None:
    a = make_run()
    b = make_run(model_sha256="b" * 64, metrics={"gen_tokens_per_s": Metric.of("gen_tokens_per_s", [22], "tokens/s")})
    c = compare(a, b)
    assert c.comparable and c.ratios["gen_tokens_per_s"] == pytest.approx(2.0)
    other = compare(a, make_run(settings={"n_threads": 1, "n_ctx": 640}))
    assert not other.comparable and other.differences["settings.n_threads"] == (2, 1)
