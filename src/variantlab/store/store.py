"""The content-addressed model store: blobs named by sha256, one manifest per model name.

    $VARIANTLAB_HOME/
      blobs/sha256/<hex>        the bytes, read-only, shared by every name that has them
      manifests/<name>.json     name, source, file name, size, sha256, file type, time added
      tmp/                      staging for fetches; never referenced by a manifest
      cache/verified.json       sha256 of each file checked, keyed by its path, size, mtime and inode

A model registered *in place* (``models scan --import``, ``fetch file:PATH --link``) has no blob:
its manifest's ``external`` record names the file(s) another tool keeps (Ollama, LM Studio, the
Hugging Face cache), with their size, mtime, device and inode when registered. Such a file is
hashed again before use whenever it changed, and nothing in variantlab ever deletes it.

Every model reference in variantlab resolves through ``Store.resolve``. A blob enters only
through ``Store.commit``, after its hash and its GGUF header were checked, so a failed or
interrupted fetch registers nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import config
from ..errors import IntegrityError, MissingFileError, ModelFileError, StoreError, SyntheticModelError, UnknownModelError
from ..files import ProgressFn, atomic_write_text, move_into_place, no_progress, sha256_file, sha256_parts
from ..knowledge.models import builtin_names
from ..modelfile import read_model_file


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


def is_sha256(value: object) -> bool:
    """64 lower-case hex digits: the only form a blob's name may take."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True)
class Manifest:
    """What the store knows of one named model."""

    name: str
    source: str
    file_name: str
    size: int
    sha256: str
    file_type: str | None
    added_at: str
    revision: str | None = None
    lineage: dict[str, Any] | None = None  # for a file variantlab made: what from, how, with which llama.cpp
    synthetic: dict[str, Any] | None = None  # a twin: random weights with a real variant's shapes, and its origin
    external: dict[str, Any] | None = None  # registered in place: paths, their stat when registered, tool, fetch

    @property
    def external_paths(self) -> list[Path]:
        """The files of a model registered in place (the parts of a split file, first first); none for a blob."""
        return [Path(p) for p in (self.external or {}).get("paths", [])]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def to_file_dict(self) -> dict[str, object]:
        """The manifest as stored: optional records left out when absent, so an older variantlab
        sharing this store still reads every plain blob's manifest."""
        return {k: v for k, v in self.to_dict().items() if v is not None or k not in _OPTIONAL_RECORDS}


_OPTIONAL_RECORDS = ("lineage", "synthetic", "external")


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference turned into a file: from the store (with its manifest) or a path."""

    path: Path
    manifest: Manifest | None

    @property
    def label(self) -> str:
        return self.manifest.name if self.manifest else str(self.path)

    @property
    def is_twin(self) -> bool:
        return bool(self.manifest and self.manifest.synthetic)

    def refuse_twin(self, action: str) -> ResolvedModel:
        """Itself, unless it is a twin: random weights measure speed and memory, nothing else."""
        if self.manifest is not None and self.manifest.synthetic:
            origin = self.manifest.synthetic.get("variant", "a variant")
            raise SyntheticModelError(
                f"{self.manifest.name} is a synthetic twin of {origin} (random weights): it cannot be {action}",
                hint="twins measure speed and memory (`bench`, `fit --measure`); fetch the real file for this")
        return self


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of re-hashing one stored model."""

    name: str
    ok: bool
    expected: str
    found: str | None
    problem: str | None


