"""Reading what a GGUF file says about itself, safely.

The parsing is gguf's own ``GGUFReader``; this module only bounds it. The stock reader
trusts every count in the header: a truncated file yields short arrays, and an array that
claims 2^60 elements makes it loop for ever. ``_BoundedReader`` checks each read against
the file's end and each declared count against the bytes left, so a bad file fails at
once with the offset and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from . import config
from .errors import MissingFileError, ModelFileError
from .files import atomic_write_text
from .knowledge import load_data
from .knowledge.layers import experts, is_expert_tensor
from .knowledge.quant_rules import layer_of
from .knowledge.quants import file_type_by_id
from .text import clean_text

_MIN_KV_BYTES = 8 + 4  # key length + value type, before any key or value bytes
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_MIN_ARRAY_ITEM_BYTES = {gguf.GGUFValueType.STRING: 8, gguf.GGUFValueType.ARRAY: 12}


class _Corrupt(ValueError):
    """Raised inside the reader; turned into ModelFileError with the path."""


_GGML_MAX_DIMS = 4


class _BoundedReader(gguf.GGUFReader):
    """gguf.GGUFReader with every read and every declared count checked against the file."""

    def __setattr__(self, name: str, value: Any) -> None:
        # The reader slices its np.memmap hundreds of thousands of times (once per vocabulary
        # entry); a plain ndarray view of the same mapping skips memmap's per-slice bookkeeping.
        if name == "data" and isinstance(value, np.memmap):
            super().__setattr__("path", Path(value.filename or ""))
            value = value.view(np.ndarray)
        super().__setattr__(name, value)

    def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
        count = int(count)
        end = int(offset) + int(np.dtype(dtype).itemsize) * count
        if count < 0 or end > len(self.data):
            raise _Corrupt(
                f"truncated or corrupt: a read at byte {offset} needs {end - offset} bytes "
                f"but the file ends at byte {len(self.data)}"
            )
        return super()._get(offset, dtype, count, override_order)

    def _remaining(self, offset: int) -> int:
        return len(self.data) - offset

    def _build_fields(self, offs: int, count: int) -> int:
        if int(count) * _MIN_KV_BYTES > self._remaining(offs):
            raise _Corrupt(f"truncated or corrupt: header declares {int(count)} metadata entries, more than the file can hold")
        return super()._build_fields(offs, count)

    def _build_tensor_info(self, offs: int, count: int) -> Any:
        if int(count) * _MIN_TENSOR_INFO_BYTES > self._remaining(offs):
            raise _Corrupt(f"truncated or corrupt: header declares {int(count)} tensors, more than the file can hold")
        return super()._build_tensor_info(offs, count)

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        """llama.cpp's structural rules for the tensor table (gguf.cpp, with its wording where it has one),
        checked before gguf builds arrays over the data: what llama.cpp would refuse at load is refused here."""
        field = self.fields.get("general.alignment")
        alignment = int(field.parts[-1][0]) if field is not None else gguf.GGUF_DEFAULT_ALIGNMENT
        if alignment <= 0 or alignment & (alignment - 1):
            raise _Corrupt(f"alignment {alignment} is not a power of two")
        expected = 0
        for tensor in fields:
            _, name_data, n_dims_part, dims, raw_dtype, offset_part = tensor.parts
            name = bytes(name_data).decode("utf-8", "replace")
            expected = self._check_tensor(name, int(n_dims_part[0]), [int(d) for d in dims], int(raw_dtype[0]),
                                          int(offset_part[0]), expected, alignment, start_offs)
        super()._build_tensors(start_offs, fields)

    def _check_tensor(self, name: str, n_dims: int, dims: list[int], raw_type: int, offset: int, expected: int,
                      alignment: int, start_offs: int) -> int:
        """Check one tensor's entry; return where the next tensor's data must start."""
        if n_dims > _GGML_MAX_DIMS:
            raise _Corrupt(f"tensor '{name}' has invalid number of dimensions: {n_dims} > {_GGML_MAX_DIMS}")
        if n_dims == 0 or 0 in dims:
            raise _Corrupt(f"tensor '{name}' has {'no dimensions' if n_dims == 0 else 'a dimension of 0'} {tuple(dims)}: "
                           "llama.cpp's model loader cannot use it")
        elements = 1
        for d in dims:
            elements *= d
        if elements >= 2 ** 63:
            raise _Corrupt(f"total number of elements in tensor '{name}' with shape {tuple(dims)} is >= INT64_MAX")
        try:
            block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(raw_type)]
        except (ValueError, KeyError):
            raise _Corrupt(f"tensor '{name}' has invalid ggml type {raw_type}") from None
        if dims[0] % block:
            raise _Corrupt(f"tensor '{name}' of type {raw_type} has {dims[0]} elements per row, "
                           f"not a multiple of block size ({block})")
        if offset != expected:
            raise _Corrupt(f"tensor '{name}' has offset {offset}, expected {expected} (tensors overlap or leave a gap)")
        n_bytes = elements // block * type_bytes
        end = start_offs + offset + n_bytes
        if end > len(self.data):
            raise _Corrupt(f"truncated or corrupt: tensor '{name}' ends at byte {end}, past the file's end at byte {len(self.data)}")
        return offset + (n_bytes + alignment - 1) // alignment * alignment

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
        if raw_type == gguf.GGUFValueType.ARRAY:
            item_type = int(self._get(orig_offs, np.uint32)[0])
            length = int(self._get(orig_offs + 4, np.uint64)[0])
            try:
                item_bytes = _MIN_ARRAY_ITEM_BYTES.get(gguf.GGUFValueType(item_type))
                if item_bytes is None:
                    item_bytes = np.dtype(self.gguf_scalar_to_np[gguf.GGUFValueType(item_type)]).itemsize
            except (ValueError, KeyError):
                raise _Corrupt(f"unknown metadata value type {item_type} at byte {orig_offs}") from None
            if length * item_bytes > self._remaining(orig_offs + 12):
                raise _Corrupt(f"truncated or corrupt: an array at byte {orig_offs} declares {length} items, more than the file can hold")
        return super()._get_field_parts(orig_offs, raw_type)


@dataclass(frozen=True)
class TensorTypeShare:
    """How much of the file one tensor type accounts for."""

    type: str
    n_tensors: int
    n_elements: int
    n_bytes: int
    share_of_bytes: float


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the file: what the memory estimate needs (no data)."""

    name: str
    type: str
    dims: tuple[int, ...]  # GGUF order: row length first
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """The repeating block this tensor belongs to (``blk.N.``), or None for the others."""
        return layer_of(self.name)


