"""Find the GGUF files other tools already keep, and register them in place (`models scan`).

Each tool is read the way it writes its own folder:

- Ollama (``OLLAMA_MODELS``, default ``~/.ollama/models``): ``manifests/<registry>/<namespace>/
  <model>/<tag>`` JSON, whose layers name ``blobs/sha256-<hex>`` by digest; the layer's media type
  says model, projector or adapter.
- LM Studio (``~/.lmstudio/models``, the older ``~/.cache/lm-studio/models``, or the folder its home
  pointer names): ``<publisher>/<repo>/<file>.gguf``.
- The Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``): through ``huggingface_hub.scan_cache_dir``.
- llama.cpp's download cache (``LLAMA_CACHE``, default ``~/.cache/llama.cpp``) and any ``--path``:
  every ``*.gguf`` below.

A split GGUF (``-00001-of-00003``) is one model. Whether a file is a model, a LoRA adapter or a
projector comes from its header (the one reader, ``read_model_file``). Nothing here raises for a
bad folder or file: each problem is one row of the report, and the scan goes on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import IntegrityError, ModelFileError, VariantlabError
from ..files import ProgressFn, no_progress
from ..modelfile import SPLIT_NAME, read_model_file, split_parts
from .store import Manifest, Store, is_sha256

TOOLS = ("ollama", "lmstudio", "huggingface", "llama.cpp", "path")
_OLLAMA_LAYERS = {"application/vnd.ollama.image.model": "model",
                  "application/vnd.ollama.image.projector": "projector",
                  "application/vnd.ollama.image.adapter": "adapter"}
_HEADER_KINDS = {None: "model", "model": "model", "adapter": "adapter", "mmproj": "projector"}
# what a download in progress looks like: Ollama's -partial, huggingface_hub's .incomplete,
# llama.cpp's .downloadInProgress, browsers' and LM Studio's .part / .crdownload
_UNFINISHED = re.compile(r"(\.gguf.*\.(part|partial|incomplete|downloadInProgress|crdownload|tmp)$)"
                         r"|(\.incomplete$)|(^sha256-[0-9a-f]{64}-partial)")


@dataclass(frozen=True)
class Found:
    """One GGUF file (or split set) another tool keeps, as that tool names it."""

    tool: str  # ollama, lmstudio, huggingface, llama.cpp, path
    name: str  # its name in that tool: codellama:13b-instruct-q4_K_M, hf:owner/repo/file@rev, …
    store_name: str  # the name it gets in variantlab: the tool's, prefixed (ollama/codellama:…)
    paths: tuple[Path, ...]  # the file, or a split file's parts in order
    size: int
    kind: str  # model, adapter, projector, incomplete, unreadable
    file_type: str | None = None
    sha256: str | None = None  # known without hashing: Ollama's blob name, the HF cache's blob name
    fetch: str | None = None  # how a lock can fetch it again
    revision: str | None = None
    known_as: str | None = None  # the variantlab name that already has it
    problem: str | None = None

    @property
    def importable(self) -> bool:
        return self.kind == "model" and self.problem is None


@dataclass(frozen=True)
class ScanProblem:
    """A folder or file the scan could not use, and why; the scan went on."""

    tool: str
    where: str
    problem: str


@dataclass
class ScanReport:
    found: list[Found] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    searched: list[tuple[str, str]] = field(default_factory=list)  # (tool, folder), present or not


@dataclass(frozen=True)
class ImportOutcome:
    found: Found
    manifest: Manifest | None
    already: bool
    problem: str | None


# -- where each tool keeps its files ------------------------------------------------------

def default_locations(env: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """The folders each tool uses on this machine, honouring its own environment variables."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    hf_home = Path(env.get("HF_HOME") or cache / "huggingface")
    found = [("ollama", Path(env.get("OLLAMA_MODELS") or home / ".ollama" / "models"))]
    found += [("lmstudio", p) for p in _lmstudio_folders(home)]
    found.append(("huggingface", Path(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or hf_home / "hub")))
    found.append(("llama.cpp", Path(env.get("LLAMA_CACHE") or cache / "llama.cpp")))
    return [(tool, p.expanduser()) for tool, p in found]


