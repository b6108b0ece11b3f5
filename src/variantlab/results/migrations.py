"""The results database's schema, as named migrations applied in order. Append only:
never edit a migration that has shipped; add a new one."""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_runs_and_metrics",
        """
        CREATE TABLE runs (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,
            kind               TEXT NOT NULL,            -- bench, eval, ...
            created_at         TEXT NOT NULL,
            status             TEXT NOT NULL,            -- ok, failed
            error              TEXT,
            model              TEXT NOT NULL,            -- store name or path, as the user gave it
            model_sha256       TEXT,
            file_type          TEXT,
            backend            TEXT NOT NULL,            -- llama.cpp, openai
            engine_version     TEXT,                     -- llama-cpp-python version and llama.cpp build info
            variantlab_version TEXT NOT NULL,
            settings           TEXT NOT NULL,            -- JSON: threads, context, batch, ...
            hardware           TEXT NOT NULL,            -- JSON: cpu, cores, ram, gpus, os
            comparable_key     TEXT NOT NULL             -- hash of everything that must match to compare
        );
        CREATE TABLE metrics (
            run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name    TEXT NOT NULL,
            median  REAL,
            min     REAL,
            max     REAL,
            stdev   REAL,
            n       INTEGER NOT NULL,
            unit    TEXT NOT NULL,
            PRIMARY KEY (run_id, name)
        );
        """,
    ),
    (
        "0002_model_index_and_suites",
        """
        CREATE INDEX runs_by_model ON runs (model_sha256, kind);
        ALTER TABLE runs ADD COLUMN suite TEXT;             -- eval suite name (humaneval, infill, kld)
        ALTER TABLE runs ADD COLUMN suite_version TEXT;
        ALTER TABLE runs ADD COLUMN dataset_sha256 TEXT;
        """,
    ),
    (
        "0003_metric_samples",
        """
        ALTER TABLE metrics ADD COLUMN samples TEXT;        -- JSON list of the per-repetition values
        """,
    ),
]
