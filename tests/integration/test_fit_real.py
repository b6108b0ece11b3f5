"""The catalog's recipe replayed for the real Qwen2.5-Coder file: every tensor, type and byte."""

from __future__ import annotations

from variantlab.fit import network_from_catalog, network_from_file
from variantlab.knowledge.catalog import find_variant


def test_catalog_variant_is_the_real_file(default_model: str) -> None:
    real = network_from_file(default_model)
    predicted = network_from_catalog(find_variant("qwen2.5-coder:0.5b-instruct-q4_K_M"))
    assert sorted(t.name for t in predicted.tensors) == sorted(t.name for t in real.tensors)
    # Which layers get the raised types depends on the file's tensor order (this file lists
    # blk.0, blk.1, blk.10, ...; tests/test_quant_rules.py checks the order-exact choice),
    # so compare the mix: every (type, shape, bytes) with its count.
    mix = lambda net: sorted((t.type, t.dims, t.n_bytes) for t in net.tensors)  # noqa: E731
    assert mix(predicted) == mix(real)
    assert predicted.weights_bytes == real.weights_bytes
    assert abs(predicted.file_bytes - real.file_bytes) < 0.001 * real.file_bytes  # the header is estimated
