"""Prompt-lookup speculation: the guesses, and greedy output identical with and without them."""

from __future__ import annotations

import pytest

from variantlab.engine.lookup import PromptLookup


def test_a_guess_is_what_followed_the_latest_earlier_occurrence() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 1, 2, 3], sizes=(2, 3))
    assert lookup.draft(2) == [5, 6]  # the latest "1 2 3" was followed by 5 6, not 4 9
    assert lookup.draft(8) == [5, 6, 1, 2, 3]  # as far as the history goes
    lookup.extend([7])
    assert lookup.draft(8) == []  # "2 3 7" and "3 7" never appeared before
    assert PromptLookup([1, 2], sizes=(2,)).draft(8) == []  # a suffix never finds itself
    assert PromptLookup(list(range(9)) + [0, 1, 2]).draft(4) == []  # by default only matches of 8 tokens or more count


@pytest.mark.integration
def test_greedy_output_is_identical_with_speculation(smol_model: str) -> None:
    from variantlab.engine import EngineSettings
    from variantlab.engine.llama import LlamaEngine, Sampling

    engine = LlamaEngine(smol_model, EngineSettings(n_ctx=4096, n_seq_max=2))
    try:
        code = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
        prompt = engine.tokenize("Repeat this code exactly:\n" + code + "\nHere it is again:\n" + code[:40])
        plain = engine.generate(prompt, 64, sampling=Sampling())
        fast = engine.generate(prompt, 64, sampling=Sampling(speculate="lookup", draft_min=4))
        assert fast.tokens == plain.tokens and fast.text == plain.text
        assert fast.drafted > 0 and fast.accepted > 0 and fast.passes < len(fast.tokens)
        assert plain.drafted == 0 and plain.passes >= len(plain.tokens) - 1
    finally:
        engine.close()
