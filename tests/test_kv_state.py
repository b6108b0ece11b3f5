"""The written depth: a KV cache of N cells made from one decoded token's state (engine/kv_state.py)."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from variantlab.engine.kv_state import CellTemplate, build_state, parse_one_cell, state_bytes


@st.composite
def templates(draw: st.DrawFn) -> CellTemplate:
    n_layer = draw(st.integers(1, 4))
    v_trans = draw(st.booleans())
    row = st.binary(min_size=2, max_size=24).filter(lambda b: len(b) % 2 == 0)
    k_rows = tuple((draw(st.sampled_from([0, 1, 8])), draw(row)) for _ in range(n_layer))
    if draw(st.booleans()) and not v_trans:  # latent attention: K only
        return CellTemplate(0xAF143CD8, v_trans, k_rows, (), ())
    if v_trans:
        elements = tuple(draw(st.integers(1, 6)) for _ in range(n_layer))
        v_rows = tuple((1, draw(st.binary(min_size=2 * n, max_size=2 * n))) for n in elements)
    else:
        elements = ()
        v_rows = tuple((draw(st.sampled_from([0, 1])), draw(row)) for _ in range(n_layer))
    return CellTemplate(0xAF143CD8, v_trans, k_rows, v_rows, elements)


@given(templates(), st.integers(1, 40))
def test_a_built_state_has_the_size_and_layout_llama_cpp_writes(template: CellTemplate, n_cells: int) -> None:
    assert parse_one_cell(bytes(build_state(template, 1))) == template  # one cell reads back as itself
    state = bytes(build_state(template, n_cells))
    assert len(state) == state_bytes(template, n_cells)
    assert int.from_bytes(state[12:16], "little") == n_cells
    positions = [int.from_bytes(state[16 + 12 * i:20 + 12 * i], "little") for i in range(n_cells)]
    assert positions == list(range(n_cells))
    if n_cells > 1:
        assert parse_one_cell(state) is None  # only a one-cell state is a template


@given(templates())
def test_a_state_that_is_not_the_plain_layout_is_not_a_template(template: CellTemplate) -> None:
    state = bytes(build_state(template, 1))
    assert parse_one_cell(state[:-1]) is None  # cut short
    assert parse_one_cell(state + b"\0\0\0\0") is None  # a second cache or recurrent state after it
    assert parse_one_cell(state[:8] + (2).to_bytes(4, "little") + state[12:]) is None  # two streams


def test_transposed_values_are_laid_out_element_by_element() -> None:
    template = CellTemplate(1, True, ((1, b"kk"),), ((1, b"abcdef"),), (3,))  # 3 elements of 2 bytes
    state = bytes(build_state(template, 2))
    assert state.endswith(b"ababcdcdefef")  # element 0 of both cells, then element 1, then 2


@pytest.mark.integration
@pytest.mark.parametrize("flash_attn", ["on", "off"])  # off: llama.cpp keeps V transposed
def test_written_depth_is_a_cache_llama_cpp_holds_and_goes_on_from(smol_model: str, flash_attn: str) -> None:
    import llama_cpp as L

    from variantlab.engine import EngineSettings
    from variantlab.engine.llama import LlamaEngine

    engine = LlamaEngine(smol_model, EngineSettings(n_ctx=1024, flash_attn=flash_attn))
    try:
        engine.decode_prompt(engine.random_tokens(1, seed=-1))
        size = L.llama_state_seq_get_size(engine.ctx, 0)
        one = (ctypes.c_uint8 * size)()
        written = L.llama_state_seq_get_data(engine.ctx, one, size, 0)
        state = bytes(one)[:written]
        template = parse_one_cell(state)
        assert template is not None and template.v_trans == (flash_attn == "off")
        assert bytes(build_state(template, 1)) == state  # llama.cpp's own bytes, rebuilt
        engine.time_prompt(16, seed=1, depth=700, synthetic_depth=True)
        assert engine.depth_fill == "written"
        memory = L.llama_get_memory(engine.ctx)
        assert L.llama_memory_seq_pos_min(memory, 0) == 0 and L.llama_memory_seq_pos_max(memory, 0) == 700 + 16 - 1
        assert engine.peak_floor_bytes > 0  # the state buffer's pages are left out of later peaks
    finally:
        engine.close()


@pytest.mark.integration
def test_a_sliding_window_cache_is_decoded_not_written(gemma_model: str) -> None:
    import llama_cpp as L

    from variantlab.engine import EngineSettings
    from variantlab.engine.llama import LlamaEngine

    engine = LlamaEngine(gemma_model, EngineSettings(n_ctx=1024))
    try:
        engine.time_generation(4, depth=300, synthetic_depth=True)
        assert engine.depth_fill == "decoded"  # two caches (window and full): not the plain layout
        assert L.llama_memory_seq_pos_max(L.llama_get_memory(engine.ctx), 0) == 300 + 4 - 1
    finally:
        engine.close()
