"""Version control for local models: the lockfile, its history, verification before use, gc.

``lockfile`` is the format (TOML lock + JSON-lines history, atomic writes under a flock),
``pins`` the operations (add, verify, history, diff, rollback, sync, resolve_for_use), ``gc``
the removal of blobs nothing refers to.
"""

from .lockfile import LOCK_NAME, HistoryEntry, LockState, Pin, find_lockfile, read_lock
from .pins import (
                   FingerprintFn,
                   add,
                   default_lock_path,
                   diff,
                   history,
                   pinned_file,
                   remove,
                   resolve_draft_for_use,
                   resolve_for_use,
                   rollback,
                   set_fingerprint,
                   state_at,
                   sync,
                   verify,
)

__all__ = ["LOCK_NAME", "FingerprintFn", "HistoryEntry", "LockState", "Pin", "add", "default_lock_path", "diff", "find_lockfile", "history",
           "pinned_file", "read_lock", "remove", "set_fingerprint", "resolve_draft_for_use", "resolve_for_use", "rollback", "state_at", "sync", "verify"]
