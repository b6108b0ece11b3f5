"""The twin: a file with a variant's exact header and tensor table, filled with valid random blocks.

Speed and memory of a llama.cpp model depend on tensor shapes and types, not on weight
values (llama-bench feeds random tokens; vLLM benchmarks with ``--load-format dummy``). A twin
runs at the real file's speed and takes its memory, so a variant can be measured here before
its 20 GB are downloaded. The header comes from:

- a local GGUF or stored model: its own bytes (this is how fidelity is checked);
- ``hf:OWNER/REPO/FILE.gguf[@REV]``: the remote header, read by range requests (store.remote);
- a catalog variant or published file name: written here from the catalog's architecture and
  llama.cpp's per-tensor recipe (what ``fit`` predicts), with a tokenizer of the right size.

The data are pools of random rows per (type, row length), quantized by ggml's own quantizer
(engine.random_rows) and tiled, written sequentially and hashed on the way. A twin is stored
marked ``synthetic`` with its origin; eval, serve and lock refuse it, gc removes it first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gguf

from .bench import BenchPlan, BenchResult, MeasuredFit, bench_models, fit_measured
from .engine import random_rows
from .errors import EngineError, MissingFileError, ModelFileError, StoreError, UnknownModelError, UsageError
from .files import ProgressFn, no_progress
from .fit import FitRequest, gguf_file_bytes, network_from_catalog
from .knowledge.catalog import CatalogVariant, find_variant
from .modelfile import ModelFile, read_header, read_model_file
from .results import ResultsDB
from .store import Manifest, Store
from .store.remote import fetch_header

GENERATOR = "variantlab-twin-2"  # the recipe of the random blocks: a twin's identity includes it
# Each (type, row length) pool holds at least this many bytes of rows, and each tensor starts at its
# own row of it: a twin tiled from 16 rows (about 10 KB, every tensor alike) generated 11 % slower
# than the real Qwen2.5-Coder 0.5B on this CPU, one tiled from about 2 MB 2 % (docs/benchmarks.md,
# benchmarks/tg_tokens.py). The cause of that is not known; the cure is measured.
_POOL_BYTES = 2 << 20
_MIN_POOL_ROWS = 16
_CHUNK_BYTES = 8 << 20
_DISK_MARGIN = 256 << 20


@dataclass(frozen=True)
class TwinSource:
    """What a twin copies: the header bytes, the file they head, and where they came from."""

    variant: str
    origin: dict[str, Any]
    header: bytes
    model: ModelFile = field(repr=False)

    @property
    def file_bytes(self) -> int:
        return self.model.file_size

    @property
    def store_name(self) -> str:
        return f"twin:{self.variant}"


@dataclass(frozen=True)
class TwinFile:
    """A twin written into the store: its name, path, identity and what making it cost."""

    name: str
    variant: str
    origin: dict[str, Any]
    path: Path
    sha256: str
    file_bytes: int
    header_bytes: int
    tensors: int
    write_s: float
    reused: bool

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["path"] = str(self.path)
        return found


# -- where the header comes from ---------------------------------------------------------------


def twin_source(ref: str, store: Store | None = None) -> TwinSource:
    """``hf:…``, a stored model or GGUF path, or a catalog variant → the header its twin copies."""
    store = store or Store()
    if ref.startswith("hf:"):
        with store.staging_dir("header") as scratch:
            remote = fetch_header(ref, Path(scratch))
        variant = f"hf:{remote.repo}/{remote.file}@{remote.commit}" if remote.commit else ref
        origin = {"kind": "hf", "repo": remote.repo, "file": remote.file, "commit": remote.commit, "etag": remote.etag,
                  "size": remote.file_size, "bytes_transferred": remote.bytes_transferred, "requests": remote.requests}
        return TwinSource(variant, origin, remote.header, remote.model)
    try:
        resolved = store.resolve(ref)
    except (UnknownModelError, StoreError) as store_miss:
        try:
            catalog_variant = find_variant(ref)
        except UnknownModelError:
            raise store_miss from None
        with store.staging_dir("header") as scratch:
            return _catalog_source(catalog_variant, Path(scratch))
    if resolved.is_twin:
        raise UsageError(f"{ref} is a twin already", hint="give the variant it is a twin of")
    model = read_model_file(resolved.path)
    with resolved.path.open("rb") as handle:
        header = handle.read(model.data_offset)
    origin = {"kind": "file", "label": resolved.label, "size": model.file_size,
              "sha256": resolved.manifest.sha256 if resolved.manifest else None}
    return TwinSource(resolved.label, origin, header, model)


def _catalog_source(variant: CatalogVariant, scratch: Path) -> TwinSource:
    """The header of the file a catalog variant would be: the catalog's shape, llama.cpp's recipe."""
    net = network_from_catalog(variant)
    model = variant.model
    path = scratch / "header.gguf"
    writer = gguf.GGUFWriter(str(path), model.architecture)
    _describe(writer, variant)
    for t in net.tensors:
        qtype = gguf.GGMLQuantizationType[t.type]
        writer.add_tensor_info(t.name, _numpy_shape(t.dims, qtype), _numpy_dtype(qtype), t.n_bytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = path.read_bytes()
    header += bytes(-len(header) % gguf.GGUF_DEFAULT_ALIGNMENT)
    size = gguf_file_bytes(len(header), (t.n_bytes for t in net.tensors))
    origin = {"kind": "catalog", "variant": variant.tag, "file_name": variant.file_name, "gguf_repo": model.gguf_repo}
    return TwinSource(variant.tag, origin, header, read_header(header, size, scratch, variant.tag))


def _numpy_shape(dims: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> tuple[int, ...]:
    """GGUFWriter's shape: numpy order, and for a quantized type the row in bytes."""
    shape = list(reversed(dims))
    if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        shape[-1] = shape[-1] // block * type_size
    return tuple(shape)


