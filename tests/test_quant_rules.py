"""The per-tensor recipe in quant_rules.toml against llama.cpp's own quantizer.

Each case writes a small F32 llama-shaped model, quantizes it with llama.cpp
(``llama_model_quantize``, the code llama-quantize runs) and compares the type of every
tensor in the output with what the rules predict, in the output's order.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import pytest

from tests.tiny_gguf import write_float_model
from variantlab.knowledge.quant_rules import ModelShape, tensor_types
from variantlab.knowledge.quants import file_type

llama_cpp = pytest.importorskip("llama_cpp")

# Types llama.cpp makes without an importance matrix (IQ1/IQ2/IQ3_XXS/IQ3_XS and Q2_K_S need one).
FILE_TYPES = [
    "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
    "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS",
]
SHAPES = {
    # grouped-query attention (heads/KV heads = 4): the gqa rules apply
    "gqa4": dict(n_layers=16, n_embd=256, n_heads=8, n_kv_heads=2, n_ff=768),
    # no GQA, no output matrix: the token embedding takes the output's type
    "tied": dict(n_layers=16, n_embd=256, n_heads=4, n_kv_heads=4, n_ff=512, tied=True),
    # rows of 96: not a multiple of 256, so the K- and I-quants fall back to 32-blocks
    "narrow": dict(n_layers=8, n_embd=96, n_heads=4, n_kv_heads=2, n_ff=160),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("float-models")
    return {name: write_float_model(folder / f"{name}.gguf", **shape) for name, shape in SHAPES.items()}


def _quantize(src: Path, dst: Path, ftype: str) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type(ftype).id
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("ftype", FILE_TYPES)
def test_rules_match_llama_quantizer(sources: dict[str, Path], tmp_path: Path, shape_name: str, ftype: str) -> None:
    out = tmp_path / "q.gguf"
    _quantize(sources[shape_name], out, ftype)
    reader = gguf.GGUFReader(out)
    spec = SHAPES[shape_name]
    shape = ModelShape("llama", spec["n_layers"], spec["n_heads"], spec["n_kv_heads"], tied_embeddings=bool(spec.get("tied")))
    tensors = [(t.name, tuple(int(d) for d in t.shape), "F32") for t in reader.tensors]
    predicted = tensor_types(tensors, ftype, shape)
    actual = [t.tensor_type.name for t in reader.tensors]
    wrong = [(t[0], p, a) for t, p, a in zip(tensors, predicted, actual) if p != a]
    assert not wrong, f"{ftype} on {shape_name}: (tensor, predicted, llama.cpp) {wrong[:6]}"
