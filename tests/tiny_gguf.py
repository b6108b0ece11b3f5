"""Tiny but well-formed GGUF model files, written with gguf.GGUFWriter for the tests.

A two-layer llama-shaped model with embedding 256 (one K-quant block per row), so any
quant type can be used for the weight matrices. Tensor data is zeros: the format is real,
the weights are not.
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np

EMBD = 256
FF = 512
VOCAB = 32


def write_tiny_model(
    path: Path,
    *,
    arch: str = "llama",
    file_type: int | None = int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
    weight_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.Q4_K,
    n_layers: int = 2,
    context_length: int = 4096,
    chat_template: str | None = "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    extra_tokens: tuple[str, ...] = (),
    license: str | None = "apache-2.0",
    name: str | None = "Tiny Test Model",
    general_type: str | None = None,
    extra_kv: dict[str, int | str] | None = None,
) -> Path:
    """Write the model to ``path`` and return ``path``."""
    writer = gguf.GGUFWriter(str(path), arch)
    if name is not None:
        writer.add_name(name)
    if license is not None:
        writer.add_license(license)
    if general_type is not None:  # "adapter" (a LoRA) or "mmproj" (a projector), as llama.cpp writes them
        writer.add_type(general_type)
    for key, value in (extra_kv or {}).items():  # e.g. split.no / split.count of a split file's part
        if isinstance(value, int):
            writer.add_uint16(key, value)
        else:
            writer.add_string(key, value)
    writer.add_block_count(n_layers)
    writer.add_context_length(context_length)
    writer.add_embedding_length(EMBD)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    tokens = [f"t{i}" for i in range(VOCAB - len(extra_tokens))] + list(extra_tokens)
    writer.add_token_list(tokens)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def matrix(tname: str, rows: int, cols: int, qtype: gguf.GGMLQuantizationType) -> None:
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tname, np.zeros((rows, cols), dtype=np.float32))
            return
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor(tname, np.zeros((rows, cols // block * size), dtype=np.uint8), raw_dtype=qtype)

    matrix("token_embd.weight", VOCAB, EMBD, gguf.GGMLQuantizationType.Q8_0)
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(EMBD, dtype=np.float32))
        matrix(f"blk.{i}.attn_q.weight", EMBD, EMBD, weight_type)
        matrix(f"blk.{i}.attn_k.weight", EMBD // 2, EMBD, weight_type)
        matrix(f"blk.{i}.attn_v.weight", EMBD // 2, EMBD, gguf.GGMLQuantizationType.Q6_K)
        matrix(f"blk.{i}.attn_output.weight", EMBD, EMBD, weight_type)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(EMBD, dtype=np.float32))
        matrix(f"blk.{i}.ffn_gate.weight", FF, EMBD, weight_type)
        matrix(f"blk.{i}.ffn_up.weight", FF, EMBD, weight_type)
        matrix(f"blk.{i}.ffn_down.weight", EMBD, FF, gguf.GGMLQuantizationType.Q6_K)
    writer.add_tensor("output_norm.weight", np.ones(EMBD, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def write_raw_header(path: Path, *, tensor_count: int, kv_count: int, body: bytes = b"") -> Path:
    """A GGUF v3 header with the given counts followed by ``body``: for hostile-file tests."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + body)
    return path


def write_float_model(
    path: Path, *, n_layers: int = 16, n_embd: int = 256, n_heads: int = 8, n_kv_heads: int = 2,
    n_ff: int = 768, n_vocab: int = 256, tied: bool = False, seed: int = 0,
) -> Path:
    """A llama-shaped F32 model with random weights that llama.cpp's quantizer accepts.

    Random values, not zeros, so every quant type's search has something to fit.
    """
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Tiny Float Model")
    writer.add_block_count(n_layers)
    writer.add_context_length(512)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(n_vocab)])
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types([1] * n_vocab)

    def matrix(name: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)

    matrix("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        matrix(f"blk.{i}.attn_q.weight", n_heads * head_dim, n_embd)
        matrix(f"blk.{i}.attn_k.weight", n_kv_heads * head_dim, n_embd)
        matrix(f"blk.{i}.attn_v.weight", n_kv_heads * head_dim, n_embd)
        matrix(f"blk.{i}.attn_output.weight", n_embd, n_heads * head_dim)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    if not tied:
        matrix("output.weight", n_vocab, n_embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_imatrix(path: Path, model: Path, *, scale: float = 1.0, seed: int = 0, chunks: int = 4,
                  dataset: str = "corpus.txt") -> Path:
    """An importance matrix in llama-imatrix's GGUF layout for ``model``'s weight matrices:
    per tensor ``NAME.in_sum2`` (one sum per input column) and ``NAME.counts`` (tokens seen).
    ``scale`` multiplies sums and counts alike, which leaves the normalized values unchanged."""
    rng = np.random.default_rng(seed)
    reader = gguf.GGUFReader(str(model))
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", [dataset])
    writer.add_uint32("imatrix.chunk_count", chunks)
    writer.add_uint32("imatrix.chunk_size", 512)
    tokens = np.float32(chunks * 512 * scale)
    for tensor in reader.tensors:
        if len(tensor.shape) != 2 or tensor.name == "token_embd.weight":
            continue
        n_per_row = int(tensor.shape[0])  # GGUF lists the row length first
        sums = rng.uniform(0.01, 4.0, n_per_row).astype(np.float32) * tokens
        writer.add_tensor(f"{tensor.name}.in_sum2", sums)
        writer.add_tensor(f"{tensor.name}.counts", np.array([tokens], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_arch_model(path: Path, arch: str, hparams: dict[str, object], tensors: list[tuple[str, tuple[int, ...]]],
                     *, n_vocab: int = 32) -> Path:
    """A header of any architecture with F32 zero tensors of the given GGUF dims (row length first):
    what the memory layout and the layout checks read, for architecture kinds nothing here ships."""
    from variantlab.twin import add_metadata  # the GGUF types a twin's header gives each key

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in hparams.items():
        add_metadata(writer, f"{arch}.{key}", value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])
    for name, dims in tensors:
        writer.add_tensor(name, np.zeros(tuple(reversed(dims)), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