def _numpy_dtype(qtype: gguf.GGMLQuantizationType) -> Any:
    import numpy as np

    return {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(qtype, np.uint8)


def _describe(writer: gguf.GGUFWriter, variant: CatalogVariant) -> None:
    """The metadata llama.cpp's loader reads: shape, the architecture's extra keys, a tokenizer."""
    model = variant.model
    arch = model.architecture
    writer.add_name(f"{model.family} {model.size.upper()} {model.flavor} (variantlab twin)")
    writer.add_string("variantlab.twin.variant", variant.tag)
    writer.add_file_type(variant.file_type.id)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in model.hparams().items():
        add_metadata(writer, f"{arch}.{key}", value)
    _tokenizer(writer, model.tokenizer, model.n_vocab)


def add_metadata(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    """One metadata key with the GGUF type the converter gives it: counts uint32, ratios float32."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, list):
        writer.add_array(key, value)
    else:
        writer.add_string(key, str(value))


def _tokenizer(writer: gguf.GGUFWriter, kind: str, n_vocab: int) -> None:
    """A vocabulary of ``n_vocab`` entries llama.cpp loads: byte tokens (any text tokenizes), fillers, specials."""
    if kind == "llama":  # SentencePiece: <unk> <s> </s>, the 256 byte tokens, then fillers
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        types = [2, 3, 3] + [6] * 256
        tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
        types += [1] * (n_vocab - len(types))
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores([-float(i) for i in range(n_vocab)])
        writer.add_token_types(types)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        return
    byte_chars = _gpt2_byte_chars()  # byte-level BPE: the 256 byte symbols, fillers, one end token
    tokens = byte_chars + [f"t{i}" for i in range(n_vocab - 257)] + ["<|endoftext|>"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (n_vocab - 1) + [3])
    writer.add_token_merges([f"t{i} t{i + 1}" for i in range(n_vocab - 258)])
    writer.add_bos_token_id(n_vocab - 1)
    writer.add_eos_token_id(n_vocab - 1)


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte (bytes_to_unicode), in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = 0
    chars = {}
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


# -- writing ------------------------------------------------------------------------------------


def make_twin(ref: str | TwinSource, store: Store | None = None, progress: ProgressFn = no_progress) -> TwinFile:
    """Build (or reuse) the twin of ``ref`` in the store; refuse before writing when the disk is short."""
    store = store or Store()
    source = ref if isinstance(ref, TwinSource) else twin_source(ref, store)
    identity = hashlib.sha256(source.header + GENERATOR.encode()).hexdigest()
    existing = store.manifest(source.store_name)
    if existing and existing.synthetic and existing.synthetic.get("identity") == identity \
            and store.blob_path(existing.sha256).is_file():
        return _twin_file(store, existing, source, 0.0, reused=True)
    check_disk(store, source.file_bytes, source.variant)
    with store.staging(".twin") as staged:
        started = time.perf_counter()
        digest = write_twin(source, staged, store, progress)
        seconds = time.perf_counter() - started
        synthetic = {**source.origin, "variant": source.variant, "identity": identity, "generator": GENERATOR}
        manifest = store.commit(staged, name=source.store_name, source=f"twin:{source.origin['kind']}",
                                file_name=f"{Path(source.variant.split('@')[0]).name}.twin.gguf", sha256=digest,
                                file_type=source.model.file_type or "", synthetic=synthetic)
    return _twin_file(store, manifest, source, seconds, reused=False)


def _twin_file(store: Store, manifest: Manifest, source: TwinSource, seconds: float, *, reused: bool) -> TwinFile:
    return TwinFile(manifest.name, source.variant, source.origin, store.blob_path(manifest.sha256), manifest.sha256,
                    manifest.size, len(source.header), len(source.model.tensors), round(seconds, 3), reused)


def check_disk(store: Store, needed: int, what: str) -> None:
    """Refuse before writing a byte when the store's disk cannot take the twin."""
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.tmp_dir).free
    if needed + _DISK_MARGIN > free:
        raise StoreError(f"the twin of {what} needs {needed / 1e9:.2f} GB but {store.root} has {free / 1e9:.2f} GB free",
                         hint="free some space (`variantlab models gc`), or point VARIANTLAB_HOME at a larger disk")


def write_twin(source: TwinSource, out: Path, store: Store, progress: ProgressFn = no_progress) -> str:
    """Write the header and every tensor's tiled pool to ``out`` in file order; return the sha256."""
    model = source.model
    keys = sorted({(t.type, t.dims[0]) for t in model.tensors})
    with store.staging_dir("blocks") as folder:
        made = random_rows([(kind, width, pool_rows(kind, width)) for kind, width in keys], Path(folder),
                           on_progress=lambda done, total: progress("blocks", done, total))
    pools = dict(zip(keys, made))
    hasher = _Hasher()
    written = 0
    with hasher, out.open("wb") as handle:

        def put(data: bytes | memoryview) -> None:
            nonlocal written
            handle.write(data)
            hasher.feed(data)
            written += len(data)
            progress("write", written, model.file_size)

        put(source.header)
        chunks: dict[tuple[str, int], bytes] = {}
        for index, t in enumerate(model.tensors):
            put(bytes(-written % model.alignment))
            key = (t.type, t.dims[0])
            pool = pools[key]
            if key not in chunks:
                chunks[key] = pool * max(2, _CHUNK_BYTES // len(pool) + 1)
            rows = pool_rows(*key)
            _put_tiled(put, chunks[key], t.n_bytes, start=(index * 7919 % rows) * (len(pool) // rows))
        put(bytes(model.file_size - written))  # a last tensor's padding, as llama.cpp's writer leaves it
        handle.flush()
        os.fsync(handle.fileno())
    return hasher.hexdigest()


def pool_rows(type_name: str, n_per_row: int) -> int:
    """How many random rows the pool of this (type, row length) holds: ``_POOL_BYTES`` of them."""
    block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    row_bytes = max(1, n_per_row // block * type_bytes)
    return max(_MIN_POOL_ROWS, -(-_POOL_BYTES // row_bytes))


class _Hasher:
    """sha256 in a second thread, so hashing overlaps the disk writes (both release the GIL)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=8)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            self.digest.update(data)

    def feed(self, data: bytes | memoryview) -> None:
        self.queue.put(data)  # the writer's chunks are immutable: no copy needed

    def __enter__(self) -> _Hasher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _put_tiled(put: Any, chunk: bytes, n_bytes: int, start: int = 0) -> None:
    """``n_bytes`` of whole rows from ``chunk`` (a pool repeated at least twice), starting ``start``
    bytes in (a row boundary inside the first pool), written in chunk-sized pieces."""
    view = memoryview(chunk)
    first = min(n_bytes, len(chunk) - start)
    put(view[start:start + first])
    left = n_bytes - first
    # chunk[start:] then whole chunks keeps the tiling's period: the chunk ends where a pool ends
    while left >= len(chunk):
        put(view)
        left -= len(chunk)
    if left:
        put(view[:left])


def remove_twin(twin: TwinFile, store: Store | None = None) -> None:
    """Delete a twin's manifest, then its blob (measurements stay in the results database)."""
    store = store or Store()
    with store.locked():
        store.manifest_path(twin.name).unlink(missing_ok=True)
        others = [m for m in store.manifests() if m.sha256 == twin.sha256]
        blob = store.blob_path(twin.sha256)
        if not others and blob.exists():
            blob.chmod(0o644)
            blob.unlink()


@contextlib.contextmanager
def twin_for(ref: str | TwinSource, *, keep: bool = False, store: Store | None = None,
             progress: ProgressFn = no_progress) -> Iterator[TwinFile]:
    """A twin of ``ref`` for the duration of a measurement; deleted afterwards unless ``keep``."""
    store = store or Store()
    twin = make_twin(ref, store, progress)
    try:
        yield twin
    finally:
        if not keep:
            remove_twin(twin, store)


@contextlib.contextmanager
def file_or_twin(ref: str, *, store: Store | None = None, progress: ProgressFn = no_progress) -> Iterator[tuple[Path, str]]:
    """The stored or local file ``ref`` names, or else a twin of it for the duration:
    (path, "file" or "twin"), so one measurement serves models on disk and catalog variants."""
    store = store or Store()
    try:
        path = store.resolve(ref).path
    except (UnknownModelError, StoreError, ModelFileError, MissingFileError):
        with twin_for(ref, store=store, progress=progress) as twin:
            yield store.resolve(twin.name).path, "twin"
        return
    yield path, "file"


# -- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwinMeasurement:
    """A twin and what was measured on it (a bench, or a fit at a context); ``kept``: still in the store."""

    twin: TwinFile
    kept: bool
    bench: BenchResult | None = None
    fit: MeasuredFit | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"twin": self.twin.to_dict(), "kept": self.kept, "bench": self.bench.to_dict() if self.bench else None,
                "fit": self.fit.to_dict() if self.fit else None}


def measure_twins(refs: list[str], plan: BenchPlan, *, keep: bool = False, store: Store | None = None,
                  db: ResultsDB | None = None, progress: ProgressFn = no_progress) -> list[TwinMeasurement]:
    """Bench a twin of each variant, one at a time (one twin on disk at once unless ``keep``).

    Every header is read before any twin is written, so a bad name fails before hours of work.
    A twin llama.cpp refuses to load is removed and reported as an error.
    """
    store = store or Store()
    sources = [twin_source(ref, store) for ref in refs]
    found = []
    for source in sources:
        with twin_for(source, keep=keep, store=store, progress=progress) as twin:
            result = bench_models([twin.name], plan, store=store, db=db, progress=progress)[0]
            if not result.ok:
                remove_twin(twin, store)
                raise EngineError(f"llama.cpp could not run the twin of {source.variant}: {result.error}")
        found.append(TwinMeasurement(twin, keep, bench=result))
    return found


def measure_fit(ref: str, request: FitRequest, *, keep: bool = False, store: Store | None = None,
                db: ResultsDB | None = None, progress: ProgressFn = no_progress) -> TwinMeasurement:
    """``fit --measure --twin``: the estimate for the variant beside the peak memory of its twin."""
    store = store or Store()
    with twin_for(ref, keep=keep, store=store, progress=progress) as twin:
        measured = fit_measured(twin.name, request, store=store, db=db, progress=progress, label=twin.variant)
    return TwinMeasurement(twin, keep, fit=measured)


__all__ = ["GENERATOR", "TwinFile", "TwinMeasurement", "TwinSource", "add_metadata", "check_disk", "file_or_twin", "make_twin",
           "measure_fit", "measure_twins", "remove_twin", "twin_for", "twin_source", "write_twin"]