class Store:
    """A model store rooted at one directory (by default ``config.home()``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else config.home()

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def blob_path(self, sha256: str) -> Path:
        """Where the blob of ``sha256`` lives; anything but 64 hex digits is refused, so a hand-edited
        manifest or lock cannot name a path outside the store (``../../etc/passwd``)."""
        if not is_sha256(sha256):
            raise StoreError(f"{sha256!r} is not a sha256 (64 hex digits)", hint="fix or remove the manifest or lock entry that names it")
        return self.blobs_dir / sha256

    def manifest_path(self, name: str) -> Path:
        return self.manifests_dir / (quote(name, safe="") + ".json")

    # -- reading ---------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every manifest; a bad one is an error (gc and pins must not act on a partial view)."""
        found, bad = self.readable_manifests()
        if bad:
            raise bad[0]
        return found

    def readable_manifests(self) -> tuple[list[Manifest], list[StoreError]]:
        """The manifests that read, and an error naming each one that does not (for listings)."""
        if not self.manifests_dir.is_dir():
            return [], []
        found, bad = [], []
        for path in sorted(self.manifests_dir.glob("*.json")):
            try:
                found.append(self._load_manifest(path))
            except StoreError as exc:
                bad.append(exc)
        return sorted(found, key=lambda m: m.name), bad

    def manifest(self, name: str) -> Manifest | None:
        path = self.manifest_path(name)
        return self._load_manifest(path) if path.is_file() else None

    def _load_manifest(self, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = Manifest(**data)
            if not is_sha256(manifest.sha256):
                raise ValueError(f"its sha256 {manifest.sha256!r} is not 64 hex digits")
            return manifest
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(
                f"manifest {path} is unreadable: {exc}", hint="remove it and fetch the model again"
            ) from None

    def resolve(self, ref: str, *, verify_hash: bool = False) -> ResolvedModel:
        """A store name or a file path → the file to open (store names win). A model registered in
        place is hashed again when its file changed since the last check (``verify_hash``: always)."""
        manifest = self.manifest(ref)
        if manifest is not None:
            return ResolvedModel(self.model_file(manifest, verify_hash=verify_hash), manifest)
        if _looks_like_path(ref):
            path = Path(ref).expanduser()
            if not path.exists():
                raise MissingFileError(path, hint="give a GGUF path or a name from `variantlab models list`")
            return ResolvedModel(path, self._twin_at(path))
        if ref in builtin_names():
            raise StoreError(f"model {ref!r} is not in the store yet", hint=f"run `variantlab models fetch {ref}`")
        known = [m.name for m in self.manifests()] + builtin_names()
        raise UnknownModelError(ref, difflib.get_close_matches(ref, known, n=3, cutoff=0.4))

    def model_file(self, manifest: Manifest, *, verify_hash: bool = False) -> Path:
        """The file to load for ``manifest``: its blob, or its file registered in place after checking
        that it is there and still hashes to the manifest (re-hashed only when its stat changed)."""
        if manifest.external is None:
            path = self.blob_path(manifest.sha256)
            if not path.is_file():
                raise StoreError(f"model {manifest.name!r} is registered but its blob {manifest.sha256[:12]}… is missing",
                                 hint=f"run `variantlab models fetch {manifest.name} --force`")
            return path
        paths = manifest.external_paths
        gone = [p for p in paths if not p.is_file()]
        if gone:
            raise StoreError(f"model {manifest.name!r} is registered in place at {gone[0]}, and that file is gone",
                             hint=f"put the file back, or `variantlab models rm {manifest.name}` and import it again")
        found = verified_sha256(paths, force=verify_hash)
        if found != manifest.sha256:
            raise IntegrityError(f"model {manifest.name!r} ({paths[0]})", manifest.sha256, found,
                                 hint="the file changed since it was registered in place; re-register it with "
                                      f"`variantlab models fetch file:{paths[0]} --link --force --name {manifest.name}`")
        return paths[0]

    def locate(self, sha256: str) -> list[Path] | None:
        """The file(s) holding ``sha256``: its blob, else a model registered in place with that hash
        whose files are all present; None when the store has neither (pins and gc ask by hash)."""
        blob = self.blob_path(sha256)
        if blob.is_file():
            return [blob]
        found, _ = self.readable_manifests()
        for m in found:
            if m.sha256 == sha256 and m.external and all(p.is_file() for p in m.external_paths):
                return m.external_paths
        return None

    def _twin_at(self, path: Path) -> Manifest | None:
        """The twin's manifest when ``path`` is a twin's blob (named by path, it is still a twin)."""
        try:
            if path.resolve().parent != self.blobs_dir.resolve():
                return None
        except OSError:
            return None
        found, _ = self.readable_manifests()
        return next((m for m in found if m.synthetic and m.sha256 == path.name), None)

    # -- writing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive hold on the store while blobs are removed or pinned (gc against lock add)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "store.lck", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def staging(self, suffix: str = ".part") -> Iterator[Path]:
        """A fresh path in the store's tmp dir, removed afterwards unless it was committed."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale_staging()
        path = self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def staging_dir(self, kind: str) -> tempfile.TemporaryDirectory[str]:
        """A temporary folder in tmp/ named after this process, so a later run can tell it is stale."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale_staging()
        return tempfile.TemporaryDirectory(dir=self.tmp_dir, prefix=f"{os.getpid()}-{kind}-")

    def clean_stale_staging(self) -> list[Path]:
        """Remove what killed fetches left in tmp/: entries named after a process that no longer runs."""
        removed = []
        for entry in self.tmp_dir.iterdir() if self.tmp_dir.is_dir() else ():
            owner = entry.name.split("-", 1)[0]
            if not owner.isdigit() or _process_alive(int(owner)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        return removed

    def commit(
        self,
        staged: Path,
        *,
        name: str,
        source: str,
        file_name: str,
        sha256: str | None = None,
        expected_sha256: str | None = None,
        revision: str | None = None,
        lineage: dict[str, Any] | None = None,
        file_type: str | None = None,
        synthetic: dict[str, Any] | None = None,
        progress: ProgressFn = no_progress,
    ) -> Manifest:
        """Check a fully written staging file and register it under ``name``.

        Refuses (registering nothing) when the hash differs from ``expected_sha256`` or the
        file is not a readable GGUF model. A file that llama.cpp itself just wrote may give its
        ``file_type`` instead: only its magic is checked (reading a 150k-token vocabulary
        costs seconds that a quantization to compare with llama-quantize cannot spare).
        """
        digest = sha256 or sha256_file(staged, progress)
        if expected_sha256 and digest != expected_sha256.lower():
            raise IntegrityError(f"model {name!r} ({file_name})", expected_sha256.lower(), digest)
        if file_type is None:
            try:
                file_type = read_model_file(staged).file_type
            except ModelFileError as exc:  # name the source, not the staging file
                raise ModelFileError(source, exc.problem, hint="nothing was registered") from None
        elif _magic(staged) != b"GGUF":
            raise ModelFileError(source, "the written file is not GGUF", hint="nothing was registered")
        blob = self.blob_path(digest)
        if blob.is_file():
            staged.unlink()
        else:
            staged.chmod(0o444)
            move_into_place(staged, blob)
        manifest = Manifest(
            name=name,
            source=source,
            file_name=file_name,
            size=blob.stat().st_size,
            sha256=digest,
            file_type=file_type,
            added_at=_now(),
            revision=revision,
            lineage=lineage,
            synthetic=synthetic,
        )
        return self._write_manifest(manifest)

    def register_in_place(
        self,
        paths: list[Path],
        *,
        name: str,
        source: str,
        tool: str,
        fetch: str | None = None,
        expected_sha256: str | None = None,
        revision: str | None = None,
        progress: ProgressFn = no_progress,
    ) -> Manifest:
        """Register a model another tool keeps without copying it: hashed (and checked against
        ``expected_sha256``, e.g. an Ollama blob's name), its header read, its stat recorded. A
        single file is reflinked into the store instead where the filesystem makes that free."""
        paths = [p.absolute() for p in paths]  # not resolved: a split file's parts are found by name beside the first
        digest = verified_sha256(paths, force=True, progress=progress)
        if expected_sha256 and digest != expected_sha256.lower():
            raise IntegrityError(f"model {name!r} ({paths[0]})", expected_sha256.lower(), digest,
                                 hint="the file is damaged or was replaced; nothing was registered")
        info = read_model_file(paths[0])
        if len(paths) == 1 and self._reflink_blob(paths[0], digest):
            return self._write_manifest(Manifest(
                name=name, source=source, file_name=paths[0].name, size=paths[0].stat().st_size, sha256=digest,
                file_type=info.file_type, added_at=_now(), revision=revision, lineage={"reflink_of": str(paths[0])}))
        stats = [p.stat() for p in paths]
        external = {"tool": tool, "paths": [str(p) for p in paths], "fetch": fetch,
                    "stat": [[st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino] for st in stats]}
        return self._write_manifest(Manifest(
            name=name, source=source, file_name=paths[0].name, size=sum(st.st_size for st in stats), sha256=digest,
            file_type=info.file_type, added_at=_now(), revision=revision, external=external))

    def _reflink_blob(self, path: Path, digest: str) -> bool:
        """Make the blob a copy-on-write clone of ``path`` (btrfs, XFS): no extra disk, and the
        tool's later writes never reach it. False where the filesystem cannot (ext4, another device)."""
        blob = self.blob_path(digest)
        if blob.is_file():
            return True
        with self.staging() as staged:
            try:
                with path.open("rb") as src, staged.open("wb") as dst:
                    fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
            except OSError:
                return False
            staged.chmod(0o444)
            move_into_place(staged, blob)
        return True

    def _write_manifest(self, manifest: Manifest) -> Manifest:
        atomic_write_text(self.manifest_path(manifest.name), json.dumps(manifest.to_file_dict(), indent=2) + "\n")
        return manifest

    def remove_name(self, name: str) -> Manifest:
        """Forget a name: its manifest goes; a blob is left to ``models gc``, a file registered in place is never touched."""
        manifest = self._require(name)
        self.manifest_path(name).unlink(missing_ok=True)
        return manifest

    # -- checking --------------------------------------------------------------------

    def verify(self, names: list[str] | None = None, progress: ProgressFn = no_progress) -> list[VerifyReport]:
        """Re-hash stored blobs and compare with their manifests."""
        targets = self.manifests() if not names else [self._require(n) for n in names]
        reports = []
        for m in targets:
            paths = m.external_paths or [self.blob_path(m.sha256)]
            gone = [p for p in paths if not p.is_file()]
            if gone:
                missing = f"file missing: {gone[0]}" if m.external else "blob missing"
                reports.append(VerifyReport(m.name, False, m.sha256, None, missing))
                continue
            found = verified_sha256(paths, force=True, progress=progress)
            changed = None if found == m.sha256 else "bytes changed on disk" + (f": {paths[0]}" if m.external else "")
            reports.append(VerifyReport(m.name, changed is None, m.sha256, found, changed))
        return reports

    def _require(self, name: str) -> Manifest:
        manifest = self.manifest(name)
        if manifest is None:
            known = [m.name for m in self.manifests()]
            raise UnknownModelError(name, difflib.get_close_matches(name, known, n=3, cutoff=0.4))
        return manifest


_FICLONE = 0x40049409  # linux/fs.h: FICLONE, a whole-file reflink


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _verified_cache() -> Path:
    return config.home() / "cache" / "verified.json"


def verified_sha256(paths: Path | list[Path], *, force: bool = False, progress: ProgressFn = no_progress) -> str:
    """The sha256 of a file (or of a split file's parts in order), hashed again only when a part's
    size, mtime or inode changed since the last hash, or ``force``: how every use checks its bytes cheaply."""
    parts = [paths] if isinstance(paths, Path) else list(paths)
    stamp = [[st.st_size, st.st_mtime_ns, st.st_ino] for st in (p.stat() for p in parts)]
    key = "|".join(str(p) for p in parts)
    cache_file = _verified_cache()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if not force and isinstance(entry, dict) and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    digest = sha256_parts(parts, progress)
    cache[key] = {"stamp": stamp, "sha256": digest}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache_file, json.dumps(cache))
    return digest


def _magic(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(4)


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".gguf") or os.sep in ref or ref.startswith((".", "~")) or Path(ref).exists()

