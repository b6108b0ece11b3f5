"""What crosses the pipe between variantlab and its engine child: typed messages, one class each.

Parent to child: ``Call`` (run a method of the child's service and answer), ``Close``; while
the child serves (``Call("serve_loop")``), ``Submit``, ``Cancel`` and ``StopServing``.
Child to parent: ``Ready`` once the model is loaded, ``Progress`` on the way, then ``Reply`` or
``Failed``; while serving, ``Served`` after each step. They are pickled by multiprocessing, so
they hold plain data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Ready:
    load_s: float


@dataclass(frozen=True)
class Progress:
    payload: Any


@dataclass(frozen=True)
class Reply:
    value: Any


@dataclass(frozen=True)
class Failed:
    """A method (or the model's load) failed: the error's class name and its one-line message."""

    error: str
    message: str


Fim = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Request:
    """One request to serve: a text prompt, or an infill (prefix, suffix, neighbouring files as
    (name, text) pairs) with an optional prompt after it."""

    id: int
    prompt: str | None
    fim: Fim | None
    add_special: bool
    max_tokens: int
    stop: list[str]
    sampling: dict[str, Any]


@dataclass(frozen=True)
class Submit:
    request: Request


@dataclass(frozen=True)
class Cancel:
    request_id: int


@dataclass(frozen=True)
class StopServing:
    pass


@dataclass(frozen=True)
class Piece:
    """What a request receives: text, and at the end a finish record, or an error record
    (``error``, the HTTP ``status`` it maps to, and a ``code``)."""

    text: str
    done: dict[str, Any] | None = None


@dataclass(frozen=True)
class Served:
    """The pieces one serving step produced, each with its request's id."""

    pieces: list[tuple[int, Piece]]
