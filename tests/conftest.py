"""Shared fixtures: an isolated store per test, tiny GGUF files, a CLI runner, the real default model."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tiny_gguf import write_tiny_model
from variantlab import config
from variantlab.cli.app import main
from variantlab.store import Store, default_model_name, fetch

# The user's real store, read before any test changes VARIANTLAB_HOME: integration tests
# use the real models fetched there (by `make test`, or by the fixture below).
REAL_HOME = config.home()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty store of its own and a fixed terminal width."""
    home = tmp_path / "vlhome"
    monkeypatch.setenv("VARIANTLAB_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.delenv("VARIANTLAB_DEBUG", raising=False)
    return home


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "tiny-1m-instruct.Q4_K_M.gguf")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `variantlab ARGS…` in-process through the real entry point and error mapping."""

    def run(*args: str) -> CliResult:
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def real_store() -> Store:
    return Store(REAL_HOME)


@pytest.fixture(scope="session")
def default_model(real_store: Store) -> str:
    """The default model's path in the real store, fetched (and verified) if missing."""
    fetch(default_model_name(), store=real_store)
    return str(real_store.resolve(default_model_name()).path)


@pytest.fixture(scope="session")
def smol_model(real_store: Store) -> str:
    """SmolLM2-135M (98 MB): a real model small enough for fast engine tests."""
    fetch("smollm2-135m-instruct:q4_1", store=real_store)
    return str(real_store.resolve("smollm2-135m-instruct:q4_1").path)


@pytest.fixture(scope="session")
def coder_pair(real_store: Store) -> tuple[str, str]:
    """Qwen2.5-Coder 1.5B and 0.5B (one tokenizer): a real target and draft for speculative decoding."""
    paths = []
    for name in ("qwen2.5-coder-1.5b-instruct:q4_k_m", "qwen2.5-coder-0.5b-instruct:q4_k_m"):
        fetch(name, store=real_store)
        paths.append(str(real_store.resolve(name).path))
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def gemma_model(real_store: Store) -> str:
    """Gemma 3 270M (241 MiB): the real sliding-window model MODELS.md lists."""
    fetch("gemma-3-270m:q4_k_m", store=real_store)
    return str(real_store.resolve("gemma-3-270m:q4_k_m").path)


def pytest_report_header(config: pytest.Config) -> str:
    return f"variantlab real store: {REAL_HOME} (VARIANTLAB_HOME={os.environ.get('VARIANTLAB_HOME', 'unset')})"
