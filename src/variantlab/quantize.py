"""Making variants: dequantize a GGUF to F16/F32 (a reference for KL-divergence) with ``gguf``,
and quantize with llama.cpp's own quantizer (``llama_model_quantize``).

``dequantize`` writes every quantized tensor back as floats with the ``gguf`` package's own
dequantization, copies every metadata key, and registers the result in the store with its
lineage ("derived from <type>, sha256 …"), so no result can mistake it for an original.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import gguf

from .errors import UsageError
from .modelfile import open_reader, read_model_file
from .store import Manifest, Store
from .store.files import ProgressFn, no_progress

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
        sha = src.manifest.sha256 if src.manifest else "unknown"
        source = f"derived:dequantize {info.file_type}→{to.upper()} from sha256 {sha} (reference derived from {info.file_type})"
        stem = Path(src.manifest.file_name).stem if src.manifest else src.path.stem
        return store.commit(staged, name=name, source=source, file_name=f"{stem}.{to.upper()}.gguf")


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, file_type: gguf.LlamaFileType) -> None:
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
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


def quantize(ref: str, file_type: str, *, store: Store | None = None, name: str | None = None,
             allow_requantize: bool = False, threads: int | None = None) -> Manifest:
    """Quantize ``ref`` to ``file_type`` (Q4_K_M, Q8_0 …) with llama.cpp and register the output.

    From an already quantized source only with ``allow_requantize``; the source string records
    the lineage (source sha256 and type).
    """
    import llama_cpp

    from .engine.settings import default_threads
    from .knowledge.quants import file_type as lookup_file_type

    store = store or Store()
    src = store.resolve(ref)
    info = read_model_file(src.path)
    target = lookup_file_type(file_type)
    if info.file_type not in ("F32", "F16", "BF16") and not allow_requantize:
        raise UsageError(f"{src.label} is already quantized ({info.file_type})",
                         hint="quantize from an F16/F32 file, or pass allow_requantize (every result will say so)")
    label = src.manifest.name if src.manifest else src.path.stem
    base = label.rpartition(":")[0] or label
    derived = f"-from-{info.file_type.lower()}" if info.file_type != "F16" or "-from-" in label else ""
    name = name or f"{base}:{target.name.lower()}{derived}"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = target.id
    params.nthread = threads or default_threads()
    params.allow_requantize = allow_requantize
    with store.staging(".gguf") as staged:
        rc = llama_cpp.llama_model_quantize(str(src.path).encode(), str(staged).encode(), params)
        if rc != 0:
            raise UsageError(f"llama.cpp could not quantize {src.label} to {target.name} (code {rc})")
        sha = src.manifest.sha256 if src.manifest else "unknown"
        source = f"derived:quantize {info.file_type}→{target.name} from sha256 {sha}"
        stem = Path(src.manifest.file_name).stem if src.manifest else src.path.stem
        return store.commit(staged, name=name, source=source, file_name=f"{stem}.{target.name}.gguf")