def bytes_read_per_token(tensors: list[TensorEntry], expert_share: float = 1.0) -> int:
    """Weight bytes a generated token reads: every tensor once, except that the input
    embedding is a lookup of one row, unless the model ties it to the output projection
    (no output.weight), when the whole matrix is read as the output layer; and of a mixture
    of experts' routed-expert tensors (``*_exps``) only the share the router picks."""
    total = sum(t.n_bytes * (expert_share if is_expert_tensor(t.name) else 1.0) for t in tensors)
    if any(t.name == "output.weight" for t in tensors):
        total -= sum(t.n_bytes for t in tensors if t.name == "token_embd.weight")
    return round(total)


@dataclass(frozen=True)
class ModelFile:
    """The facts of one GGUF model file, as its header and tensor table state them."""

    path: Path
    file_size: int
    architecture: str
    name: str | None
    parameters: int
    n_layers: int | None
    n_heads: int | None
    n_kv_heads: int | None
    embedding_length: int | None
    feed_forward_length: int | None
    head_dim: int | None
    context_length: int | None
    vocab_size: int | None
    file_type_id: int | None
    file_type: str | None
    tensor_bytes: int
    bits_per_weight: float
    tensor_types: list[TensorTypeShare]
    chat_template: str | None
    fim_tokens: dict[str, str]
    tokenizer_model: str | None
    license: str | None
    general_type: str | None = None  # "model", or "adapter" (LoRA) / "mmproj" (projector): not a model to run
    metadata_keys: list[str] = field(repr=False, default_factory=list)
    tensors: list[TensorEntry] = field(repr=False, default_factory=list)
    data_offset: int = 0
    alignment: int = gguf.GGUF_DEFAULT_ALIGNMENT
    # the architecture's numeric keys without the "ARCH." prefix (expert counts, sliding window,
    # latent-attention widths, per-layer head counts): what the memory layout is computed from
    hparams: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    @property
    def bytes_read_per_token(self) -> int:
        try:
            routing = experts(self.hparams, str(self.path))
        except ModelFileError:  # a routing the header contradicts: count every expert (fit refuses such a file)
            routing = None
        return bytes_read_per_token(self.tensors, routing.active_share if routing else 1.0)


