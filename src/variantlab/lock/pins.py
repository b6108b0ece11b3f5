"""Pinning models to roles: add, verify, history, diff, rollback, sync, and use through the lock.

Every change runs under the lockfile's flock and goes history-first, lockfile-second (see
``lockfile.py``), so a kill at any point leaves a lock that verifies. Rollback needs no network
when the old blob is still in the store: the history holds the whole pin.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import config
from ..errors import IntegrityError, LockError, UsageError
from ..files import ProgressFn, atomic_write_text, no_progress
from ..fit import FitRequest, check_draft
from ..modelfile import read_model_file
from ..results import ResultsDB
from ..store import Manifest, ResolvedModel, Store, builtin_models, fetch, verified_sha256
from .lockfile import LOCK_NAME, HistoryEntry, LockState, Pin, append_history, find_lockfile, locked, read_history, read_lock, write_lock

FingerprintFn = Callable[[str, Path, str], dict[str, Any]]  # (role, model file, its sha256) → the fingerprint to pin with it
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def default_lock_path(path: Path | None = None) -> Path:
    return path or find_lockfile() or Path.cwd() / LOCK_NAME


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- what a pin records -----------------------------------------------------------------

def headline_results(db: ResultsDB, sha256: str) -> dict[str, Any]:
    """The latest successful figures recorded for a file: HumanEval, infill, KLD, speed."""
    headline = {"humaneval": "pass@1", "infill": "pass@1", "kld": "mean_kld", "bench": "gen_tokens_per_s"}
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for run in db.runs(model_sha256=sha256, limit=200):  # newest first
        key = run.suite or run.kind
        figure = headline.get(key)
        median = run.metrics[figure].median if figure in run.metrics else None
        if run.status != "ok" or key in seen or median is None:
            continue
        found[f"{key} {figure}"] = round(float(median), 6)
        found[f"{key} run"] = run.id
        seen.add(key)
    return found


def _fetch_spec(manifest: Manifest) -> str | None:
    if manifest.external is not None:  # registered in place: what its tool's name maps to (an HF file), if anything
        fetch = manifest.external.get("fetch")
        return str(fetch) if fetch else None
    if manifest.name in builtin_models():
        return manifest.name
    if manifest.source.startswith("hf:"):
        return manifest.source + (f"@{manifest.revision}" if manifest.revision else "")
    if manifest.source.startswith("file:"):
        return manifest.source
    return None  # derived locally (quantize, dequantize): made again, not fetched


def pin_for(manifest: Manifest, db: ResultsDB) -> Pin:
    return Pin(model=manifest.name, sha256=manifest.sha256, size=manifest.size, file_type=manifest.file_type,
               source=manifest.source, file_name=manifest.file_name, fetch=_fetch_spec(manifest),
               revision=manifest.revision, results=headline_results(db, manifest.sha256))


# -- changing the lock ------------------------------------------------------------------

def _check_role(role: str) -> None:
    if not _ROLE.match(role):
        raise UsageError(f"role name {role!r} is not allowed", hint="use lower-case letters, digits, - and _ (e.g. chat, complete, infill)")


def _change(lock_path: Path, role: str, action: str, after: Pin | None, message: str) -> HistoryEntry:
    """Record and apply one change to one role (caller holds the lock)."""
    state = read_lock(lock_path)
    entry = HistoryEntry(state.revision + 1, _now(), _user(), action, role, message, state.roles.get(role), after)
    roles = dict(state.roles)
    if after is None:
        roles.pop(role, None)
    else:
        roles[role] = after
    append_history(lock_path, entry)
    write_lock(lock_path, LockState(entry.revision, roles, state.check))
    _register(lock_path)
    return entry


def add(role: str, ref: str, *, message: str = "", lock_path: Path | None = None, store: Store | None = None,
        db: ResultsDB | None = None, progress: ProgressFn = no_progress, draft: str | None = None,
        fingerprint: FingerprintFn | None = None) -> HistoryEntry:
    """Pin ``role`` to ``ref``: a stored name, or anything ``models fetch`` takes (a built-in name,
    ``file:PATH``, ``hf:…``; a bare path is read as ``file:``), fetched into the store first when it is
    not there. Its bytes are hashed first: the pin is what is on disk. ``draft`` pins a draft model
    for speculative decoding with it, checked against the target (tokenizer, size) the same way.
    ``fingerprint`` (variantlab.consistency's, passed in by the layer above) records the model's
    behaviour with the pin; it runs before the locks are taken, so a slow one blocks nobody."""
    _check_role(role)
    store = store or Store()
    manifest = _pinnable(role, ref, store, progress)
    draft_manifest = _pinnable(f"{role} (draft)", draft, store, progress) if draft else None
    target_file = store.model_file(manifest)
    if draft_manifest is not None:
        check_draft(target_file, store.model_file(draft_manifest), draft_manifest.name,
                    FitRequest(ctx=min(4096, read_model_file(target_file).context_length or 4096)))
    recorded = fingerprint(role, target_file, manifest.sha256) if fingerprint else None
    path = default_lock_path(lock_path)
    with store.locked(), locked(path), (db or ResultsDB()) as results:
        pin = replace(pin_for(manifest, results), fingerprint=recorded)
        if draft_manifest is not None:
            pin = replace(pin, draft=pin_for(draft_manifest, results).to_dict())
        what = f"pin {manifest.name}" + (f" with draft {draft_manifest.name}" if draft_manifest else "")
        return _change(path, role, "add", pin, message or what)


def set_fingerprint(role: str, sha256: str, fingerprint: dict[str, Any], *, message: str = "",
                    lock_path: Path | None = None) -> HistoryEntry:
    """Record ``fingerprint`` with ``role``'s pin, as a change of its own in the history; refused when
    the role was re-pinned (to other bytes than ``sha256``) while the fingerprint was being made."""
    path = default_lock_path(lock_path)
    with locked(path):
        pin = read_lock(path).roles.get(role)
        if pin is None or pin.sha256 != sha256:
            raise LockError(f"role {role!r} was re-pinned or removed while its fingerprint was made",
                            hint=f"run `variantlab lock fingerprint {role}` again")
        return _change(path, role, "fingerprint", replace(pin, fingerprint=fingerprint), message or f"fingerprint of {pin.model}")


def pinned_file(role: str, pin: Pin, lock_path: Path, *, store: Store | None = None, force: bool = False) -> Path:
    """The file holding ``pin``'s bytes (a blob, or a file registered in place), checked by hash."""
    return _verify_blob(store or Store(), pin.sha256, f"role {role!r} pinned to {pin.model} in {lock_path}", force=force)


def _pinnable(what: str, ref: str, store: Store, progress: ProgressFn) -> Manifest:
    """The stored (or fetched) model ``ref`` names, not a twin, its bytes hashed now."""
    manifest = _stored_or_fetched(ref, store, progress)
    ResolvedModel(store.model_file(manifest), manifest).refuse_twin("pinned")
    _verify_blob(store, manifest.sha256, f"{what} → {manifest.name}", force=True)
    return manifest


def _stored_or_fetched(ref: str, store: Store, progress: ProgressFn) -> Manifest:
    """The stored model ``ref`` names, fetching it first when it is a fetch spec the store lacks
    (``fetch`` compares a ``file:`` spec's bytes with a stored model of the same name)."""
    if ref.startswith(("file:", "hf:")) or (ref in builtin_models() and store.manifest(ref) is None):
        return fetch(ref, store=store, progress=progress).manifest
    resolved = store.resolve(ref)
    if resolved.manifest is None:  # a file outside the store, named by its path
        return _stored_or_fetched(f"file:{resolved.path}", store, progress)
    return resolved.manifest


def remove(role: str, *, message: str = "", lock_path: Path | None = None) -> HistoryEntry:
    path = default_lock_path(lock_path)
    with locked(path):
        if role not in read_lock(path).roles:
            raise _unknown_role(path, role)
        return _change(path, role, "remove", None, message or f"remove {role}")


def rollback(role: str, *, to: int | None = None, message: str = "", lock_path: Path | None = None,
             store: Store | None = None) -> HistoryEntry:
    """Pin ``role`` back to its previous model (or to its pin at revision ``to``), from the store only."""
    store = store or Store()
    path = default_lock_path(lock_path)
    with store.locked(), locked(path):
        state = read_lock(path)
        if role not in state.roles:
            raise _unknown_role(path, role)
        target = _previous_pin(path, role, state) if to is None else _pin_at(path, role, to, state.revision)
        _verify_blob(store, target.sha256, f"{role} at its earlier pin {target.model}", force=True,
                     hint=f"the old file is not in the store: fetch it with `variantlab models fetch {target.fetch}`"
                     if target.fetch else "the old file was made locally and is gone; make it again")
        return _change(path, role, "rollback", target, message or f"roll back to {target.model}")


def _previous_pin(path: Path, role: str, state: LockState) -> Pin:
    current = state.roles[role]
    for entry in reversed(read_history(path)):
        if entry.role == role and entry.before is not None and entry.before.sha256 != current.sha256:
            return entry.before
    raise LockError(f"role {role!r} has no earlier pin to roll back to", hint="see `variantlab lock history " + role + "`")


def _pin_at(path: Path, role: str, revision: int, latest: int) -> Pin:
    if not 1 <= revision <= latest:
        raise LockError(f"revision {revision} does not exist", hint=f"revisions run from 1 to {latest}; see `variantlab lock history`")
    pinned = state_at(path, revision).get(role)
    if pinned is None:
        raise LockError(f"role {role!r} was not pinned at revision {revision}")
    return pinned


def _unknown_role(path: Path, role: str) -> LockError:
    roles = ", ".join(read_lock(path).roles) or "none"
    return LockError(f"role {role!r} is not in {path}", hint=f"pinned roles: {roles}; add one with `variantlab lock add {role} MODEL`")


# -- reading the lock -------------------------------------------------------------------

def state_at(lock_path: Path, revision: int) -> dict[str, Pin]:
    """The roles as they were right after ``revision`` (replayed from the history)."""
    roles: dict[str, Pin] = {}
    for entry in read_history(lock_path):
        if entry.revision > revision:
            break
        if entry.after is None:
            roles.pop(entry.role, None)
        else:
            roles[entry.role] = entry.after
    return roles


@dataclass(frozen=True)
class RoleChange:
    role: str
    before: Pin | None
    after: Pin | None


def diff(rev_a: int, rev_b: int, *, lock_path: Path | None = None) -> list[RoleChange]:
    """What changed between two lock states: one row per role whose pin differs."""
    path = default_lock_path(lock_path)
    latest = read_lock(path).revision
    for rev in (rev_a, rev_b):
        if not 0 <= rev <= latest:
            raise LockError(f"revision {rev} does not exist", hint=f"revisions run from 0 (empty) to {latest}")
    a, b = state_at(path, rev_a), state_at(path, rev_b)
    return [RoleChange(r, a.get(r), b.get(r)) for r in sorted(set(a) | set(b))
            if (a.get(r) and a[r].sha256) != (b.get(r) and b[r].sha256)]


def history(role: str | None = None, *, lock_path: Path | None = None) -> list[HistoryEntry]:
    path = default_lock_path(lock_path)
    if role is not None and not any(e.role == role for e in read_history(path)):
        raise _unknown_role(path, role)
    return [e for e in read_history(path) if role is None or e.role == role]


# -- verification and use ---------------------------------------------------------------

@dataclass(frozen=True)
class RoleCheck:
    role: str
    model: str
    ok: bool
    expected: str
    found: str | None
    problem: str | None


def verify(*, lock_path: Path | None = None, store: Store | None = None, force: bool = True) -> list[RoleCheck]:
    """Every pinned blob present and hashing to its pin (re-hashed unless ``force`` is False)."""
    store = store or Store()
    checks = []
    for role, pin in pins_with_drafts(read_lock(default_lock_path(lock_path)).roles):
        paths = store.locate(pin.sha256)
        if paths is None:
            checks.append(RoleCheck(role, pin.model, False, pin.sha256, None, _missing(store, pin.sha256)))
            continue
        found = verified_sha256(paths, force=force)
        checks.append(RoleCheck(role, pin.model, found == pin.sha256, pin.sha256, found,
                                None if found == pin.sha256 else f"bytes changed on disk: {paths[0]}"))
    return checks


def _gone_in_place(store: Store, sha256: str) -> Path | None:
    """The first missing file of a model registered in place with this hash, if there is one."""
    found, _ = store.readable_manifests()
    return next((p for m in found if m.sha256 == sha256 for p in m.external_paths if not p.is_file()), None)


def _missing(store: Store, sha256: str) -> str:
    """Why a pinned hash has no file: a file registered in place that went, or no blob at all."""
    gone = _gone_in_place(store, sha256)
    if gone is not None:
        return f"file registered in place is missing: {gone}"
    return "missing from the store (`variantlab lock sync`)"


def pins_with_drafts(roles: dict[str, Pin]) -> list[tuple[str, Pin]]:
    """Every role's pin, and after it its draft's under ``ROLE (draft)``."""
    found = []
    for role, pin in roles.items():
        found.append((role, pin))
        draft = pin.draft_pin(role)
        if draft is not None:
            found.append((f"{role} (draft)", draft))
    return found


def _verify_blob(store: Store, sha256: str, what: str, *, force: bool = False, hint: str | None = None) -> Path:
    """The file holding ``sha256`` (a blob or a file registered in place), checked to hash to it."""
    paths = store.locate(sha256)
    if paths is None:
        gone = _gone_in_place(store, sha256)
        if gone is not None:
            raise LockError(f"{what}: registered in place at {gone}, and that file is gone",
                            hint="put the file back, or run `variantlab lock sync` to fetch it into the store")
        raise LockError(f"{what}: blob {sha256[:12]}… is not in the store", hint=hint or "run `variantlab lock sync`")
    found = verified_sha256(paths, force=force)
    if found != sha256:
        raise IntegrityError(f"{what} ({paths[0]})", sha256, found,
                             hint="the file changed on disk; `variantlab lock sync` fetches it again, "
                                  "or `variantlab lock rollback` pins another")
    return paths[0]


def resolve_for_use(ref: str, *, store: Store | None = None, verify_hash: bool = False,
                    lock_path: Path | None = None) -> ResolvedModel:
    """Resolve a model for loading: a role of the lock in force (or a name it pins) goes to the
    pinned blob, whose hash is checked first (cached by size and mtime; ``verify_hash`` forces it)."""
    store = store or Store()
    path = lock_path or find_lockfile()
    state = read_lock(path) if path else LockState(0, {})
    pin = state.roles.get(ref) or next((p for p in state.roles.values() if p.model == ref), None)
    if pin is None:
        return store.resolve(ref, verify_hash=verify_hash)
    role = ref if ref in state.roles else next(r for r, p in state.roles.items() if p is pin)
    blob = _verify_blob(store, pin.sha256, f"role {role!r} pinned to {pin.model} in {path}", force=verify_hash)
    manifest = Manifest(name=pin.model, source=pin.source, file_name=pin.file_name, size=pin.size, sha256=pin.sha256,
                        file_type=pin.file_type, added_at="", revision=pin.revision)
    return ResolvedModel(blob, manifest)


def resolve_draft_for_use(target_ref: str, target: ResolvedModel, draft_ref: str | None, request: FitRequest, *,
                          store: Store | None = None, verify_hash: bool = False,
                          lock_path: Path | None = None) -> ResolvedModel | None:
    """The draft model to speculate with: ``draft_ref``, else the draft pinned with the role
    ``target_ref`` names (None when there is neither). Checked against the target before anything
    loads (``fit.check_draft``): tokenizer, size, memory beside it."""
    store = store or Store()
    if draft_ref is None:
        path = lock_path or find_lockfile()
        roles = read_lock(path).roles if path else {}
        pinned = roles[target_ref].draft_pin(target_ref) if target_ref in roles else None
        if pinned is None:
            return None
        blob = _verify_blob(store, pinned.sha256, f"the draft pinned with role {target_ref!r} ({pinned.model})", force=verify_hash)
        draft = ResolvedModel(blob, Manifest(name=pinned.model, source=pinned.source, file_name=pinned.file_name,
                                             size=pinned.size, sha256=pinned.sha256, file_type=pinned.file_type, added_at=""))
    else:
        draft = resolve_for_use(draft_ref, store=store, verify_hash=verify_hash, lock_path=lock_path).refuse_twin("used as a draft")
    check_draft(target.path, draft.path, draft.label, request)
    return draft


def sync(*, lock_path: Path | None = None, store: Store | None = None, progress: ProgressFn = no_progress) -> list[str]:
    """Fetch every pinned blob that is missing or damaged, checking each against its pin."""
    store = store or Store()
    path = default_lock_path(lock_path)
    fetched: list[str] = []
    with store.locked():
        return _sync_locked(path, store, progress, fetched)


def _sync_locked(path: Path, store: Store, progress: ProgressFn, fetched: list[str]) -> list[str]:
    for check in verify(lock_path=path, store=store, force=False):
        if check.ok:
            continue
        pin = dict(pins_with_drafts(read_lock(path).roles))[check.role]
        if pin.fetch is None:
            raise LockError(f"role {check.role!r}: {pin.model} was made locally ({pin.source}) and cannot be fetched",
                            hint="make it again with the same command, or `variantlab lock rollback` the role")
        blob = store.blob_path(pin.sha256)
        if blob.exists():  # a damaged blob of ours (a file registered in place is never touched): make way for a fresh one
            blob.chmod(0o644)
            blob.unlink()
        fetch(pin.fetch, store=store, name=pin.model, expected_sha256=pin.sha256, force=True, progress=progress)
        fetched.append(check.role)
    return fetched


# -- lockfiles known to this store (for garbage collection) -----------------------------

def _registry() -> Path:
    return config.home() / "lockfiles.json"


def known_lockfiles() -> list[Path]:
    try:
        return [Path(p) for p in json.loads(_registry().read_text())]
    except (OSError, ValueError):
        return []


def _register(lock_path: Path) -> None:
    paths = {str(p) for p in known_lockfiles()} | {str(lock_path.resolve())}
    _registry().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_registry(), json.dumps(sorted(paths)))


__all__ = ["Pin", "RoleChange", "RoleCheck", "add", "diff", "headline_results", "history", "known_lockfiles",
           "remove", "resolve_for_use", "rollback", "state_at", "sync", "verify", "verified_sha256"]
