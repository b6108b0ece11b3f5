"""The second backend: any OpenAI-compatible server (llama-server, Ollama, LM Studio).

Timings come from the stream: time to first token is the first chunk that carries text;
generation speed counts the chunks after it (servers stream one token per chunk, and the
usage block, when sent, gives the exact count). Prompt speed is prompt tokens ÷ time to
first token: an upper-bound estimate that includes the network round trip, labelled so.
"""

from __future__ import annotations

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
