"""The CLI seam: data on stdout, one-line errors on stderr, documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from variantlab.store import Store

INSPECT_KEYS = {"architecture", "parameters", "file_type", "bits_per_weight", "context_length", "n_layers",
                "n_heads", "n_kv_heads", "tensor_types", "has_chat_template", "fim_tokens", "sha256"}


def test_inspect_json_has_the_stable_keys(cli, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("inspect", str(tiny_model), "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert INSPECT_KEYS <= set(data)
    assert data["file_type"] == "Q4_K_M" and data["architecture"] == "llama"


def test_inspect_human_output_shows_the_mix(cli, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("inspect", str(tiny_model))
    assert r.code == 0
    for text in ("llama", "Q4_K_M", "tensor-type mix", "Q6_K", "embedded", "apache-2.0"):
        assert text in r.out


def test_models_fetch_list_path_verify(cli, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("models", "fetch", f"file:{tiny_model}", "--name", "tiny", "--json")
    assert r.code == 0, r.err
    fetched = json.loads(r.out)
    assert fetched["name"] == "tiny" and fetched["already_present"] is False
    listed = json.loads(cli("models", "list", "--json").out)
    assert [m["name"] for m in listed] == ["tiny"]
    path = cli("models", "path", "tiny").out.strip()
    assert Path(path).read_bytes() == tiny_model.read_bytes()
    assert cli("models", "verify").code == 0
    blob = Path(path)
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    r = cli("models", "verify", "--json")
    assert r.code == 1
    assert json.loads(r.out)[0]["problem"] == "bytes changed on disk"


def test_available_lists_the_builtin_models(cli) -> None:  # type: ignore[no-untyped-def]
    names = [m["name"] for m in json.loads(cli("models", "list", "--available", "--json").out)]
    assert names[0] == "qwen2.5-coder-0.5b-instruct:q4_k_m"
    assert {"qwen2.5-coder-1.5b-instruct:q4_k_m", "smollm2-135m-instruct:q4_1"} <= set(names)


def test_errors_are_one_line_with_exit_2(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (("inspect", "no-such-model"), "unknown model 'no-such-model'"),
        (("inspect", str(tmp_path / "missing.gguf")), "no such file"),
        (("models", "fetch", "qwen-coder"), "did you mean"),
        (("models", "fetch", "file:/nonexistent/x.gguf"), "does not exist"),
        (("models", "fetch", "hf:only-owner"), "write hf:OWNER/REPO/FILE.gguf"),
        (("models", "fetch", "file:/x.gguf", "--sha256", "abc"), "not 64 hex digits"),
        (("models", "path", "smollm2-135m-instruct:q4_1"), "variantlab models fetch smollm2-135m-instruct:q4_1"),
    ]
    for args, expected in cases:
        r = cli(*args)
        assert r.code == 2, args
        assert len(r.err.strip().splitlines()) == 1 and expected in r.err, (args, r.err)
        assert r.out == ""


def test_usage_errors_exit_2(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("inspect").code == 2
    assert cli("no-such-command").code == 2


def test_store_is_read_from_the_environment_at_call_time(cli, tiny_model: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cli("models", "fetch", f"file:{tiny_model}", "--name", "tiny")
    monkeypatch.setenv("VARIANTLAB_HOME", str(tmp_path / "other"))
    assert Store().manifests() == []


def test_tables_off_a_terminal_keep_every_name_whole(cli, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 16, defect 5: piped, `models list` cut names to "qwen2.5-co…", so rungs could not be told apart."""
    names = ["qwen2.5-coder-0.5b-instruct-dequantized-f16-requantized:q2_k",
             "qwen2.5-coder-0.5b-instruct-dequantized-f16-requantized:q3_k_s"]
    for name in names:
        assert cli("models", "fetch", f"file:{tiny_model}", "--name", name).code == 0
    listed = cli("models", "list")
    assert listed.code == 0
    assert all(name in listed.out for name in names) and "…" not in listed.out
    catalog = cli("catalog")
    assert "TheBloke/CodeLlama-7B-Python-GGUF" in catalog.out and "…" not in catalog.out


def test_a_long_job_piped_names_each_step_on_stderr(capsys) -> None:  # type: ignore[no-untyped-def]
    """Issue 16, defect 6: `make run` piped to a log printed nothing for the ladder's minutes. Off a
    terminal each of the job's steps is one plain line on stderr; its inner phases and repeats print nothing."""
    from variantlab.cli.output import progress_bars

    with progress_bars(steps="ladder") as progress:
        for k, step in enumerate(("make", "fit", "bench")):
            progress(f"ladder: Q2_K (1/1) {step}", k, 3)
            progress("generate tiny", 5, 10)
            progress(f"ladder: Q2_K (1/1) {step}", k, 3)
    with progress_bars() as progress:
        progress("ladder: Q2_K (1/1) make", 0, 3)  # a command that names no steps stays silent
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert [line.split(" [")[0] for line in lines] == [f"ladder: Q2_K (1/1) {s}" for s in ("make", "fit", "bench")]
    assert lines[1].startswith("ladder: Q2_K (1/1) fit [1/3] ") and captured.out == ""
