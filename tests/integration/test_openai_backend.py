"""Benching a running OpenAI-compatible server: llama-cpp-python's own server as the real peer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.net import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(smol_model: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", smol_model, "--model_alias", "smol",
         "--n_ctx", "1024", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_bench_an_openai_compatible_server(cli, server: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", f"openai:{server}", "--reps", "2", "--prompt", "64", "--gen", "16", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["backend"] == "openai" and data["model"] == f"openai:{server}#smol"
    assert data["ttft_s"] > 0 and data["gen_tokens_per_s"] > 0
    # llama-cpp-python's server sends no usage block in streams: the prompt figures are unknown, not zero
    assert data["prompt_tokens"] is None and data["prompt_tokens_per_s"] is None
    runs = json.loads(cli("results", "list", "--json").out)
    assert runs[0]["backend"] == "openai" and runs[0]["status"] == "ok"


def test_an_endpoint_that_is_down_is_one_line_exit_2(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("bench", f"openai:http://127.0.0.1:{free_port()}/v1", "--reps", "1")
    assert r.code == 2
    assert "did not answer" in r.err and len(r.err.strip().splitlines()) == 1
