"""Making variants: dequantize a GGUF to F16/F32 (a reference for KL-divergence) with ``gguf``,
and quantize with llama.cpp's own quantizer (``llama_model_quantize``, in a child process).

Every file made here is registered in the store with its lineage (what it was made from, by
which operation, requantized or not, with which llama.cpp), so no result can mistake a
derived file for an original. A file already made from the same source with the same
operation is reused, which is what lets an interrupted ladder resume.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .engine import default_threads, quantize_file
from .errors import StoreError, UsageError
from .files import ProgressFn, no_progress, sha256_file
from .fit import gguf_file_bytes
from .hardware import free_disk_bytes
from .imatrix import Imatrix, read_imatrix
from .knowledge.quant_rules import ModelShape, supported_file_types, tensor_types
from .knowledge.quants import FileType, quant_types
from .knowledge.quants import file_type as lookup_file_type
from .modelfile import ModelFile, open_reader, read_model_file
from .store import Manifest, ResolvedModel, Store

FLOAT_TYPES = ("F32", "F16", "BF16")
DISK_MARGIN = 1.05  # the plan's expected sizes are estimates; keep a little room

TARGETS = {"f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
           "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32)}
_FLOAT = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}


def derived_name(source_name: str, to: str) -> str:
    """``family:q4_k_m`` → ``family:f16-from-q4_k_m``: the name says what it was made from."""
    base, _, tag = source_name.rpartition(":")
    return f"{base}:{to}-from-{tag}" if base else f"{source_name}.{to}"


def dequantize(ref: str, to: str = "f16", *, store: Store | None = None, name: str | None = None,
               progress: ProgressFn = no_progress) -> Manifest:
    """Write ``ref`` as an F16 (or F32) GGUF into the store; 1-D tensors stay F32, as llama.cpp's converter does."""
    if to not in TARGETS:
        raise UsageError(f"cannot dequantize to {to!r}", hint="use f16 or f32")
    store = store or Store()
    src = store.resolve(ref)
    info = read_model_file(src.path)
    target_type, file_type = TARGETS[to]
    label = src.manifest.name if src.manifest else src.path.stem
    name = name or derived_name(label, to)
    source_sha = _sha(src)
    lineage = {"operation": "dequantize", "from_name": label, "from_sha256": source_sha, "from_type": info.file_type,
               "to_type": to.upper(), "tool": f"gguf {version('gguf')}",
               "note": f"reference derived from {info.file_type}, not the original weights"}
    made = made_before(store, lineage)
    if made is not None:
        return made
    reader = open_reader(src.path)
    with store.staging(".gguf") as staged:
        writer = gguf.GGUFWriter(str(staged), arch=info.architecture, endianess=reader.endianess)
        _copy_metadata(reader, writer, file_type)
        total = len(reader.tensors)
        for i, tensor in enumerate(reader.tensors):
            writer.add_tensor(tensor.name, _as_float(tensor, target_type), raw_dtype=_dtype_of(tensor, target_type))
            progress(f"dequantize {label}", i + 1, total)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        source = f"derived:dequantize {info.file_type}→{to.upper()} from sha256 {source_sha} (reference derived from {info.file_type})"
        stem = Path(src.manifest.file_name).stem if src.manifest else src.path.stem
        return store.commit(staged, name=name, source=source, file_name=f"{stem}.{to.upper()}.gguf", lineage=lineage)


def _sha(src: ResolvedModel) -> str:
    return src.manifest.sha256 if src.manifest else sha256_file(src.path)


