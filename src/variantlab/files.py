"""Hashing and atomic writes: the one place variantlab hashes a file or replaces one.

A write goes to a temporary file in the destination's directory, is fsynced, then
renamed over the target, and the directory is fsynced: a crash leaves the old file or the
new one, never half of either.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

CHUNK = 4 * 1024 * 1024

# progress(phase, done, total): the library reports, the CLI draws.
ProgressFn = Callable[[str, int, "int | None"], None]


def no_progress(phase: str, done: int, total: int | None) -> None:
    """The default progress sink: say nothing."""


def sha256_file(path: Path, progress: ProgressFn = no_progress) -> str:
    """The hex sha256 of a file, read in large chunks."""
    return sha256_parts([path], progress)


def sha256_parts(paths: Iterable[Path], progress: ProgressFn = no_progress) -> str:
    """The hex sha256 of files read one after another: a split GGUF's identity is the hash of its
    parts in order, so a change in any part changes it."""
    paths = list(paths)
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in paths)
    done = 0
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                done += len(chunk)
                progress("hash", done, total)
    return digest.hexdigest()


def copy_hashing(
    sources: Iterable[IO[bytes]], dest: Path, total: int | None, progress: ProgressFn = no_progress
) -> tuple[str, int]:
    """Concatenate readable streams into ``dest`` (fsynced); return its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        for src in sources:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress("copy", size, total)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def move_into_place(staged: Path, dest: Path) -> None:
    """Durably rename a finished, fsynced file to its final name (same filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, dest)
    fsync_dir(dest.parent)