def open_reader(path: str | os.PathLike[str]) -> gguf.GGUFReader:
    """A bounded GGUFReader over ``path``, or ModelFileError naming the path and the problem."""
    p = Path(path)
    if not p.exists():
        if os.path.islink(p):
            raise ModelFileError(p, "could not read the file: a symbolic link that loops or points nowhere")
        raise MissingFileError(p, hint="give a GGUF path or a name from `variantlab models list`")
    if not p.is_file():
        raise ModelFileError(p, "could not read the file: not a regular file (a folder, FIFO or device)")
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelFileError(p, f"not a GGUF file (it starts with {magic!r}, a GGUF file with b'GGUF')")
    try:
        return _BoundedReader(p)
    except _Corrupt as exc:
        raise ModelFileError(p, str(exc)) from None
    except RecursionError:  # gguf reads nested arrays recursively; a hostile file nests thousands deep
        raise ModelFileError(p, "corrupt GGUF: a metadata array is nested deeper than Python's recursion limit",
                             hint="no real model nests arrays; the file is damaged or hostile") from None
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise ModelFileError(p, f"corrupt GGUF: {type(exc).__name__}: {exc}") from None


def read_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Read the header and tensor table of a GGUF model (no tensor data is loaded).

    Parsing a 150k-token vocabulary costs seconds, and every command reads the same few
    files, so a successful read is cached under the file's identity (path, size, mtime,
    inode): any change to the file is a new key.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return _read_model_file(p)  # missing: the reader says so in its own words
    key = hashlib.sha1(f"v4|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()
    cache = config.home() / "cache" / "modelfile" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return _from_record(json.loads(cache.read_text()), p)
    found = _read_model_file(p)
    with contextlib.suppress(OSError):
        atomic_write_text(cache, json.dumps({k: v for k, v in asdict(found).items() if k != "path"}))
    return found


def _from_record(data: dict[str, Any], path: Path) -> ModelFile:
    data["tensor_types"] = [TensorTypeShare(**t) for t in data["tensor_types"]]
    data["tensors"] = [TensorEntry(t["name"], t["type"], tuple(t["dims"]), t["n_bytes"]) for t in data["tensors"]]
    return ModelFile(path=path, **data)


def _read_model_file(path: str | os.PathLike[str]) -> ModelFile:
    reader = open_reader(path)
    p = Path(path)
    try:
        return _model_file(reader, p)
    except ModelFileError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, AttributeError) as exc:
        # field values are decoded lazily (a string that is not UTF-8, a count past its data)
        raise ModelFileError(p, f"corrupt GGUF: {type(exc).__name__}: {exc}") from None