def made_before(store: Store, lineage: dict[str, Any]) -> Manifest | None:
    """A stored file made by the same operation from the same source to the same type, if any."""
    keys = ("operation", "from_sha256", "to_type", "imatrix", "tool")
    for manifest in store.manifests():
        found = manifest.lineage or {}
        if all(found.get(k) == lineage.get(k) for k in keys) and store.blob_path(manifest.sha256).is_file():
            return manifest
    return None


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, file_type: gguf.LlamaFileType) -> None:
    for entry in reader.fields.values():
        if entry.name.startswith("GGUF.") or entry.name in ("general.architecture", "general.file_type"):
            continue
        value_type = entry.types[0]
        sub_type = entry.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(entry.name, entry.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(int(file_type))


def _as_float(tensor: gguf.ReaderTensor, target: gguf.GGMLQuantizationType) -> np.ndarray:
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dims fastest first
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    if target == gguf.GGMLQuantizationType.F16 and len(shape) > 1:
        return values.astype(np.float16)
    return values.astype(np.float32)


def _dtype_of(tensor: gguf.ReaderTensor, target: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    if target == gguf.GGMLQuantizationType.F16 and len(tensor.shape) > 1:
        return gguf.GGMLQuantizationType.F16
    return gguf.GGMLQuantizationType.F32




# -- quantize ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rung:
    """One output of a quantization plan: its type, store name, expected size, and a reusable earlier copy."""

    file_type: str
    name: str
    expected_bytes: int | None
    existing: Manifest | None = None


@dataclass(frozen=True)
class QuantizePlan:
    """What ``run_quantize`` will do, shown before any work starts (``--dry-run`` stops there)."""

    source: ResolvedModel
    source_type: str
    source_sha256: str
    requantize: bool
    rungs: list[Rung]
    disk_needed: int
    disk_free: int
    threads: int
    out_dir: Path | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    imatrix: Imatrix | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.label, "source_type": self.source_type, "source_sha256": self.source_sha256,
                "requantize": self.requantize, "threads": self.threads, "disk_needed": self.disk_needed,
                "disk_free": self.disk_free, "out_dir": str(self.out_dir) if self.out_dir else None,
                "imatrix": self.imatrix.describe() if self.imatrix else None,
                "rungs": [{"file_type": r.file_type, "name": r.name, "expected_bytes": r.expected_bytes,
                           "reuses": r.existing.name if r.existing else None} for r in self.rungs]}


def llama_cpp_build() -> str:
    return f"llama-cpp-python {version('llama-cpp-python')}"


def plan_quantize(ref: str, types: list[str], *, allow_requantize: bool = False, imatrix: Path | None = None,
                  out_dir: Path | None = None, threads: int | None = None, store: Store | None = None) -> QuantizePlan:
    """Check everything that can be known before quantizing: source, types, requantize flag, disk."""
    store = store or Store()
    src = store.resolve(ref)
    info = read_model_file(src.path)  # a file that is not a GGUF model fails here, before any work
    targets = _targets(types)
    requantize = info.file_type not in FLOAT_TYPES
    if requantize and not allow_requantize:
        raise UsageError(f"{src.label} is already quantized ({info.file_type}); quantizing it again compounds the loss",
                         hint="quantize from an F16/F32 file (`variantlab dequantize` makes one), or pass "
                              "--allow-requantize (every result will say so)")
    matrix = read_imatrix(imatrix) if imatrix is not None else None  # a bad matrix fails here too
    lineage = _quantize_lineage(src, info, requantize, matrix)
    rungs = [_rung(store, src, info, ft, lineage) for ft in targets]
    needed = int(sum(r.expected_bytes or info.file_size for r in rungs if r.existing is None) * DISK_MARGIN)
    needed *= 2 if out_dir else 1
    free = free_disk_bytes(store.root)
    if needed > free:
        raise StoreError(f"the plan needs about {needed / 2**30:.2f} GiB of disk, {free / 2**30:.2f} GiB is free in {store.root}",
                         hint="free some space (`variantlab models gc`) or give fewer --types")
    return QuantizePlan(src, info.file_type or "?", lineage["from_sha256"], requantize, rungs, needed, free,
                        threads or default_threads(), out_dir, lineage, matrix)


def _targets(types: list[str]) -> list[FileType]:
    targets = [lookup_file_type(t) for t in types]  # an unknown type fails here, with suggestions
    if not targets:
        raise UsageError("no --types given", hint="for example --types Q4_K_M,Q8_0")
    for ft in targets:
        if ft.name in FLOAT_TYPES:
            raise UsageError(f"{ft.name} is not a quantized type", hint="use `variantlab dequantize --to f16`")
    return list({ft.name: ft for ft in targets}.values())


def _quantize_lineage(src: ResolvedModel, info: ModelFile, requantize: bool, matrix: Imatrix | None) -> dict[str, Any]:
    parent = (src.manifest.lineage or {}) if src.manifest else {}
    derived = parent.get("from_type") if parent.get("operation") == "dequantize" else None
    note = (("requantized from " + str(info.file_type)) if requantize else
            (f"quantized from an F16 derived from {derived}, not the original weights" if derived else
             f"quantized from {info.file_type}"))
    if matrix is not None:
        note += f", with importance matrix {matrix.path.name} (sha256 {matrix.sha256[:12]})"
    return {"operation": "quantize", "from_name": src.label, "from_sha256": _sha(src), "from_type": info.file_type,
            "imatrix": matrix.sha256 if matrix else None, "imatrix_info": matrix.describe() if matrix else None,
            "requantized": requantize, "tool": llama_cpp_build(), "reference_derived_from": derived, "note": note}


def _rung(store: Store, src: ResolvedModel, info: ModelFile, ft: FileType, lineage: dict[str, Any]) -> Rung:
    base, _, tag = src.label.rpartition(":")
    base = base or Path(src.label).stem
    suffix = "" if tag.lower() in ("f16", "f32", "bf16", "") else f"-from-{tag.lower()}"
    suffix += f"-imatrix-{lineage['imatrix'][:8]}" if lineage["imatrix"] else ""
    name = f"{base}:{ft.name.lower()}{suffix}"
    return Rung(ft.name, name, expected_file_bytes(info, ft.name),
                made_before(store, {**lineage, "to_type": ft.name}))


def expected_file_bytes(info: ModelFile, file_type: str) -> int | None:
    """The size llama.cpp's recipe gives ``info``'s tensors at ``file_type`` (None if the rules lack it)."""
    if file_type not in supported_file_types() or not (info.n_layers and info.n_heads):
        return None
    shape = ModelShape(info.architecture, info.n_layers, info.n_heads, info.n_kv_heads or info.n_heads,
                       tied_embeddings=not any(t.name == "output.weight" for t in info.tensors))
    types = tensor_types([(t.name, t.dims, t.type) for t in info.tensors], file_type, shape)
    qt = quant_types()
    return gguf_file_bytes(info.data_offset, (qt[ty].bytes_for(math.prod(t.dims)) for t, ty in zip(info.tensors, types)))


@dataclass(frozen=True)
class Made:
    """One output of ``run_quantize``: the stored file, and llama.cpp's time (None when reused)."""

    manifest: Manifest
    quantize_s: float | None


def run_quantize(plan: QuantizePlan, *, store: Store | None = None, progress: ProgressFn = no_progress) -> list[Made]:
    """Make each rung of the plan (reusing earlier copies) and register it with its lineage."""
    store = store or Store()
    made = []
    for rung in plan.rungs:
        outcome = Made(rung.existing, None) if rung.existing else _make_rung(plan, rung, store, progress)
        if plan.out_dir:
            plan.out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.blob_path(outcome.manifest.sha256), plan.out_dir / outcome.manifest.file_name)
        made.append(outcome)
    return made