def _lmstudio_folders(home: Path) -> list[Path]:
    """LM Studio's models folder: the one its settings name, its home pointer's, then the defaults."""
    folders = []
    pointer = home / ".lmstudio-home-pointer"
    lms_home = Path(_read_text(pointer).strip()) if pointer.is_file() else home / ".lmstudio"
    settings = _read_json(lms_home / "settings.json")
    if isinstance(settings, dict) and isinstance(settings.get("downloadsFolder"), str):
        folders.append(Path(settings["downloadsFolder"]))
    folders += [lms_home / "models", home / ".cache" / "lm-studio" / "models"]
    return list(dict.fromkeys(folders))


# -- scanning -----------------------------------------------------------------------------

def scan(paths: tuple[Path, ...] | list[Path] = (), *, defaults: bool = True, env: Mapping[str, str] | None = None,
         store: Store | None = None, progress: ProgressFn = no_progress) -> ScanReport:
    """Every GGUF file in the tools' folders (``defaults``) and under ``paths``, each with its
    name in that tool, its kind and file type from the header, and the variantlab name that has it."""
    store = store or Store()
    report = ScanReport()
    locations = (default_locations(env) if defaults else []) + [("path", Path(p).expanduser()) for p in paths]
    readers = {"ollama": _scan_ollama, "lmstudio": _scan_lmstudio, "huggingface": _scan_huggingface,
               "llama.cpp": _scan_folder, "path": _scan_folder}
    seen: set[tuple[Path, ...]] = set()
    for tool, folder in locations:
        report.searched.append((tool, str(folder)))
        if tool != "path" and not folder.exists():
            continue  # the tool is not installed: nothing to say
        if not folder.is_dir():
            report.problems.append(ScanProblem(tool, str(folder), "not a folder (or unreadable)"))
            continue
        for item in readers[tool](tool, folder, report):
            key = tuple(p.absolute() for p in item.paths)
            if key not in seen:
                seen.add(key)
                report.found.append(item)
    report.found = _with_headers(_unique_names(report.found), progress)
    report.found = _with_known(report.found, store)
    return report


def _scan_ollama(tool: str, root: Path, report: ScanReport) -> Iterator[Found]:
    manifests, blobs = root / "manifests", root / "blobs"
    for file in _walk(tool, manifests, report):
        parts = file.relative_to(manifests).parts
        if len(parts) != 4:
            continue  # not <registry>/<namespace>/<model>/<tag>
        name = _ollama_name(*parts)
        data = _read_json(file)
        layers = data.get("layers") if isinstance(data, dict) else None
        if not isinstance(layers, list):
            report.problems.append(ScanProblem(tool, str(file), "manifest is not Ollama's JSON (no layers)"))
            continue
        for layer in layers:
            kind = _OLLAMA_LAYERS.get(layer.get("mediaType", "")) if isinstance(layer, dict) else None
            if kind is None:
                continue  # template, params, licence, system prompt
            digest = str(layer.get("digest", ""))
            match = re.fullmatch(r"sha256[:-]([0-9a-f]{64})", digest)
            if match is None:
                report.problems.append(ScanProblem(tool, str(file), f"layer digest {digest!r} is not sha256"))
                continue
            blob = blobs / f"sha256-{match[1]}"
            label = name if kind == "model" else f"{name} ({kind})"
            if not blob.is_file():
                report.problems.append(ScanProblem(tool, str(file), f"{label}: its blob {blob.name} is missing"))
                continue
            yield Found(tool, label, f"ollama/{name}", (blob,), blob.stat().st_size, kind, sha256=match[1])
    for entry in _listdir(tool, blobs, report):
        if _UNFINISHED.search(entry.name):
            report.problems.append(ScanProblem(tool, entry.path, "an unfinished download (Ollama's -partial)"))


def _ollama_name(registry: str, namespace: str, model: str, tag: str) -> str:
    """Ollama's own short name: ``codellama:13b`` for its library, the full path for the rest."""
    if registry == "registry.ollama.ai":
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{registry}/{namespace}/{model}:{tag}"


