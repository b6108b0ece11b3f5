"""The serving loop in the engine child: one request that meets a bug fails alone (500, logged with
its id) and the loop goes on serving the next (issue 15, point 1). No model is needed: the engine
here is a stand-in whose tokenizer fails on one prompt."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from variantlab.engine.serving import serve_loop


class BrokenTokenizer:
    settings = SimpleNamespace(n_ctx=256, n_seq_max=2)

    def __init__(self) -> None:
        self.released: list[int] = []

    def clear(self) -> None:
        pass

    def compact(self, running: list[Any]) -> bool:
        return False

    def step(self, running: list[Any]) -> None:
        assert running == []

    def release_slot(self, seq_id: int) -> None:
        self.released.append(seq_id)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        raise RuntimeError(f"a bug met by {text!r}")


def test_a_request_that_raises_fails_alone_and_the_loop_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    inbox = deque([("submit", 7, "first", None, True, 8, [], {}), ("submit", 8, "second", None, True, 8, [], {}),
                   ("stop",)])
    sent: list[Any] = []
    engine = BrokenTokenizer()

    def poll(timeout: float | None) -> bool:  # "stop" arrives only once the loop has answered
        return bool(inbox) and (inbox[0] != ("stop",) or bool(sent))

    serve_loop(engine, poll, inbox.popleft, sent.append, slots=2)  # type: ignore[arg-type]
    errors = [item for message in sent for item in message[1]]
    assert [e[0] for e in errors] == [7, 8]  # both answered, the second after the first failed
    assert all(e[2]["status"] == 500 and e[2]["code"] == "internal_error" for e in errors)
    assert "request 7 failed" in capsys.readouterr().err
    assert engine.released == [0, 1]  # the slots' cache cells are freed for the next request
