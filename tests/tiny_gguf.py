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
) -> Path:
    """Write the model to ``path`` and return ``path``."""
    writer = gguf.GGUFWriter(str(path), arch)
    if name is not None:
        writer.add_name(name)
    if license is not None:
        writer.add_license(license)
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
