"""`models gc`: remove the blobs that no lock pins and no recent result refers to.

Only ``blobs/sha256/`` is collected: a file registered in place (Ollama's, LM Studio's, the
Hugging Face cache's) belongs to its tool and is never deleted, whatever pins it.

Plan first (what goes, what stays and why, bytes freed); the caller confirms; then, under the
store's lock, each blob's manifests are removed before the blob itself, so a kill in the
middle leaves at worst a blob without a name (removed by the next gc), never a name or a pin
without its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import LockError
from ..results import ResultsDB
from ..store import Store
from .lockfile import read_history, read_lock
from .pins import known_lockfiles, pins_with_drafts


@dataclass
class GcPlan:
    remove: dict[str, list[str]] = field(default_factory=dict)  # sha256 → names it carries
    keep: dict[str, str] = field(default_factory=dict)  # sha256 → why
    bytes_freed: int = 0


def plan(store: Store | None = None, *, keep_days: int = 30, db: ResultsDB | None = None) -> GcPlan:
    store = store or Store()
    keep: dict[str, str] = {}
    for lock in known_lockfiles():
        if not lock.exists():
            continue
        try:
            for role, pin in pins_with_drafts(read_lock(lock).roles):
                keep.setdefault(pin.sha256, f"pinned as {role!r} in {lock}")
        except LockError as exc:
            raise LockError(f"cannot plan a gc: {exc.message}", hint="fix that lockfile first; nothing was removed") from None
    since = datetime.now(timezone.utc) - timedelta(days=keep_days)
    own = db is None
    db = db or ResultsDB()
    try:
        for run in db.runs(limit=100_000):
            if run.model_sha256 and run.created_at and datetime.fromisoformat(run.created_at) >= since:
                keep.setdefault(run.model_sha256, f"has results from the last {keep_days} days (run {run.id})")
    finally:
        if own:
            db.close()
    names: dict[str, list[str]] = {}
    twins: set[str] = set()
    for m in store.manifests():
        if m.external is None:  # files registered in place are not the store's to remove (nor are their names)
            names.setdefault(m.sha256, []).append(m.name)
        if m.synthetic:
            twins.add(m.sha256)
    for sha in twins:  # a kept twin's bytes are random: its results stay in the database, the file can go
        if not keep.get(sha, "").startswith("pinned"):
            keep.pop(sha, None)
    blobs = sorted(p.name for p in store.blobs_dir.glob("*") if p.is_file()) if store.blobs_dir.exists() else []
    blobs.sort(key=lambda sha: sha not in twins)  # twins first
    result = GcPlan(keep={s: keep[s] for s in blobs if s in keep})
    for sha in blobs:
        if sha not in keep:
            result.remove[sha] = names.get(sha, [])
            result.bytes_freed += store.blob_path(sha).stat().st_size
    return result


def collect(gc_plan: GcPlan, store: Store | None = None) -> list[str]:
    """Carry out a plan: manifests first, then the blob (re-checking pins under the store lock)."""
    store = store or Store()
    removed = []
    with store.locked():
        still_pinned = {pin.sha256 for lock in known_lockfiles() if lock.exists() for _, pin in pins_with_drafts(read_lock(lock).roles)}
        names_by_sha: dict[str, list[str]] = {}
        for m in store.manifests():  # read again under the lock: names may have come since the plan
            if m.external is None:  # a name registered in place does not live on the blob: it stays
                names_by_sha.setdefault(m.sha256, []).append(m.name)
        for sha in gc_plan.remove:
            if sha in still_pinned:
                continue  # pinned since the plan was made
            for name in names_by_sha.get(sha, []):
                store.manifest_path(name).unlink(missing_ok=True)
            blob = store.blob_path(sha)
            if blob.exists():
                blob.chmod(0o644)
                blob.unlink()
            removed.append(sha)
    return removed


def history_only_pins() -> set[str]:
    """Blobs pinned earlier in some lock's history but not now (a gc makes their rollback need a fetch)."""
    shas = set()
    for lock in known_lockfiles():
        if lock.exists():
            current = {p.sha256 for _, p in pins_with_drafts(read_lock(lock).roles)}
            for entry in read_history(Path(lock)):
                for pin in (entry.before, entry.after):
                    if pin and pin.sha256 not in current:
                        shas.add(pin.sha256)
    return shas
