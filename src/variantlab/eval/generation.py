"""Where completions come from: the one engine in its child process, or a running OpenAI-compatible server.

Both take the same requests (a text prompt, or a fill-in-the-middle prefix and suffix with the
neighbouring files) and give back the same ``Generation``; the suites do not know which one ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..engine import EngineProcess


@dataclass(frozen=True)
class FimRequest:
    """One hole to fill: the code around it, the files to show before it, where it stops."""

    prefix: str
    suffix: str
    stops: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()  # (path, text) of neighbouring files, nearest last
    repo: str = "myproject"
    filename: str = "filename"


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" or "length"
    tokens: int


@dataclass
class Batch:
    """What a backend generated for a list of requests, and how long it took."""

    generations: list[Generation] = field(default_factory=list)
    seconds: float = 0.0


class FimBackend(Protocol):
    label: str
    repo_level: bool  # shows neighbouring files (the model was trained with repository-level FIM)

    def infill(self, requests: Sequence[FimRequest], max_tokens: int, on_done: Callable[[], None]) -> Batch: ...


class EngineFim:
    """Fill-in-the-middle through the engine: prompts laid out as llama-server's /infill, trimmed
    to ``budget`` tokens of (prefix, suffix, neighbouring files), decoded together."""

    label = "llama.cpp"

    def __init__(self, engine: EngineProcess, budget: tuple[int, int, int], sampling: dict[str, Any]) -> None:
        self.engine, self.budget, self.sampling = engine, budget, sampling
        self.repo_level = bool(engine.call("repo_level_fim"))

    def infill(self, requests: Sequence[FimRequest], max_tokens: int, on_done: Callable[[], None]) -> Batch:
        prompts = [self.engine.call("fim_prompt", prefix=r.prefix, suffix=r.suffix, extra=[list(e) for e in r.extra],
                                    repo=r.repo, filename=r.filename, budget=list(self.budget)) for r in requests]
        return generate_grouped(self.engine, prompts, [r.stops for r in requests], max_tokens, self.sampling, on_done)


def generate_grouped(engine: EngineProcess, prompts: Sequence[list[int]], stops: Sequence[tuple[str, ...]], max_tokens: int,
                     sampling: dict[str, Any], on_done: Callable[[], None]) -> Batch:
    """Token prompts decoded together, one batch per stop list; generations in the prompts' order."""
    t0 = time.perf_counter()
    found: list[Generation | None] = [None] * len(prompts)
    for stop in dict.fromkeys(stops):
        index = [i for i, s in enumerate(stops) if s == stop]
        got = engine.call("generate_many", prompts=[prompts[i] for i in index], max_tokens=max_tokens, stop=list(stop),
                          on_progress=lambda _: on_done(), sampling=sampling)
        for i, g in zip(index, got):
            found[i] = Generation(g["text"], g["finish_reason"], len(g["tokens"]))
    return Batch([g for g in found if g is not None], time.perf_counter() - t0)