def _model_file(reader: gguf.GGUFReader, p: Path) -> ModelFile:
    """The report of an opened reader (the header's facts, each decoded once)."""
    if not reader.tensors:
        raise ModelFileError(p, "the file has no tensors: a GGUF without weights is not a model (llama.cpp's loader fails on it)")
    arch = _scalar(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(p, "no general.architecture key: not a model file")
    kv = lambda key: _scalar(reader, f"{arch}.{key}")  # noqa: E731

    shares, parameters, tensor_bytes = _tensor_mix(reader)
    n_heads = _first_int(kv("attention.head_count"))
    embedding = _first_int(kv("embedding_length"))
    head_dim = _first_int(kv("attention.key_length")) or (embedding // n_heads if embedding and n_heads else None)
    file_type_id = _first_int(_scalar(reader, "general.file_type"))
    known = file_type_by_id(file_type_id) if file_type_id is not None else None
    tokens_field = reader.get_field("tokenizer.ggml.tokens")
    return ModelFile(
        path=p,
        file_size=p.stat().st_size,
        architecture=clean_text(arch),
        name=_clean_opt(_scalar(reader, "general.name")),
        parameters=parameters,
        n_layers=_first_int(kv("block_count")),
        n_heads=n_heads,
        n_kv_heads=_first_int(kv("attention.head_count_kv")) or n_heads,
        embedding_length=embedding,
        feed_forward_length=_first_int(kv("feed_forward_length")),
        head_dim=head_dim,
        context_length=_first_int(kv("context_length")),
        vocab_size=len(tokens_field.data) if tokens_field is not None else None,
        file_type_id=file_type_id,
        file_type=known.name if known else None,
        tensor_bytes=tensor_bytes,
        bits_per_weight=tensor_bytes * 8 / parameters if parameters else 0.0,
        tensor_types=shares,
        chat_template=_scalar(reader, "tokenizer.chat_template") or None,
        fim_tokens=_fim_tokens(reader),
        tokenizer_model=_clean_opt(_scalar(reader, "tokenizer.ggml.model")),
        license=_clean_opt(_scalar(reader, "general.license")),
        general_type=_general_type(reader, arch),
        metadata_keys=[k for k in reader.fields if not k.startswith("GGUF.")],
        tensors=[
            TensorEntry(clean_text(t.name), t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_bytes))
            for t in reader.tensors
        ],
        data_offset=int(reader.data_offset),
        alignment=int(reader.alignment),
        hparams=_hparams(reader, arch),
    )


def _general_type(reader: gguf.GGUFReader, arch: str) -> str | None:
    """What the file is for: llama.cpp writes ``general.type`` (model, adapter, mmproj); a projector
    from before that key has the ``clip`` architecture."""
    declared = _clean_opt(_scalar(reader, "general.type"))
    if declared is None and arch == "clip":
        return "mmproj"
    return declared


SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_parts(path: Path) -> list[Path]:
    """Every part of the split GGUF whose first part is ``path`` (llama.cpp's ``-00001-of-00003``
    naming), in order; ``[path]`` for a file that is not split. A missing part is an error: the
    loader needs them all beside the first."""
    match = SPLIT_NAME.match(path.name)
    if match is None:
        return [path]
    if int(match["no"]) != 1:
        raise ModelFileError(path, f"part {int(match['no'])} of a split GGUF",
                             hint=f"give the first part, {match['stem']}-00001-of-{match['count']}.gguf")
    count = int(match["count"])
    parts = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ModelFileError(path, f"split GGUF with {count} parts lacks {', '.join(missing)}",
                             hint="download the missing parts beside the first")
    return parts


_MAX_HPARAM_ITEMS = 4096  # per-layer arrays; a longer array is not a hyperparameter


def _hparams(reader: gguf.GGUFReader, arch: str) -> dict[str, Any]:
    """The numeric ``ARCH.*`` keys (and per-layer numeric arrays), prefix stripped."""
    prefix = f"{arch}."
    found: dict[str, Any] = {}
    for key in reader.fields:
        if not key.startswith(prefix):
            continue
        value = _scalar(reader, key)
        if isinstance(value, bool | int | float) or (
            isinstance(value, list) and len(value) <= _MAX_HPARAM_ITEMS and all(isinstance(v, bool | int | float) for v in value)
        ):
            found[key[len(prefix):]] = value
    return found


def _tensor_mix(reader: gguf.GGUFReader) -> tuple[list[TensorTypeShare], int, int]:
    """Per tensor type: count, elements and bytes; plus the totals."""
    by_type: dict[str, list[int]] = {}
    for t in reader.tensors:
        row = by_type.setdefault(t.tensor_type.name, [0, 0, 0])
        row[0] += 1
        row[1] += int(t.n_elements)
        row[2] += int(t.n_bytes)
    total_elements = sum(r[1] for r in by_type.values())
    total_bytes = sum(r[2] for r in by_type.values())
    shares = [
        TensorTypeShare(name, n, elems, nbytes, nbytes / total_bytes if total_bytes else 0.0)
        for name, (n, elems, nbytes) in sorted(by_type.items(), key=lambda kv: -kv[1][2])
    ]
    return shares, total_elements, total_bytes


def _scalar(reader: gguf.GGUFReader, key: str) -> Any:
    """The value of a metadata key (str, number or list), or None when absent."""
    fld = reader.get_field(key)
    if fld is None:
        return None
    try:
        return fld.contents()
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        raise ModelFileError(getattr(reader, "path", "GGUF file"), f"metadata key {key!r} is unreadable: {exc}") from None


def _first_int(value: Any) -> int | None:
    """Ints as they are; per-layer lists (some architectures) by their largest entry."""
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, list):
        return max((int(v) for v in value), default=None)
    return int(value)


