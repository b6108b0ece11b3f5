"""The lockfile (``variantlab.lock``, TOML) and its history (``variantlab.lock.history``, JSON lines).

The lockfile says which model each role uses now; the history says every change that led
there. A change first appends its history entry (with the next revision number), then replaces
the lockfile atomically; an entry whose revision is above the lockfile's is a change that was
interrupted before it took effect, and is ignored (and dropped by the next change). Both files
are changed only under an exclusive ``flock`` on ``variantlab.lock.lck``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import LockError
from ..files import atomic_write_text, fsync_dir

LOCK_NAME = "variantlab.lock"
FORMAT_VERSION = 1
HEADER = ("# variantlab.lock: the models this project uses, pinned by sha256.\n"
          "# Written by `variantlab lock`; commit it. History: variantlab.lock.history\n")


@dataclass(frozen=True)
class Pin:
    """One role's model: where it comes from, what its bytes hash to, and why it was chosen."""

    model: str
    sha256: str
    size: int
    file_type: str | None
    source: str
    file_name: str
    fetch: str | None = None  # how `lock sync` gets it again (None: derived locally, cannot be fetched)
    revision: str | None = None
    results: dict[str, Any] = field(default_factory=dict)  # run ids and headline figures at pin time
    draft: dict[str, Any] | None = None  # the draft model for speculative decoding: its own pin's fields
    fingerprint: dict[str, Any] | None = None  # greedy outputs and quick figures at pin time (variantlab.consistency)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def draft_pin(self, role: str) -> Pin | None:
        """The pinned draft model, read as a pin of its own."""
        return Pin.from_dict(f"{role} (draft)", self.draft) if self.draft else None

    @classmethod
    def from_dict(cls, role: str, data: dict[str, Any]) -> Pin:
        try:
            return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})
        except TypeError as exc:
            raise LockError(f"role {role!r} in the lockfile is missing a field ({exc})",
                            hint="restore the lockfile from version control or `variantlab lock rollback`") from None


@dataclass(frozen=True)
class LockState:
    revision: int
    roles: dict[str, Pin]
    check: dict[str, Any] = field(default_factory=dict)  # `[check]`: the thresholds of `lock check`, kept as written


@dataclass(frozen=True)
class HistoryEntry:
    revision: int
    at: str
    user: str
    action: str  # add, rollback, remove
    role: str
    message: str
    before: Pin | None
    after: Pin | None

    def to_json(self) -> str:
        data = asdict(self)
        data["before"] = self.before.to_dict() if self.before else None
        data["after"] = self.after.to_dict() if self.after else None
        return json.dumps(data, sort_keys=True)


def find_lockfile(start: Path | None = None) -> Path | None:
    """``$VARIANTLAB_LOCKFILE``, else ``variantlab.lock`` in this directory or the nearest parent."""
    env = os.environ.get("VARIANTLAB_LOCKFILE")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / LOCK_NAME).is_file():
            return folder / LOCK_NAME
    return None


def history_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".history")


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold the exclusive lock for changing ``lock_path`` and its history."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path.with_name(lock_path.name + ".lck"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_lock(lock_path: Path) -> LockState:
    """The lockfile's state; an absent file is an empty lock at revision 0."""
    if not lock_path.exists():
        return LockState(0, {})
    try:
        data = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{lock_path}: not valid TOML ({exc})",
                        hint="fix it by hand, or restore it from version control; nothing was changed") from None
    except UnicodeDecodeError:
        raise LockError(f"{lock_path}: not UTF-8 text", hint="restore it from version control") from None
    if data.get("version") != FORMAT_VERSION:
        raise LockError(f"{lock_path}: lockfile format {data.get('version')!r} is not {FORMAT_VERSION}",
                        hint="this variantlab writes format 1")
    roles = data.get("roles", {})
    if not isinstance(roles, dict) or not all(isinstance(v, dict) for v in roles.values()):
        raise LockError(f"{lock_path}: [roles] must be tables, one per role")
    check = data.get("check", {})
    if not isinstance(check, dict):
        raise LockError(f"{lock_path}: [check] must be a table of thresholds", hint="see `variantlab lock check --help`")
    return LockState(int(data.get("revision", 0)), {r: Pin.from_dict(r, v) for r, v in sorted(roles.items())}, check)


def write_lock(lock_path: Path, state: LockState) -> None:
    """Replace the lockfile atomically (a reader sees the old or the new file, never half of one)."""
    body: dict[str, Any] = {"version": FORMAT_VERSION, "revision": state.revision}
    if state.check:
        body["check"] = state.check
    body["roles"] = {r: p.to_dict() for r, p in sorted(state.roles.items())}
    atomic_write_text(lock_path, HEADER + tomli_w.dumps(body))


def _history_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The history file's entries as JSON objects and its count of lines, read once; a last line
    cut by a kill is dropped."""
    if not path.exists():
        return [], 0
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the change this line began never took effect
            raise LockError(f"{path}:{number}: not JSON", hint="restore the history file from version control") from None
    return records, len(lines)


def read_history(lock_path: Path, upto: int | None = None) -> list[HistoryEntry]:
    """Every committed change, oldest first (entries above the lockfile's revision never took effect)."""
    records, _ = _history_records(history_path(lock_path))
    if not records:
        return []
    limit = read_lock(lock_path).revision if upto is None else upto
    return [HistoryEntry(d["revision"], d["at"], d["user"], d["action"], d["role"], d["message"],
                         Pin.from_dict(d["role"], d["before"]) if d["before"] else None,
                         Pin.from_dict(d["role"], d["after"]) if d["after"] else None)
            for d in records if d["revision"] <= limit]


def append_history(lock_path: Path, entry: HistoryEntry) -> None:
    """Add one entry durably, first dropping entries of changes that never took effect."""
    path = history_path(lock_path)
    records, line_count = _history_records(path)
    kept = [json.dumps(d, sort_keys=True) for d in records if d["revision"] < entry.revision]
    if len(kept) != line_count:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    with open(path, "a", encoding="utf-8") as f:
        f.write(entry.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)
