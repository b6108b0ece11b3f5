"""The quant-type and file-type tables agree with gguf and with their own sources."""

from __future__ import annotations

import re

import gguf
import pytest

from variantlab.errors import UsageError
from variantlab.knowledge.quants import file_type, file_types, ladder, quant_types

LLAMA3_8B_PARAMS = 8_030_261_248


def test_file_type_ids_match_gguf() -> None:
    for name, ft in file_types().items():
        assert gguf.LlamaFileType[f"MOSTLY_{name}" if name != "F32" else "ALL_F32"].value == ft.id, name


def test_typical_bpw_is_derived_from_the_llama_quantize_note() -> None:
    checked = 0
    for ft in file_types().values():
        m = re.match(r"\s*([\d.]+)G, .*@ Llama-3-8B", ft.note)
        if m:
            assert ft.typical_bpw == pytest.approx(float(m[1]) * 2**30 * 8 / LLAMA3_8B_PARAMS, abs=0.006), ft.name
            checked += 1
        elif "bpw" in ft.note:
            assert ft.typical_bpw == pytest.approx(float(re.search(r"([\d.]+)\s+bpw", ft.note)[1])), ft.name
            checked += 1
    assert checked >= 25


@pytest.mark.parametrize(
    ("name", "bpw"),
    [("Q4_K", 4.5), ("Q5_K", 5.5), ("Q6_K", 6.5625), ("Q8_0", 8.5), ("Q4_0", 4.5), ("F16", 16.0), ("Q2_K", 2.625)],
)
def test_quant_type_bits_per_weight_from_gguf_block_table(name: str, bpw: float) -> None:
    assert quant_types()[name].bits_per_weight == pytest.approx(bpw)


def test_bytes_for_rounds_up_to_whole_blocks() -> None:
    q4k = quant_types()["Q4_K"]
    assert q4k.bytes_for(256) == 144
    assert q4k.bytes_for(257) == 288


def test_ladder_is_ordered_by_bits() -> None:
    rungs = ladder()
    assert [r.name for r in rungs][:2] == ["Q2_K", "Q3_K_S"]
    assert [r.typical_bpw for r in rungs] == sorted(r.typical_bpw for r in rungs)


def test_unknown_type_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean.*Q4_K_M"):
        file_type("q4km")
    assert file_type("q4_k_m").name == "Q4_K_M"