def _scan_lmstudio(tool: str, root: Path, report: ScanReport) -> Iterator[Found]:
    for item in _scan_folder(tool, root, report):
        rel = item.paths[0].relative_to(root).as_posix()
        parts = rel.split("/")
        fetch = f"hf:{parts[0]}/{parts[1]}/{'/'.join(parts[2:])}" if len(parts) >= 3 else None
        yield replace(item, name=rel, store_name=f"lmstudio/{rel}", fetch=fetch)


def _scan_folder(tool: str, root: Path, report: ScanReport) -> Iterator[Found]:
    """Every ``*.gguf`` below ``root`` (split sets grouped), named by its path inside ``root``."""
    files = []
    for path in _walk(tool, root, report):
        if _UNFINISHED.search(path.name):
            report.problems.append(ScanProblem(tool, str(path), "an unfinished download"))
        elif path.name.endswith(".gguf"):
            files.append(path)
    for parts, problem in _group_splits(files):
        rel = _strip_split(parts[0]).relative_to(root).as_posix()
        prefix = "path" if tool == "path" else tool
        found = Found(tool, rel if tool != "path" else str(_strip_split(parts[0])), f"{prefix}/{rel}", tuple(parts),
                      sum(_size(p) for p in parts), "incomplete" if problem else "model",
                      fetch=f"file:{parts[0]}" if tool == "path" else None, problem=problem)
        yield found


def _scan_huggingface(tool: str, root: Path, report: ScanReport) -> Iterator[Found]:
    """The Hugging Face cache through huggingface_hub's own scanner (snapshots → blobs, refs)."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(root)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub's CacheNotFound, ValueError, OSError
        report.problems.append(ScanProblem(tool, str(root), f"not a Hugging Face cache: {exc}"))
        return
    for warning in info.warnings:
        report.problems.append(ScanProblem(tool, str(root), f"huggingface_hub: {warning}"))
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        for entry in _listdir(tool, repo.repo_path / "blobs", report):
            if entry.name.endswith(".incomplete"):
                report.problems.append(ScanProblem(tool, entry.path, f"an unfinished download of {repo.repo_id}"))
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            files = {f.file_path: f for f in rev.files if f.file_path.name.endswith(".gguf")}
            for parts, problem in _group_splits(list(files)):
                rel = parts[0].relative_to(rev.snapshot_path).as_posix()
                blob = files[parts[0]].blob_path.name
                spec = f"{repo.repo_id}/{rel}"
                yield Found(tool, f"hf:{spec}@{rev.commit_hash}", f"hf/{spec}", tuple(parts),
                            sum(files[p].size_on_disk for p in parts), "incomplete" if problem else "model",
                            sha256=blob if len(parts) == 1 and is_sha256(blob) else None,
                            fetch=f"hf:{spec}@{rev.commit_hash}", revision=rev.commit_hash, problem=problem)


# -- files and folders, without tracebacks ------------------------------------------------

def _walk(tool: str, root: Path, report: ScanReport) -> Iterator[Path]:
    """Files below ``root``, following links to folders once; unreadable folders and links that
    loop or point nowhere are reported and skipped."""
    visited: set[str] = set()

    def walk(folder: Path) -> Iterator[Path]:
        real = os.path.realpath(folder)
        if real in visited:
            report.problems.append(ScanProblem(tool, str(folder), "a symbolic link loop (this folder was already searched)"))
            return
        visited.add(real)
        for entry in _listdir(tool, folder, report):
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    yield from walk(path)
                elif entry.is_file():
                    yield path
                elif entry.is_symlink():
                    report.problems.append(ScanProblem(tool, entry.path, "a symbolic link that loops or points nowhere"))
            except OSError as exc:  # ELOOP: a link that loops
                why = "a symbolic link that loops or points nowhere" if entry.is_symlink() else f"unreadable: {exc.strerror or exc}"
                report.problems.append(ScanProblem(tool, entry.path, why))

    if root.is_dir():
        yield from walk(root)


def _listdir(tool: str, folder: Path, report: ScanReport) -> list[os.DirEntry[str]]:
    if not folder.is_dir():
        return []
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        report.problems.append(ScanProblem(tool, str(folder), f"unreadable folder: {exc.strerror or exc}"))
        return []


def _group_splits(files: list[Path]) -> Iterator[tuple[list[Path], str | None]]:
    """Each file alone, except split parts: one entry per set, first part first (or the problem)."""
    for path in sorted(files):
        match = SPLIT_NAME.match(path.name)
        if match is None:
            yield [path], None
        elif int(match["no"]) == 1:
            try:
                yield split_parts(path), None
            except ModelFileError as exc:
                yield [path], exc.problem
        elif not path.with_name(f"{match['stem']}-00001-of-{match['count']}.gguf").exists():
            yield [path], f"part {int(match['no'])} of a split GGUF whose first part is missing"


def _strip_split(path: Path) -> Path:
    match = SPLIT_NAME.match(path.name)
    return path.with_name(f"{match['stem']}.gguf") if match else path


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _read_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path) or "null")
    except ValueError:
        return None


# -- what each file is, and whether variantlab has it -------------------------------------

def _unique_names(found: list[Found]) -> list[Found]:
    """Store names clash when one file has several revisions in the HF cache: those get ``@rev``."""
    counts: dict[str, int] = {}
    for item in found:
        counts[item.store_name] = counts.get(item.store_name, 0) + 1
    return [replace(f, store_name=f"{f.store_name}@{f.revision[:8]}") if counts[f.store_name] > 1 and f.revision else f
            for f in found]


def _with_headers(found: list[Found], progress: ProgressFn) -> list[Found]:
    """Kind and file type from each file's header; a file the reader refuses is listed as unreadable."""
    out = []
    for i, item in enumerate(found):
        progress("headers", i, len(found))
        if item.kind == "incomplete":
            out.append(item)
            continue
        try:
            header = read_model_file(item.paths[0])
        except VariantlabError as exc:
            out.append(replace(item, kind="unreadable", problem=getattr(exc, "problem", None) or exc.message))
            continue
        kind = _HEADER_KINDS.get(header.general_type, header.general_type or "model")
        out.append(replace(item, kind=kind if item.kind == "model" else item.kind, file_type=header.file_type))
    progress("headers", len(found), len(found))
    return out


