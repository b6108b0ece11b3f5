"""A KV cache of N cells made without decoding N tokens: the fast depth fill for twins.

Speed at depth (llama-bench's ``-d``) depends on how many cells attention reads, not on what
they hold, and a twin's cells hold nothing meaningful anyway (its weights are random). Decoding
the depth costs a prompt of that length: 9 minutes at 3584 tokens for a 13B on a 2-core CPU,
more than the rest of a rung. So for a twin the engine decodes *one* token, reads that
sequence's state back (llama.cpp's ``llama_state_seq_get_data``), and writes a state of N cells
whose rows repeat that token's K and V rows, at positions 0..N-1
(``llama_state_seq_set_data``): the cache then holds N occupied cells, as after a decode.

The state layout is llama.cpp's (``llama_kv_cache::state_write`` in src/llama-kv-cache.cpp of
the vendored source): magic, sequence id, stream count, then per stream its cell count, each
cell's position and sequence ids, the value-transposed flag, the layer count, every layer's K
rows and every layer's V rows (or V elements, transposed; none with latent attention, whose
cache holds K only). Only the plain case is read here: one stream, cells without extensions,
one cache. Anything else (sliding-window pairs of caches, recurrent state, M-RoPE cells) does
not parse to the last byte, and the caller decodes the depth instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_HEAD = struct.Struct("<IiII")  # magic, seq id, stream count, cell count
_CELL = struct.Struct("<iIi")  # position, sequence-id count (1), sequence id
_FLAGS = struct.Struct("<II")  # v transposed, layer count
_ROW_HEAD = struct.Struct("<iQ")  # tensor type, row size
_TRANS_HEAD = struct.Struct("<iII")  # tensor type, element size, elements per cell


@dataclass(frozen=True)
class CellTemplate:
    """One cell's state, parsed: the header fields and each layer's K and V bytes for that cell."""

    magic: int
    v_trans: bool
    k_rows: tuple[tuple[int, bytes], ...]  # (type, row) per layer
    v_rows: tuple[tuple[int, bytes], ...]  # (type, row) per layer; transposed: (type, n elements × element size)
    v_elements: tuple[int, ...]  # transposed V: elements per cell per layer (empty when not transposed)


def parse_one_cell(state: bytes) -> CellTemplate | None:
    """The template in a one-cell sequence state, or None where the layout is not the plain one."""
    try:
        return _parse(state)
    except (struct.error, ValueError):
        return None


def _parse(state: bytes) -> CellTemplate | None:
    magic, _seq, n_stream, n_cells = _HEAD.unpack_from(state, 0)
    if n_stream != 1 or n_cells != 1:
        return None
    offset = _HEAD.size
    _pos, n_seq, _seq_id = _CELL.unpack_from(state, offset)
    if n_seq != 1:
        return None
    offset += _CELL.size
    v_trans, n_layer = _FLAGS.unpack_from(state, offset)
    offset += _FLAGS.size
    k_rows, offset = _rows(state, offset, n_layer)
    if offset == len(state):  # latent attention (MLA): the cache holds K only, V is read from it
        return CellTemplate(magic, bool(v_trans), k_rows, (), ())
    if v_trans:
        v_rows, elements, offset = _transposed_rows(state, offset, n_layer)
    else:
        (v_rows, offset), elements = _rows(state, offset, n_layer), ()
    if offset != len(state):  # a second cache, recurrent state or cell extensions follow: not plain
        return None
    return CellTemplate(magic, bool(v_trans), k_rows, v_rows, elements)


def _rows(state: bytes, offset: int, n_layer: int) -> tuple[tuple[tuple[int, bytes], ...], int]:
    rows = []
    for _ in range(n_layer):
        kind, size = _ROW_HEAD.unpack_from(state, offset)
        offset += _ROW_HEAD.size
        if offset + size > len(state):
            raise ValueError("row past the end")
        rows.append((kind, state[offset:offset + size]))
        offset += size
    return tuple(rows), offset


def _transposed_rows(state: bytes, offset: int, n_layer: int) -> tuple[tuple[tuple[int, bytes], ...], tuple[int, ...], int]:
    rows, elements = [], []
    for _ in range(n_layer):
        kind, size_el, n_el = _TRANS_HEAD.unpack_from(state, offset)
        offset += _TRANS_HEAD.size
        size = size_el * n_el
        if offset + size > len(state):
            raise ValueError("row past the end")
        rows.append((kind, state[offset:offset + size]))
        elements.append(n_el)
        offset += size
    return tuple(rows), tuple(elements), offset


def state_bytes(template: CellTemplate, n_cells: int) -> int:
    """The size of the state ``build_state`` writes for ``n_cells`` cells."""
    k = sum(_ROW_HEAD.size + n_cells * len(row) for _, row in template.k_rows)
    head = _TRANS_HEAD.size if template.v_trans else _ROW_HEAD.size
    v = sum(head + n_cells * len(row) for _, row in template.v_rows)
    return _HEAD.size + n_cells * _CELL.size + _FLAGS.size + k + v


def build_state(template: CellTemplate, n_cells: int, seq_id: int = 0) -> np.ndarray:
    """A sequence state of ``n_cells`` cells at positions 0..n_cells-1, each holding the
    template's K and V: one buffer, filled in place (no second copy of the cache)."""
    out = np.empty(state_bytes(template, n_cells), dtype=np.uint8)
    offset = _put(out, 0, _HEAD.pack(template.magic, seq_id, 1, n_cells))
    cells = np.zeros(n_cells, dtype=np.dtype([("pos", "<i4"), ("n_seq", "<u4"), ("seq", "<i4")]))
    cells["pos"] = np.arange(n_cells)
    cells["n_seq"] = 1
    cells["seq"] = seq_id
    out[offset:offset + cells.nbytes] = cells.view(np.uint8)
    offset += cells.nbytes
    offset = _put(out, offset, _FLAGS.pack(int(template.v_trans), len(template.k_rows)))
    for kind, row in template.k_rows:
        offset = _put_rows(out, offset, _ROW_HEAD.pack(kind, len(row)), row, n_cells)
    for i, (kind, row) in enumerate(template.v_rows):
        if template.v_trans:
            n_el = template.v_elements[i]
            offset = _put_transposed(out, offset, _TRANS_HEAD.pack(kind, len(row) // n_el, n_el), row, n_el, n_cells)
        else:
            offset = _put_rows(out, offset, _ROW_HEAD.pack(kind, len(row)), row, n_cells)
    assert offset == len(out)
    return out


def _put(out: np.ndarray, offset: int, data: bytes) -> int:
    out[offset:offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
    return offset + len(data)


def _put_rows(out: np.ndarray, offset: int, head: bytes, row: bytes, n_cells: int) -> int:
    offset = _put(out, offset, head)
    size = n_cells * len(row)
    out[offset:offset + size].reshape(n_cells, len(row))[:] = np.frombuffer(row, dtype=np.uint8)
    return offset + size


def _put_transposed(out: np.ndarray, offset: int, head: bytes, row: bytes, n_el: int, n_cells: int) -> int:
    """Transposed V: for each element, that element of every cell in turn."""
    offset = _put(out, offset, head)
    size_el = len(row) // n_el
    size = n_cells * len(row)
    block = out[offset:offset + size].reshape(n_el, n_cells, size_el)
    block[:] = np.frombuffer(row, dtype=np.uint8).reshape(n_el, 1, size_el)
    return offset + size
