"""Variant names decode into the right parts; unknown parts are reported, not guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from variantlab.explain import explain_name

F = "GGUF"
# name, family, size_b, flavor, quant, level_bits, scheme, mix
CASES = [
    # plain CodeLlama Instruct, K-quant medium mix
    ("codellama-13b-instruct.Q4_K_M.gguf", "CodeLlama", 13, "instruct", "Q4_K_M", 4, "k-quant", "M"),
    # Python-tuned flavour, large mix
    ("codellama-34b-python.Q3_K_L.gguf", "CodeLlama", 34, "python", "Q3_K_L", 3, "k-quant", "L"),
    # named fine-tune of CodeLlama; "v2" is its version, not a size
    ("Phind-CodeLlama-34B-v2.Q5_K_M.gguf", "CodeLlama", 34, "phind", "Q5_K_M", 5, "k-quant", "M"),
    # WizardCoder-Python is trained from CodeLlama-Python; v1.0 is a version
    ("wizardcoder-python-13b-v1.0.Q4_K_S.gguf", "CodeLlama", 13, "wizardcoder", "Q4_K_S", 4, "k-quant", "S"),
    # lower-case quant joined by '-', family name containing a dot
    ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "Qwen2.5-Coder", 1.5, "instruct", "Q4_K_M", 4, "k-quant", "M"),
    # legacy _0 scheme has no mix
    ("deepseek-coder-6.7b-base.Q8_0.gguf", "DeepSeek-Coder", 6.7, "base", "Q8_0", 8, "legacy", None),
    # no flavour word: StarCoder2 names its base model without a suffix; Q6_K has no mix
    ("starcoder2-15b-Q6_K.gguf", "StarCoder2", 15, "base", "Q6_K", 6, "k-quant", None),
    # I-quant with XS mix; "Meta-Llama-3" is the family, 3 is not a size
    ("Meta-Llama-3-70B-Instruct-IQ2_XS.gguf", "Llama 3", 70, "instruct", "IQ2_XS", 2, "i-quant", "XS"),
    # Ollama tag: family:size-flavour-quant
    ("codellama:13b-instruct-q4_K_M", "CodeLlama", 13, "instruct", "Q4_K_M", 4, "k-quant", "M"),
    # Ollama tag without a flavour: CodeLlama's bare name is the base model
    ("codellama:7b-q8_0", "CodeLlama", 7, "base", "Q8_0", 8, "legacy", None),
    # Ollama's "code" tag is CodeLlama's base model
    ("codellama:7b-code-q4_0", "CodeLlama", 7, "base", "Q4_0", 4, "legacy", None),
    # float formats
    ("deepseek-coder-1.3b-instruct.f16.gguf", "DeepSeek-Coder", 1.3, "instruct", "F16", 16, "float", None),
    # sizes in millions
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2", 0.135, "instruct", "Q4_1", 4, "legacy", None),
]


@pytest.mark.parametrize(("name", "family", "size", "flavor", "quant", "bits", "scheme", "mix"), CASES)
def test_decodes_each_part(name: str, family: str, size: float, flavor: str, quant: str, bits: int, scheme: str, mix: str | None) -> None:
    v = explain_name(name)
    assert (v.family, v.size_b, v.flavor, v.quant, v.level_bits, v.scheme, v.mix, v.format) == (
        family, size, flavor, quant, bits, scheme, mix, F
    )
    assert v.unknown_parts == []
    assert v.typical_bpw and v.explanations["level"] and v.explanations["scheme"]


def test_fine_tunes_keep_what_they_are_tuned_for() -> None:
    assert explain_name("wizardcoder-python-13b-v1.0.Q4_K_S.gguf").tuned_for == "python"
    assert explain_name("Phind-CodeLlama-34B-v2.Q5_K_M.gguf").version == "v2"


def test_unknown_parts_are_reported_not_guessed() -> None:
    v = explain_name("mystery-7b-chatty.Q4_K_M.gguf")
    assert v.family is None and v.flavor is None
    assert v.unknown_parts == ["mystery", "chatty"]
    assert v.size_b == 7 and v.quant == "Q4_K_M"


def test_family_without_naming_convention_leaves_flavor_unknown() -> None:
    v = explain_name("deepseek-coder-6.7b.Q4_K_M.gguf")
    assert v.family == "DeepSeek-Coder" and v.flavor is None


def test_control_characters_in_names_are_dropped() -> None:
    assert "\x1b" not in explain_name("codellama-7b\x1b[31m.Q4_K_M.gguf").name


def test_cli_explain_json_has_the_stable_keys(cli) -> None:  # type: ignore[no-untyped-def]
    import json

    r = cli("explain", "codellama-13b-instruct.Q4_K_M.gguf", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    for key in ("family", "size_b", "flavor", "quant", "level_bits", "scheme", "mix", "format"):
        assert key in data
    assert data["checked_against_file"] is False


def test_cli_explain_reports_name_header_disagreement(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.tiny_gguf import write_tiny_model

    # a Q4_K_M file named as if it were Q5_K_M
    liar = write_tiny_model(tmp_path / "tiny-1m-instruct.Q5_K_M.gguf")
    r = cli("explain", str(liar))
    assert r.code == 1
    assert "the name says Q5_K_M, the file says Q4_K_M" in " ".join(r.out.split())
    honest = write_tiny_model(tmp_path / "tiny-1m-instruct.Q4_K_M.gguf")
    assert cli("explain", str(honest)).code == 0


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink loop"])
def test_explain_on_something_that_is_not_a_file_says_it_could_not_read_it(tmp_path: Path, cli, kind: str) -> None:  # type: ignore[no-untyped-def]
    import os

    path = tmp_path / "codellama-13b-instruct.Q4_K_M.gguf"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(path)
    result = cli("explain", str(path))
    assert result.code == 2 and "could not read the file" in result.err, (result.code, result.err)