def _with_known(found: list[Found], store: Store) -> list[Found]:
    """The variantlab name that already has each file: by its free hash, or by its path in place."""
    manifests, _ = store.readable_manifests()
    by_sha = {m.sha256: m.name for m in manifests}
    by_path = {tuple(str(p) for p in m.external_paths): m.name for m in manifests if m.external}
    out = []
    for item in found:
        known = (by_sha.get(item.sha256) if item.sha256 else None) or by_path.get(tuple(str(p.absolute()) for p in item.paths))
        out.append(replace(item, known_as=known) if known else item)
    return out


# -- registering in place -----------------------------------------------------------------

def import_found(found: list[Found], *, store: Store | None = None, progress: ProgressFn = no_progress) -> list[ImportOutcome]:
    """Register every importable model in place (hashed; an Ollama or HF blob checked against its
    name); adapters, projectors, unfinished and unreadable files are left out with the reason."""
    store = store or Store()
    outcomes = []
    for item in found:
        if not item.importable:
            why = item.problem or f"a {item.kind}, not a model to run"
            outcomes.append(ImportOutcome(item, None, False, why))
        elif item.known_as is not None:
            outcomes.append(ImportOutcome(item, store.manifest(item.known_as), True, None))
        else:
            outcomes.append(_import_one(item, store, progress))
    return outcomes


def _import_one(item: Found, store: Store, progress: ProgressFn) -> ImportOutcome:
    # the source as `models list` shows it: hf:owner/repo/file (its revision apart), ollama:name, …
    source = item.name.split("@", 1)[0] if item.tool == "huggingface" else f"{item.tool}:{item.name}"
    try:
        manifest = store.register_in_place(list(item.paths), name=item.store_name, source=source, tool=item.tool,
                                           fetch=item.fetch, expected_sha256=item.sha256, revision=item.revision,
                                           progress=progress)
    except IntegrityError as exc:
        what = f"its content does not match its name sha256-{exc.expected[:12]}…" if item.tool == "ollama" \
            else "its content does not match the hash its tool recorded"
        return ImportOutcome(item, None, False, f"{what} (found {exc.found[:12]}…): not imported")
    except VariantlabError as exc:
        return ImportOutcome(item, None, False, f"{exc.message}: not imported")
    return ImportOutcome(item, manifest, False, None)
