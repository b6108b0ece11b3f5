"""eval through a running server: llama-server, built from the llama.cpp that the installed
llama-cpp-python vendors, started here on the default model and stopped after. Greedy pass@1 on
the quick HumanEval subset and on 20 infill holes must equal the in-process engine's, task by task
(one task may differ: batched floating point can flip a near tie; the assertion shows which)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from benchmarks.llama_cpp_tools import ensure_server

from tests.net import free_port
from variantlab.eval import EvalPlan, evaluate, infill
from variantlab.results import ResultsDB

pytestmark = pytest.mark.integration
PARALLEL = 4
INFILL_PROBLEMS = next(n for n in range(1, 165) if len(infill.holes(n)) >= 20)


@pytest.fixture(scope="module")
def llama_server(default_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-server on the default model: its /v1 URL while it runs."""
    binary = ensure_server()
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "llama-server.log"
    ctx_per_slot = 2048
    with open(log, "wb") as out:
        process = subprocess.Popen([str(binary), "-m", default_model, "--host", "127.0.0.1", "--port", str(port),
                                    "-np", str(PARALLEL), "-c", str(PARALLEL * ctx_per_slot), "--no-webui",
                                    "--alias", "qwen2.5-coder-0.5b-instruct-q4_k_m"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("llama-server did not come up in 120 s:\n" + log.read_text()[-2000:])
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_up(url: str) -> None:
    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)


def _passed(report: object) -> dict[str, bool]:
    per_task = report.per_task  # type: ignore[attr-defined]
    return {tid: bool(r["passed"]) for tid, r in per_task.items()}


def _compare(local: object, remote: object) -> None:
    here, there = _passed(local), _passed(remote)
    assert here.keys() == there.keys()
    differ = sorted(t for t in here if here[t] != there[t])
    detail = json.dumps({t: {"engine": local.per_task[t], "server": remote.per_task[t]} for t in differ},  # type: ignore[attr-defined]
                        indent=1, default=str)
    assert len(differ) <= 1, f"{len(differ)} tasks differ between the engine and llama-server:\n{detail}"


def test_humaneval_quick_through_llama_server_equals_the_engine(default_model: str, llama_server: str) -> None:
    plan = EvalPlan(subset="quick", parallel=PARALLEL)
    local = evaluate(default_model, plan)
    remote = evaluate(f"openai:{llama_server}", plan)
    assert remote.tasks == local.tasks == 20 and remote.prompt_style == local.prompt_style == "chat"  # type: ignore[union-attr]
    _compare(local, remote)
    with ResultsDB() as db:
        (run, *_) = db.runs(kind="eval")
    assert run.backend == "openai" and run.model.startswith("openai:") and run.suite == "humaneval"
    assert run.settings["server"]["models"]["data"] and "build_info" in run.settings["server"]["props"]


def test_infill_holes_through_llama_server_equal_the_engine(default_model: str, llama_server: str) -> None:
    plan = EvalPlan(suite="infill", limit=INFILL_PROBLEMS, parallel=PARALLEL, max_tokens=128)
    local = evaluate(default_model, plan)
    remote = evaluate(f"openai:{llama_server}", plan)
    assert remote.tasks == local.tasks >= 20
    _compare(local, remote)


def test_a_repository_through_llama_server(llama_server: str, tmp_path: Path) -> None:
    from tests.test_eval_repo import write_repo

    (tmp_path / "calc").mkdir()
    root = write_repo(tmp_path / "calc")
    report = evaluate(f"openai:{llama_server}", EvalPlan(suite=f"repo:{root}", holes=4, parallel=PARALLEL, max_tokens=64))
    assert report.holes + sum(report.dropped.values()) == 4 and report.backend == "openai" and report.repo_level_context  # type: ignore[union-attr]
    assert report.by_kind["all"]["executed"] >= 1  # type: ignore[union-attr]
    with ResultsDB() as db:
        (run, *_) = db.runs(kind="eval")
    assert run.suite == "repo" and run.settings["infill_via"] == "/infill" and run.dataset_sha256 == report.holes_sha256  # type: ignore[union-attr]


def test_a_server_that_is_down_or_answers_garbage_is_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    down = f"openai:http://127.0.0.1:{free_port()}/v1#model"
    result = cli("eval", down, "--limit", "1")
    assert result.code == 2 and result.err.count("\n") == 1 and "did not answer" in result.err
    port = free_port()  # a server that answers HTTP with something that is not an OpenAI API
    garbage = subprocess.Popen(["python3", "-c", _GARBAGE_SERVER, str(port)])
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/")
        result = cli("eval", f"openai:http://127.0.0.1:{port}/v1#model", "--limit", "1")
    finally:
        garbage.kill()
        garbage.wait()
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert cli("results", "--json").out.strip() in ("[]", "")


_GARBAGE_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Garbage(BaseHTTPRequestHandler):
    def answer(self):
        body = b"<html>not an API</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Garbage).serve_forever()
"""
