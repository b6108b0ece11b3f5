"""Reading GGUF headers: right facts from good files, one clear line for bad ones."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from tests.tiny_gguf import EMBD, gguf_string, write_raw_header, write_tiny_model
from variantlab.errors import ModelFileError
from variantlab.modelfile import read_model_file


def test_reads_the_facts_of_a_tiny_model(tiny_model: Path) -> None:
    info = read_model_file(tiny_model)
    stock = gguf.GGUFReader(tiny_model)
    assert info.architecture == "llama"
    assert info.parameters == sum(int(t.n_elements) for t in stock.tensors)
    assert info.tensor_bytes == sum(int(t.n_bytes) for t in stock.tensors)
    assert info.bits_per_weight == pytest.approx(info.tensor_bytes * 8 / info.parameters)
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.embedding_length) == (2, 4, 2, EMBD)
    assert info.head_dim == EMBD // 4
    assert info.file_type == "Q4_K_M" and info.context_length == 4096
    assert info.has_chat_template and info.license == "apache-2.0"
    assert sum(t.share_of_bytes for t in info.tensor_types) == pytest.approx(1.0)
    assert info.tensor_types[0].type == "Q4_K"  # the largest share first
    assert info.fim_tokens == {}


def test_finds_fim_tokens_by_their_spelling(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "m.gguf", extra_tokens=("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
    assert read_model_file(path).fim_tokens == {"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>", "middle": "<|fim_middle|>"}


def test_missing_file_type_and_template(tmp_path: Path) -> None:
    info = read_model_file(write_tiny_model(tmp_path / "m.gguf", file_type=None, chat_template=None, license=None))
    assert info.file_type is None and info.file_type_id is None
    assert not info.has_chat_template and info.license is None


def test_control_characters_in_metadata_are_stripped(tmp_path: Path) -> None:
    info = read_model_file(write_tiny_model(tmp_path / "m.gguf", name="evil\x1b]0;pwned\x07name"))
    assert info.name == "evil]0;pwnedname"


def _kv_string(key: bytes, value_len: int, value: bytes = b"") -> bytes:
    return gguf_string(key) + struct.pack("<I", int(gguf.GGUFValueType.STRING)) + struct.pack("<Q", value_len) + value


def _hostile_files(tmp: Path) -> dict[str, Path]:
    good = write_tiny_model(tmp / "good.gguf")
    data = good.read_bytes()
    files = {
        "text file": tmp / "notes.gguf",
        "empty": tmp / "empty.gguf",
        "magic only": tmp / "magic.gguf",
        "billions of tensors": write_raw_header(tmp / "tensors.gguf", tensor_count=5_000_000_000, kv_count=0),
        "billions of kv": write_raw_header(tmp / "kvs.gguf", tensor_count=0, kv_count=2**40),
        "2^60-byte string": write_raw_header(tmp / "string.gguf", tensor_count=0, kv_count=1, body=_kv_string(b"general.name", 2**60, b"x" * 64)),
        "2^60-item array": write_raw_header(
            tmp / "array.gguf", tensor_count=0, kv_count=1,
            body=gguf_string(b"tokenizer.ggml.scores") + struct.pack("<IIQ", int(gguf.GGUFValueType.ARRAY), int(gguf.GGUFValueType.UINT8), 2**60) + b"\0" * 64,
        ),
        "unknown value type": write_raw_header(tmp / "vtype.gguf", tensor_count=0, kv_count=1, body=gguf_string(b"k") + struct.pack("<I", 99) + b"\0" * 16),
        "no architecture": write_raw_header(tmp / "noarch.gguf", tensor_count=0, kv_count=0),
    }
    files["text file"].write_text("this is not a model\n")
    files["empty"].write_bytes(b"")
    files["magic only"].write_bytes(b"GGUF")
    for cut in (10, 24, 200, len(data) // 2, len(data) - 100):
        path = tmp / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        files[f"truncated at {cut}"] = path
    return files


def _limit_memory() -> None:
    one_gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (2 * one_gib, 2 * one_gib))


@pytest.mark.parametrize("case", [
    "text file", "empty", "magic only", "billions of tensors", "billions of kv", "2^60-byte string",
    "2^60-item array", "unknown value type", "no architecture",
    "truncated at 10", "truncated at 24", "truncated at 200",
])
def test_hostile_file_gives_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    files = _hostile_files(tmp_path)
    path = files[case]
    done = subprocess.run(
        [sys.executable, "-m", "variantlab.cli.app", "inspect", str(path)],
        capture_output=True, text=True, timeout=60, preexec_fn=_limit_memory,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(path) in lines[0] and lines[0].startswith("variantlab: error:")
    assert done.stdout == ""


def test_truncation_anywhere_is_a_model_file_error(tmp_path: Path) -> None:
    files = _hostile_files(tmp_path)
    for label, path in files.items():
        if label.startswith("truncated"):
            with pytest.raises(ModelFileError, match="truncated|corrupt|not a GGUF"):
                read_model_file(path)


def test_a_metadata_array_nested_thousands_deep_is_one_line_exit_2(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    key = b"general.nested"
    body = struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    body += struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 0, 0)
    path = write_raw_header(tmp_path / "nested.gguf", tensor_count=0, kv_count=1, body=body)
    result = cli("inspect", str(path))
    assert result.code == 2 and "nested deeper" in result.err and "Traceback" not in result.err, result.err


def _raw_model(path: Path, tensors: list[tuple[str, list[int], int, int]], data_bytes: int, arch: bool = True) -> Path:
    """A GGUF with general.architecture and the given tensor infos (name, dims, type, offset), then zeros."""
    kv = gguf_string(b"general.architecture") + struct.pack("<I", 8) + gguf_string(b"llama") if arch else b""
    infos = b""
    for name, dims, kind, offset in tensors:
        infos += gguf_string(name.encode()) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        infos += struct.pack("<IQ", kind, offset)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1 if arch else 0) + kv + infos
    head += b"\0" * (-len(head) % 32)
    path.write_bytes(head + b"\0" * data_bytes)
    return path


@pytest.mark.parametrize("tensors, data, message", [
    ([("a", [4] * 9, 0, 0)], 1 << 20, "invalid number of dimensions: 9 > 4"),
    ([("a", [64], 0, 0), ("b", [64], 0, 128)], 512, "has offset 128, expected 256"),  # b overlaps a
    ([("a", [64], 0, 2 ** 63)], 512, "has offset"),  # an offset that overflows past the file
    ([("a", [64], 0, 0)], 100, "past the file's end"),
    ([("a", [2 ** 32, 2 ** 32], 0, 0)], 512, ">= INT64_MAX"),
    ([("a", [0, 4], 0, 0)], 512, "a dimension of 0"),
    ([("a", [], 0, 0)], 512, "no dimensions"),
    ([("a", [100], 12, 0)], 512, "not a multiple of block size (256)"),  # Q4_K rows of 100
    ([("a", [64], 99, 0)], 512, "invalid ggml type 99"),
    ([], 0, "no tensors"),
])
def test_files_llama_cpp_refuses_are_refused_before_registering(tmp_path: Path, cli, tensors, data, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _raw_model(tmp_path / "hostile.gguf", tensors, data)
    result = cli("inspect", str(path))
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
    fetched = cli("models", "fetch", f"file:{path}", "--name", "hostile")
    assert fetched.code == 2 and cli("models", "list", "--json").out.count("hostile") == 0


def test_a_well_formed_raw_model_is_read(tmp_path: Path) -> None:
    from variantlab.modelfile import read_model_file

    info = read_model_file(_raw_model(tmp_path / "ok.gguf", [("a", [64], 0, 0), ("b", [64], 0, 256)], 512))
    assert info.architecture == "llama"


def test_a_missing_file_is_file_not_found_not_a_bad_value(tmp_path: Path) -> None:
    """Issue 16: "no such file" was a ModelFileError (a ValueError); it is a FileNotFoundError in the one hierarchy."""
    from variantlab.errors import MissingFileError, VariantlabError
    from variantlab.modelfile import read_model_file
    from variantlab.store import Store

    for attempt in (lambda: read_model_file(tmp_path / "gone.gguf"), lambda: Store(tmp_path / "home").resolve(str(tmp_path / "gone.gguf"))):
        with pytest.raises(MissingFileError) as err:
            attempt()
        assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, VariantlabError)
        assert not isinstance(err.value, ValueError) and "gone.gguf: no such file" in str(err.value)


def test_engine_and_sandbox_errors_are_in_the_one_hierarchy() -> None:
    from variantlab import errors
    from variantlab.engine import EngineCrashed, EngineError, RequestRefused
    from variantlab.eval.sandbox import SandboxError

    for error in (EngineCrashed, EngineError, RequestRefused, SandboxError, errors.TemplateRefused):
        assert error.__module__ == "variantlab.errors" and issubclass(error, errors.VariantlabError)
