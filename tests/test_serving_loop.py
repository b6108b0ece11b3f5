"""The serving loop in the engine child: one request that meets a bug fails alone (500, logged with
its id) and the loop goes on serving the next (issue 15, point 1). No model is needed: the engine
here is a stand-in that fails on every prompt, in its tokenizer or while starting the sequence."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from variantlab.engine.messages import Request, Served, StopServing, Submit
from variantlab.engine.serving import serve_loop


class BrokenEngine:
    settings = SimpleNamespace(n_ctx=256, n_seq_max=2)

    def __init__(self, fails_in: str) -> None:
        self.fails_in = fails_in
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
        if self.fails_in == "tokenize":
            raise RuntimeError(f"a bug met by {text!r}")
        return [1, 2, 3]

    def start_sequence(self, slot: int, prompt: list[int], *args: Any) -> Any:
        raise RuntimeError(f"a bug met in slot {slot}")


@pytest.mark.parametrize("fails_in", ["tokenize", "start_sequence"])
def test_a_request_that_raises_fails_alone_and_the_loop_goes_on(fails_in: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    inbox: deque[Any] = deque([Submit(Request(7, "first", None, True, 8, [], {})),
                               Submit(Request(8, "second", None, True, 8, [], {})), StopServing()])
    sent: list[Served] = []
    engine = BrokenEngine(fails_in)

    def poll(timeout: float | None) -> bool:  # StopServing arrives only once the loop has answered
        return bool(inbox) and (not isinstance(inbox[0], StopServing) or bool(sent))

    serve_loop(engine, poll, inbox.popleft, sent.append, slots=2)  # type: ignore[arg-type]
    errors = [item for message in sent for item in message.pieces]
    assert [request_id for request_id, _ in errors] == [7, 8]  # both answered, the second after the first failed
    assert all(piece.done and piece.done["status"] == 500 and piece.done["code"] == "internal_error"
               for _, piece in errors)
    assert "request 7 failed" in capsys.readouterr().err
    # a request that failed after taking a slot leaves its cache cells freed for the next request
    assert engine.released == ([] if fails_in == "tokenize" else [0, 0])
