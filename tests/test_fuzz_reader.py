"""Property-based fuzzing of the one GGUF reader with a fixed budget (issue 15): any bytes set in the
header, metadata or tensor table of a real small model, or any truncation, read or fail with one
ModelFileError, in under a second. The longer run (100,000 inputs) is benchmarks/fuzz_reader.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tiny_gguf import write_tiny_model
from variantlab.errors import ModelFileError
from variantlab.modelfile import _read_model_file, open_reader


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    path = write_tiny_model(tmp_path_factory.mktemp("fuzz") / "tiny.gguf")
    header = int(min(t.data_offset for t in open_reader(path).tensors))
    return path.read_bytes(), header


def _read(path: Path) -> None:
    t0 = time.perf_counter()
    try:
        _read_model_file(path)
    except ModelFileError:
        pass
    assert time.perf_counter() - t0 < 1.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_header_bytes_read_or_fail_with_one_line(tmp_path: Path, original: tuple[bytes, int],
                                                         flips: list[tuple[float, int]]) -> None:
    data, header = original
    out = bytearray(data)
    for where, value in flips:
        out[int(where * header)] = value
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(out))
    _read(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(cut=st.floats(0, 1))
def test_any_truncation_fails_with_one_line(tmp_path: Path, original: tuple[bytes, int], cut: float) -> None:
    data, header = original
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(cut * (header + 64))])
    _read(path)
