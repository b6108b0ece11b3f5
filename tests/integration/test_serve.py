"""`variantlab serve` on the real default model, with real clients: the official `openai`
package for completions, chat and streams, plain HTTP for /infill and for every bad request.

One server for the module (loading takes a second; each test checks it still answers).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.net import free_port

pytestmark = pytest.mark.integration

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model: str, real_store) -> Iterator[str]:
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, "VARIANTLAB_HOME": str(home), "VARIANTLAB_API_KEY": KEY,
           "VARIANTLAB_LOCKFILE": str(home / "variantlab.lock")}
    exe = [sys.executable, "-m", "variantlab.cli.app"]
    source = real_store.resolve(default_model).path
    subprocess.run([*exe, "models", "fetch", f"file:{source}", "--name", default_model], env=env, check=True, capture_output=True)
    subprocess.run([*exe, "lock", "add", "chat", default_model, "--fingerprint", "none"], env=env, check=True, capture_output=True)
    proc, base = _start_serve(home, "chat", "--parallel", "2", "--ctx", "2048", "--max-tokens-cap", "256", env=env)
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def client(base: str):
    import openai

    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)


def alive(base: str) -> None:
    r = httpx.get(f"{base}/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_startup_log_names_the_file_role_and_hash(server: str, tmp_path_factory) -> None:
    logs = list(Path(tmp_path_factory.getbasetemp()).glob("serve-home*/serve.log"))
    text = logs[0].read_text()
    assert "role 'chat'" in text and "verified" in text and "1d9614638d18" in text and "2 parallel" in text


def test_openai_client_completions_chat_and_streams(server: str) -> None:
    oa = client(server)
    models = oa.models.list()
    assert [m.id for m in models.data] == ["chat"]
    done = oa.completions.create(model="chat", prompt="def add(a, b):\n    return", max_tokens=8, temperature=0)
    assert done.choices[0].text.strip() and done.usage.completion_tokens <= 8
    answer = oa.chat.completions.create(model="chat", temperature=0, max_tokens=32,
                                        messages=[{"role": "user", "content": "What is 2 + 3? Answer with the number."}])
    assert "5" in answer.choices[0].message.content and answer.choices[0].finish_reason in ("stop", "length")
    pieces = [c.choices[0].delta.content or "" for c in oa.chat.completions.create(
        model="chat", temperature=0, max_tokens=32, stream=True,
        messages=[{"role": "user", "content": "What is 2 + 3? Answer with the number."}]) if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == answer.choices[0].message.content  # same text, streamed
    streamed = "".join(c.choices[0].text for c in oa.completions.create(
        model="chat", prompt="def add(a, b):\n    return", max_tokens=8, temperature=0, stream=True))
    assert streamed == done.choices[0].text


def test_stop_strings_are_never_sent(server: str) -> None:
    oa = client(server)
    full = oa.completions.create(model="chat", prompt="1, 2, 3, 4,", max_tokens=24, temperature=0).choices[0].text
    assert " 6" in full
    cut = oa.completions.create(model="chat", prompt="1, 2, 3, 4,", max_tokens=24, temperature=0, stop=[" 6"])
    assert cut.choices[0].text == full[: full.index(" 6")] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in oa.completions.create(
        model="chat", prompt="1, 2, 3, 4,", max_tokens=24, temperature=0, stop=[" 6"], stream=True))
    assert streamed == cut.choices[0].text


def test_infill_fills_a_gap_in_a_python_function(server: str) -> None:
    body = {"input_prefix": "def is_even(n):\n    return n ", "input_suffix": "\n\n\nprint(is_even(4))\n",
            "n_predict": 16, "temperature": 0, "stop": ["\n"]}
    r = httpx.post(f"{server}/infill", json=body, headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    middle = r.json()["content"]
    namespace: dict[str, object] = {}
    exec(body["input_prefix"] + middle + "\n", namespace)  # the model's line, run here: a tiny pure expression
    assert namespace["is_even"](4) is True and namespace["is_even"](7) is False  # type: ignore[operator]


def test_infill_takes_neighbouring_files_as_editor_plugins_send_them(server: str) -> None:
    """llama.vscode and llama.vim send chunks of other files as input_extra (llama-server's /infill)."""
    extra = [{"filename": "util.py", "text": "def parity(n):\n    return n % 2\n" * 200}]  # more than the slot holds: trimmed
    body = {"input_prefix": "from util import parity\n\ndef is_even(n):\n    return ", "input_suffix": "\n",
            "input_extra": extra, "n_predict": 12, "temperature": 0, "stop": ["\n"]}
    r = httpx.post(f"{server}/infill", json=body, headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["content"], str)


def test_a_completion_with_a_suffix_fills_the_gap_as_infill_does(server: str) -> None:
    """OpenAI's insert mode, as Ollama takes it and `eval openai:` sends it to servers without /infill."""
    prefix, suffix = "def is_even(n):\n    return n ", "\n\n\nprint(is_even(4))\n"
    infill = httpx.post(f"{server}/infill", json={"input_prefix": prefix, "input_suffix": suffix, "n_predict": 16,
                                                   "temperature": 0, "stop": ["\n"]}, headers=auth(), timeout=60)
    insert = httpx.post(f"{server}/v1/completions", json={"prompt": prefix, "suffix": suffix, "max_tokens": 16,
                                                          "temperature": 0, "stop": ["\n"]}, headers=auth(), timeout=60)
    assert insert.status_code == 200, insert.text
    assert insert.json()["choices"][0]["text"] == infill.json()["content"]


@pytest.mark.parametrize("path, body, status, needle", [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", {"max_tokens": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": 42}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -1}, 400, "at least 1"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "at least 1"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 10**9}, 400, "cap of 256"),
    ("/v1/completions", {"prompt": "x", "temperature": -2}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "does not exist"),
    ("/v1/completions", {"prompt": "word " * 3000, "max_tokens": 4}, 400, "context holds"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    ("/infill", {"input_suffix": "x"}, 400, "input_prefix"),
    ("/infill", {"input_prefix": "x", "n_predict": 100000}, 400, "cap of 256"),
    ("/infill", {"input_prefix": "x", "input_extra": [{"filename": "a.py"}]}, 400, "text"),
    ("/infill", {"input_prefix": "x", "input_extra": "a.py"}, 400, "input_extra"),
    ("/v1/nothing", {}, 404, "Not Found"),
    # a lone surrogate in every text field that reaches the engine: one 400, the server lives on
    ("/v1/completions", {"prompt": "a\ud800"}, 400, "lone surrogate"),
    ("/v1/completions", {"prompt": ["a\udfff"]}, 400, "lone surrogate"),
    ("/v1/completions", {"prompt": "a", "stop": "\ud800"}, 400, "lone surrogate"),
    ("/v1/completions", {"prompt": "a", "stop": ["x", "\ud800"]}, 400, "lone surrogate"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi \ud800"}]}, 400, "lone surrogate"),
    ("/infill", {"input_prefix": "\ud800"}, 400, "lone surrogate"),
    ("/infill", {"input_prefix": "x", "input_suffix": "\udc00"}, 400, "lone surrogate"),
    ("/infill", {"input_prefix": "x", "prompt": "\ud800"}, 400, "lone surrogate"),
    ("/infill", {"input_prefix": "x", "stop": ["\ud800"]}, 400, "lone surrogate"),
])
def test_bad_requests_get_4xx_and_the_server_goes_on(server: str, path: str, body, status: int, needle: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{server}{path}", content=content, headers={**auth(), "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"]
    alive(server)


def test_body_over_the_limit_is_refused(server: str) -> None:
    r = httpx.post(f"{server}/v1/completions", content=b'{"prompt": "' + b"a" * (2 << 20) + b'"}',
                   headers={**auth(), "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "over" in r.json()["error"]["message"]
    alive(server)


def test_a_chunked_body_over_the_limit_is_413_too(server: str) -> None:
    def chunks():  # no Content-Length: httpx sends an iterator with Transfer-Encoding: chunked
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    r = httpx.post(f"{server}/v1/completions", content=chunks(), headers={**auth(), "Content-Type": "application/json"},
                   timeout=60)
    assert r.status_code == 413, r.text
    alive(server)


def test_health_shows_only_the_status(server: str) -> None:
    assert httpx.get(f"{server}/health", timeout=5).json() == {"status": "ok"}


def test_api_key_on_every_route_but_health_and_no_cors(server: str) -> None:
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(f"{server}{path}", timeout=5).status_code == 401
        assert httpx.get(f"{server}{path}", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    r = httpx.post(f"{server}/v1/completions", json={"prompt": "x"}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
    evil = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    pre = httpx.options(f"{server}/v1/completions", headers=evil, timeout=5)
    got = httpx.get(f"{server}/v1/models", headers={**auth(), "Origin": "http://evil.example"}, timeout=5)
    assert "access-control-allow-origin" not in pre.headers and "access-control-allow-origin" not in got.headers


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", headers=auth(), timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    for _ in range(2):  # both slots, each abandoned mid-stream
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        body = json.dumps({"prompt": "Count from 1 to 1000: 1, 2,", "max_tokens": 256, "temperature": 0, "stream": True})
        conn.request("POST", "/v1/completions", body=body, headers={**auth(), "Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(6) == b"data: "
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    deadline = time.monotonic() + 30
    while _metric(server, "variantlab_requests_in_flight") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metric(server, "variantlab_requests_in_flight") == 0
    quick = client(server).completions.create(model="chat", prompt="x = ", max_tokens=4, temperature=0)
    assert quick.choices[0].finish_reason in ("length", "stop")


def test_a_new_request_never_cuts_another_stream_short(server: str) -> None:
    oa = client(server)
    results: dict[str, tuple[str, str | None]] = {}

    def long_stream() -> None:
        text, reason = "", None
        for c in oa.completions.create(model="chat", prompt="Count: 1, 2, 3,", max_tokens=120, temperature=0, stream=True):
            text += c.choices[0].text
            reason = c.choices[0].finish_reason or reason
        results["long"] = (text, reason)

    first = threading.Thread(target=long_stream)
    first.start()
    time.sleep(1.0)
    for i in range(3):  # more requests than free slots, while the stream runs
        oa.completions.create(model="chat", prompt=f"y{i} = ", max_tokens=8, temperature=0)
    first.join(timeout=120)
    text, reason = results["long"]
    alone = oa.completions.create(model="chat", prompt="Count: 1, 2, 3,", max_tokens=120, temperature=0)
    assert reason == alone.choices[0].finish_reason and text == alone.choices[0].text
    metrics = httpx.get(f"{server}/metrics", headers=auth(), timeout=5).text
    assert "variantlab_completion_tokens_total" in metrics and "variantlab_request_seconds_bucket" in metrics
    assert "variantlab_queue_length" in metrics


def test_a_dead_engine_ends_the_server_instead_of_a_503_zombie(tmp_path: Path, default_model: str, real_store) -> None:
    """Kill the engine child: the server exits non-zero within seconds, saying why (issue 15, point 1)."""
    import psutil

    source = real_store.resolve(default_model).path
    proc, _ = _start_serve(tmp_path, source, "--parallel", "1", "--ctx", "512", "--max-tokens-cap", "16")
    log = tmp_path / "serve.log"
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the engine child was not found"
        for child in children:
            child.kill()
        assert proc.wait(timeout=20) == 3
        assert "stopping (exit code 3)" in log.read_text()
    finally:
        _kill_if_running(proc)


def _server_process(base: str):  # type: ignore[no-untyped-def]
    import psutil

    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError(f"nothing listens on {port}")


def _tree_rss(proc) -> int:  # type: ignore[no-untyped-def]
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def test_soak_mixed_good_bad_and_abandoned_requests(server: str) -> None:
    """A bounded soak on loopback: 240 requests (good, bad, hostile, abandoned streams) in 8 threads.
    Same server process afterwards, /health ok, every good request answered, memory growth bounded."""
    proc = _server_process(server)
    pid, rss_before = proc.pid, _tree_rss(proc)
    bodies = [
        ("/v1/completions", {"prompt": "def add(a, b):", "max_tokens": 8, "temperature": 0}, 200),
        ("/v1/completions", {"prompt": "a\ud800"}, 400),
        ("/v1/completions", b'{"prompt": [[[[', 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}, 200),
        ("/infill", {"input_prefix": "def f(x):\n    return ", "input_suffix": "\n", "n_predict": 8}, 200),
        ("/v1/completions", {"prompt": "x", "max_tokens": 10 ** 9}, 400),
    ]
    failures: list[str] = []

    def worker(i: int) -> None:
        with httpx.Client(timeout=120, headers=auth()) as c:
            for j in range(30):
                path, body, status = bodies[(i + j) % len(bodies)]
                if (i + j) % 7 == 0:  # a stream abandoned after its first event
                    with c.stream("POST", f"{server}/v1/completions",
                                  json={"prompt": "def f():", "max_tokens": 64, "stream": True}) as r:
                        next(r.iter_lines())
                    continue
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                r = c.post(f"{server}{path}", content=content, headers={"Content-Type": "application/json"})
                if r.status_code != status:
                    failures.append(f"{path} {r.status_code} != {status}: {r.text[:200]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures, failures[:5]
    alive(server)
    assert _server_process(server).pid == pid
    assert _tree_rss(proc) - rss_before < 256 << 20  # stated bound: under 256 MiB of growth over the soak


def _start_serve(home: Path, model: str | Path, *options: str,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:  # type: ignore[type-arg]
    """`variantlab serve MODEL OPTIONS` in its own session (log in HOME/serve.log), once /health answers."""
    env = env or {**os.environ, "VARIANTLAB_HOME": str(home)}
    port = free_port()
    log = home / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "variantlab.cli.app", "serve", str(model), "--port", str(port),
                                 *options], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(log.read_text())


def _sigterm_ends_it_within(proc: subprocess.Popen, seconds: float) -> None:  # type: ignore[type-arg]
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
    assert time.monotonic() - t0 < seconds, f"SIGTERM took {time.monotonic() - t0:.1f} s"


def _kill_if_running(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _post_and_ignore_the_end(url: str, body: dict) -> None:  # type: ignore[type-arg]
    """A request whose server is stopped under it: how it ends is not what the test checks."""
    try:
        httpx.post(url, json=body, timeout=60)
    except httpx.HTTPError:
        pass


def test_sigterm_ends_the_server_within_seconds_while_it_generates(tmp_path: Path, smol_model: str) -> None:
    """SIGTERM with streams and plain requests under way: the server exits within a few seconds (issue 15, point 2)."""
    proc, base = _start_serve(tmp_path, smol_model, "--parallel", "2", "--ctx", "2048", "--max-tokens-cap", "512")
    body = {"prompt": "def fibonacci(n):", "max_tokens": 512, "temperature": 0.8, "ignore_eos": True}
    try:
        for stream in (True, False, True):
            threading.Thread(target=_post_and_ignore_the_end, args=(f"{base}/v1/completions", {**body, "stream": stream}),
                             daemon=True).start()
        time.sleep(1.5)
        _sigterm_ends_it_within(proc, 8)
    finally:
        _kill_if_running(proc)


LOOPING_TEMPLATE = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                    "{{ messages[0]['content'] }}")


def test_a_looping_chat_template_is_refused_and_sigterm_still_ends_the_server(tmp_path: Path, smol_model: str) -> None:
    """Through a live server (issue 15, point 2): a template whose loops pass Jinja's range limit gets 400
    in bounded time, /health answers while it renders, and SIGTERM during such a render ends the server."""
    looping = tmp_path / "looping-template.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", smol_model, str(looping),
                    "--chat-template", LOOPING_TEMPLATE, "--force"], check=True, capture_output=True)
    proc, base = _start_serve(tmp_path, looping, "--parallel", "1", "--ctx", "512", "--max-tokens-cap", "16")
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        answers: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: answers.append(httpx.post(f"{base}/v1/chat/completions", json=chat,
                                                                            timeout=60)))
        t0 = time.monotonic()
        worker.start()
        time.sleep(0.5)
        health = httpx.get(f"{base}/health", timeout=1.5)  # the event loop is not held by the render
        worker.join(timeout=60)
        assert health.status_code == 200
        assert answers and answers[0].status_code == 400, answers and answers[0].text
        assert "template" in answers[0].json()["error"]["message"]
        assert time.monotonic() - t0 < 15
        # SIGTERM while another looping render is under way
        threading.Thread(target=_post_and_ignore_the_end, args=(f"{base}/v1/chat/completions", chat), daemon=True).start()
        time.sleep(0.5)
        _sigterm_ends_it_within(proc, 8)
    finally:
        _kill_if_running(proc)


def test_metrics_are_labelled_by_route_template_not_raw_path(server: str) -> None:
    """Issue 16: every unknown URL made a new Prometheus series; the label is the route's template."""
    for path in ("/no/such/page-1", "/no/such/page-2", "/v1/unknown?x=1"):
        assert httpx.get(f"{server}{path}", headers=auth(), timeout=5).status_code == 404
    assert httpx.post(f"{server}/v1/completions", json={"prompt": 3}, headers=auth(), timeout=5).status_code == 400
    text = httpx.get(f"{server}/metrics", headers=auth(), timeout=5).text
    assert "page-1" not in text and "page-2" not in text and "/v1/unknown" not in text
    assert 'route="unmatched",status="404"' in text
    assert 'route="/v1/completions",status="400"' in text
    alive(server)
