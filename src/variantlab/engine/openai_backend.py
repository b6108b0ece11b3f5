"""The second backend: any OpenAI-compatible server (llama-server, Ollama, LM Studio).

Timings come from the stream: time to first token is the first chunk that carries text;
generation speed counts the chunks after it (servers stream one token per chunk, and the
usage block, when sent, gives the exact count). Prompt speed is prompt tokens ÷ time to
first token: an upper-bound estimate that includes the network round trip, labelled so.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import SourceError, UsageError

SPEC_PREFIX = "openai:"
PROMPT_UNIT = "def function_number_{i}(value):\n    return value * {i} + {i}\n\n"


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str | None = None

    @property
    def label(self) -> str:
        return f"{SPEC_PREFIX}{self.base_url}#{self.model}"


def is_openai_spec(ref: str) -> bool:
    return ref.startswith(SPEC_PREFIX)


def resolve_endpoint(ref: str, model: str | None = None, api_key: str | None = None, timeout: float = 10) -> Endpoint:
    """``openai:URL[#MODEL]`` → an endpoint, asking the server for its first model when none is named."""
    url, _, named = ref[len(SPEC_PREFIX):].partition("#")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"bad endpoint {ref!r}", hint="write openai:http://HOST:PORT/v1[#MODEL]")
    chosen = model or named or None
    if chosen is None:
        data = _get_json(f"{url}/models", api_key, timeout)
        models = [m.get("id") for m in data.get("data", []) if m.get("id")]
        if not models:
            raise SourceError(f"{url}/models lists no model", hint="name one with openai:URL#MODEL")
        chosen = models[0]
    return Endpoint(url, chosen, api_key)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _get_json(url: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    try:
        response = httpx.get(url, headers=_headers(api_key), timeout=timeout)
        response.raise_for_status()
        return dict(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise SourceError(f"OpenAI endpoint {url} did not answer: {type(exc).__name__}: {exc}",
                          hint="is the server running, and is the URL its /v1 base?") from None


def filler_prompt(approx_tokens: int) -> str:
    """Plain code text of roughly ``approx_tokens`` tokens (about 16 per unit)."""
    return "".join(PROMPT_UNIT.format(i=i) for i in range(max(1, approx_tokens // 16)))


def time_completion(endpoint: Endpoint, prompt: str, max_tokens: int, timeout: float = 300) -> dict[str, float | None]:
    """One streamed greedy completion: TTFT, generation tokens/s, token counts."""
    body = {"model": endpoint.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    chunks, usage = 0, dict[str, Any]()
    t0 = time.perf_counter()
    t_first = t_last = None
    try:
        with httpx.stream("POST", f"{endpoint.base_url}/completions", json=body, headers=_headers(endpoint.api_key),
                          timeout=timeout) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                usage = event.get("usage") or usage
                if any(c.get("text") for c in event.get("choices", [])):
                    now = time.perf_counter()
                    t_first = t_first or now
                    t_last = now
                    chunks += 1
    except (httpx.HTTPError, ValueError) as exc:
        raise SourceError(f"OpenAI endpoint {endpoint.base_url} failed: {type(exc).__name__}: {exc}",
                          hint="is the server running, and does it serve that model?") from None
    if t_first is None or t_last is None:
        raise SourceError(f"{endpoint.base_url} streamed no text for model {endpoint.model!r}")
    generated = int(usage.get("completion_tokens") or chunks)
    ttft = t_first - t0
    prompt_tokens = usage.get("prompt_tokens")  # None when the server sends no usage block
    return {
        "ttft_s": ttft,
        "gen_tokens_per_s": (generated - 1) / (t_last - t_first) if generated > 1 and t_last > t_first else 0.0,
        "prompt_tokens": float(prompt_tokens) if prompt_tokens else None,
        "completion_tokens": float(generated),
        "prompt_tokens_per_s": prompt_tokens / ttft if prompt_tokens and ttft > 0 else None,
    }


# -- generation for eval (greedy or sampled; one request each, the caller bounds concurrency) -----

@dataclass(frozen=True)
class RemoteText:
    """What a server generated: the text, why it stopped ("stop" or "length"), tokens if it said."""

    text: str
    finish_reason: str
    tokens: int


def server_root(endpoint: Endpoint) -> str:
    """The server's root URL (llama-server's /props and /infill live beside /v1)."""
    return endpoint.base_url[: -len("/v1")] if endpoint.base_url.endswith("/v1") else endpoint.base_url


def server_identity(endpoint: Endpoint, timeout: float = 10) -> dict[str, Any]:
    """What the server says it is: its /v1/models answer and, where it has one, /props (llama-server)."""
    identity: dict[str, Any] = {"models": _get_json(f"{endpoint.base_url}/models", endpoint.api_key, timeout)}
    try:
        response = httpx.get(f"{server_root(endpoint)}/props", headers=_headers(endpoint.api_key), timeout=timeout)
        props = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        props = None
    if isinstance(props, dict):
        template = props.pop("chat_template", None)
        if isinstance(template, str):
            props["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest()
        identity["props"] = props
    return identity


def is_llama_server(identity: dict[str, Any]) -> bool:
    props = identity.get("props")
    return isinstance(props, dict) and ("default_generation_settings" in props or "build_info" in props)


def remote_complete(endpoint: Endpoint, client: httpx.Client, body: dict[str, Any], path: str = "/completions",
                    timeout: float = 600) -> RemoteText:
    """POST one request to ``/v1/completions`` or ``/v1/chat/completions`` and read the one choice."""
    data = _post(client, f"{endpoint.base_url}{path}", {"model": endpoint.model, **body}, endpoint, timeout)
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if path == "/chat/completions" else choice["text"]
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}")
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        return RemoteText(text, "length" if choice.get("finish_reason") == "length" else "stop", tokens)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SourceError(f"{endpoint.base_url}{path} answered without a completion ({type(exc).__name__}: {exc})",
                          hint="is it an OpenAI-compatible server?") from None


def remote_infill(endpoint: Endpoint, client: httpx.Client, body: dict[str, Any], timeout: float = 600) -> RemoteText:
    """POST one request to llama-server's /infill (prefix, suffix, neighbouring files)."""
    data = _post(client, f"{server_root(endpoint)}/infill", body, endpoint, timeout)
    text = data.get("content")
    if not isinstance(text, str):
        raise SourceError(f"{server_root(endpoint)}/infill answered without content", hint="is it llama-server?")
    return RemoteText(text, "length" if data.get("stop_type") == "limit" or data.get("stopped_limit") else "stop",
                      int(data.get("tokens_predicted") or 0))


def remote_tokenize(endpoint: Endpoint, client: httpx.Client, text: str) -> list[int]:
    """llama-server's /tokenize with special tokens read as such."""
    data = _post(client, f"{server_root(endpoint)}/tokenize", {"content": text, "parse_special": True}, endpoint, 30)
    tokens = data.get("tokens")
    return [int(t) for t in tokens] if isinstance(tokens, list) else []


def _post(client: httpx.Client, url: str, body: dict[str, Any], endpoint: Endpoint, timeout: float) -> dict[str, Any]:
    try:
        response = client.post(url, json=body, headers=_headers(endpoint.api_key), timeout=timeout)
    except httpx.HTTPError as exc:
        raise SourceError(f"{url} did not answer: {type(exc).__name__}: {exc}", hint="is the server running?") from None
    if response.status_code >= 400:
        raise SourceError(f"{url} refused the request: HTTP {response.status_code} {_error_text(response)}",
                          hint="does the server serve this model, and support this endpoint?")
    try:
        data = response.json()
    except ValueError:
        raise SourceError(f"{url} answered something that is not JSON ({response.text[:80]!r})",
                          hint="is it an OpenAI-compatible server?") from None
    if not isinstance(data, dict):
        raise SourceError(f"{url} answered JSON that is not an object", hint="is it an OpenAI-compatible server?")
    return data


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        return str(error.get("message") if isinstance(error, dict) else error)[:200]
    except (ValueError, AttributeError):
        return response.text[:200].replace("\n", " ")
