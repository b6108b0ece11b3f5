"""Text assembly and stop strings of one generated sequence, fed piece by piece (no model)."""

from __future__ import annotations

from variantlab.engine.llama import _Sequence


def feed(pieces: list[bytes], stop: list[str]) -> _Sequence:
    seq = _Sequence(0, [1, 2], sampler=None, stop=stop, max_tokens=1000)
    for i, piece in enumerate(pieces):
        seq.append(100 + i, piece)
        if seq.done:
            break
    seq.finish_text()
    return seq


def test_stop_string_split_across_tokens_cuts_before_it() -> None:
    seq = feed([b"def f():", b"\n    return 1", b"\n", b"\ndef g", b"():"], stop=["\n\n"])
    assert seq.result.finish_reason == "stop"
    assert seq.result.text == "def f():\n    return 1"
    assert len(seq.result.tokens) == 4  # it stopped at the token that completed the stop string


def test_multibyte_character_split_across_pieces_is_whole() -> None:
    euro = "€".encode()
    seq = feed([b"price: ", euro[:1], euro[1:], b" 5"], stop=[])
    assert seq.result.text == "price: € 5" and seq.result.finish_reason == "length"


def test_earliest_of_several_stops_wins() -> None:
    seq = feed([b"a", b"bXc", b"Yd"], stop=["Y", "X"])
    assert seq.result.text == "ab"


def test_text_without_a_stop_is_kept_whole() -> None:
    pieces = [f"line {i}\n".encode() for i in range(500)]
    seq = feed(pieces, stop=["never"])
    assert seq.result.text == "".join(p.decode() for p in pieces)
    assert seq.tail.endswith("line 499\n") and len(seq.tail) <= len("never") - 1 + len("line 499\n")