def _make_rung(plan: QuantizePlan, rung: Rung, store: Store, progress: ProgressFn) -> Made:
    label = f"quantize {rung.file_type}"
    with store.staging(".gguf") as staged:
        start = time.perf_counter()
        quantize_file(str(plan.source.path), str(staged), lookup_file_type(rung.file_type).id, plan.threads,
                      allow_requantize=plan.requantize, imatrix=plan.imatrix, on_progress=lambda done, total: progress(label, done, total))
        seconds = time.perf_counter() - start
        source = (f"derived:quantize {plan.source_type}→{rung.file_type} from sha256 {plan.source_sha256}"
                  + f" ({plan.lineage['note']})")
        stem = Path(plan.source.manifest.file_name).stem if plan.source.manifest else plan.source.path.stem
        manifest = store.commit(staged, name=rung.name, source=source, file_name=f"{stem}.{rung.file_type}.gguf",
                                lineage={**plan.lineage, "to_type": rung.file_type}, file_type=rung.file_type)
        return Made(manifest, seconds)


def quantize(ref: str, file_type: str, *, store: Store | None = None, allow_requantize: bool = False,
             threads: int | None = None) -> Manifest:
    """Quantize ``ref`` to one ``file_type`` (Q4_K_M, Q8_0 …) and register the output."""
    store = store or Store()
    plan = plan_quantize(ref, [file_type], allow_requantize=allow_requantize, threads=threads, store=store)
    return run_quantize(plan, store=store)[0].manifest