def _clean_opt(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) else None


def _fim_tokens(reader: gguf.GGUFReader) -> dict[str, str]:
    """The prefix/suffix/middle tokens: from the tokenizer's FIM keys, else by known spellings."""
    tokens_field = reader.get_field("tokenizer.ggml.tokens")
    if tokens_field is None:
        return {}
    found: dict[str, str] = {}
    for role, key in (("prefix", "pre"), ("suffix", "suf"), ("middle", "mid")):
        token_id = _first_int(_scalar(reader, f"tokenizer.ggml.fim_{key}_token_id"))
        if token_id is not None and 0 <= token_id < len(tokens_field.data):
            found[role] = clean_text(tokens_field.contents(token_id))
    if len(found) == 3:
        return found
    vocab = set(tokens_field.contents())
    for style in load_data("fim_tokens.toml")["style"]:
        if all(style[role] in vocab for role in ("prefix", "suffix", "middle")):
            return {role: style[role] for role in ("prefix", "suffix", "middle")}
    return {}


# -- headers without their tensor data (a remote file's, a twin's) ----------------------

_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def header_length(read: Callable[[int], bytes], file_size: int, where: str) -> int:
    """Where a GGUF file's tensor data starts, found by reading its header in order.

    ``read(n)`` returns the next ``n`` bytes of the file (a ranged download reads only what
    is asked). Only lengths are decoded here, each checked against ``file_size``; the header
    is then parsed by the bounded reader (``read_header``). This walk exists because gguf's
    reader needs the whole file mapped, and a remote file's weights must not be fetched.
    """
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > file_size:
            raise ModelFileError(where, f"truncated or corrupt: a read at byte {pos} needs {n} bytes but the file has {file_size}")
        data = read(n)
        if len(data) != n:
            raise ModelFileError(where, f"truncated: wanted {n} bytes at byte {pos}, got {len(data)}")
        pos += n
        return data

    def u32() -> int:
        return int.from_bytes(take(4), "little")

    def u64() -> int:
        return int.from_bytes(take(8), "little")

    def value(kind: int, depth: int = 0) -> int | None:
        if kind in _SCALAR_BYTES:
            raw = take(_SCALAR_BYTES[kind])
            return int.from_bytes(raw, "little") if kind == 4 else None
        if kind == _STRING:
            take(u64())
            return None
        if kind == _ARRAY and depth < 4:
            item, count = u32(), u64()
            if item in _SCALAR_BYTES:
                take(count * _SCALAR_BYTES[item])
            elif count > file_size - pos:
                raise ModelFileError(where, f"truncated or corrupt: an array at byte {pos} declares {count} items")
            else:
                for _ in range(count):
                    value(item, depth + 1)
            return None
        raise ModelFileError(where, f"corrupt GGUF: unknown metadata value type {kind} at byte {pos}")

    if take(4) != b"GGUF":
        raise ModelFileError(where, "not a GGUF file (it does not start with b'GGUF')")
    take(4)
    n_tensors, n_kv = u64(), u64()
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > file_size:
        raise ModelFileError(where, f"truncated or corrupt: header declares {n_kv} metadata entries and {n_tensors} tensors")
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = take(u64())
        found = value(u32())
        if key == b"general.alignment" and found:
            alignment = found
    for _ in range(n_tensors):
        take(u64())
        take(8 * u32() + 4 + 8)
    return -(-pos // alignment) * alignment


def read_header(header: bytes, file_size: int, scratch: Path, label: str) -> ModelFile:
    """Parse a header whose tensor data is not here, as the file of ``file_size`` bytes it heads.

    The header is written to a sparse file of the full size in ``scratch`` (no data blocks on
    disk), so the bounded reader checks every tensor against the real file's end.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    if file_size < len(header):
        raise ModelFileError(label, f"the header ({len(header)} bytes) is longer than the file ({file_size} bytes)")
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".gguf-header") as handle:
        handle.write(header)
        handle.truncate(file_size)
        handle.flush()
        try:
            found = _read_model_file(Path(handle.name))
        except ModelFileError as exc:
            raise ModelFileError(label, exc.problem, hint=exc.hint) from None
        if found.data_offset != len(header):
            raise ModelFileError(label, f"the header ends at byte {found.data_offset}, not at {len(header)}")
        return replace(found, path=Path(label), file_size=file_size)
