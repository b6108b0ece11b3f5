"""Speculative decoding: the acceptance rule keeps the target's distribution, the distribution is
llama.cpp's own, and with a real draft model greedy output is the target's, token for token."""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from variantlab.engine.speculative import DraftLength, accept_or_replace, target_probabilities


def _llama_chain_probabilities(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """What llama.cpp's top-k → top-p → temperature chain leaves, made a distribution."""
    n = len(logits)
    data = (L.llama_token_data * n)(*[L.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits)])
    array = L.llama_token_data_array(data, n, -1, False)
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(top_k))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(top_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
    L.llama_sampler_apply(chain, ctypes.byref(array))
    L.llama_sampler_free(chain)
    kept = {array.data[i].id: array.data[i].logit for i in range(array.size)}
    out = np.zeros(n)
    ids = np.array(list(kept))
    z = np.exp(np.array(list(kept.values()), dtype=np.float64) - max(kept.values()))
    out[ids] = z / z.sum()
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-800, 800), min_size=3, max_size=60, unique=True), st.sampled_from([0.2, 0.7, 1.0, 1.5]),
       st.integers(1, 50), st.sampled_from([0.5, 0.9, 0.95, 1.0]))
def test_the_distribution_is_the_one_llama_cpp_draws_from(values: list[float], temperature: float, top_k: int,
                                                          top_p: float) -> None:
    logits = np.array(values, dtype=np.float32) / 100  # distinct logits: ties may be broken either way
    ours = target_probabilities(logits, temperature, top_k, top_p)
    assert ours == pytest.approx(_llama_chain_probabilities(logits, temperature, top_k, top_p), abs=1e-5)


@pytest.mark.parametrize("guess", [0, 2, 4])
def test_the_acceptance_rule_leaves_the_target_distribution(guess: int) -> None:
    """Chi-square over 40,000 draws: kept guesses and replacements together are distributed as p,
    for a likely guess, an unlikely one and one p rules out."""
    p = np.array([0.5, 0.25, 0.15, 0.1, 0.0])
    rng = np.random.default_rng(7)
    n = 40_000
    counts = np.bincount([accept_or_replace(p, guess, rng)[0] for _ in range(n)], minlength=len(p))
    expected = p * n
    live = expected > 0
    chi2 = (((counts - expected)[live]) ** 2 / expected[live]).sum()
    assert counts[~live].sum() == 0
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_a_guess_is_kept_as_often_as_the_target_would_choose_it() -> None:
    p = np.array([0.3, 0.7])
    rng = np.random.default_rng(1)
    kept = sum(accept_or_replace(p, 0, rng)[1] for _ in range(20_000))
    assert kept / 20_000 == pytest.approx(0.3, abs=0.015)


def test_the_draft_length_follows_the_acceptance() -> None:
    length = DraftLength(k=8, least=2, most=12)
    length.feedback(8, 8)
    assert length.k == 10
    length.feedback(10, 10)
    length.feedback(12, 12)
    assert length.k == 12
    length.feedback(12, 5)
    assert length.k == 12  # partly taken: unchanged
    length.feedback(12, 0)
    length.feedback(6, 0)
    length.feedback(3, 0)
    assert length.k == 2


CHAT = ("<|im_start|>user\nWrite a Python function is_prime(n) that returns True if n is prime.<|im_end|>\n"
        "<|im_start|>assistant\n```python\n")


@pytest.mark.integration
def test_a_draft_model_gives_the_target_s_greedy_tokens_in_fewer_passes(coder_pair: tuple[str, str]) -> None:
    from variantlab.engine import EngineSettings
    from variantlab.engine.llama import LlamaEngine, Sampling

    target, draft = coder_pair
    engine = LlamaEngine(target, EngineSettings(n_ctx=1024, n_seq_max=2, draft_model=draft))
    try:
        prompt = engine.tokenize(CHAT)
        plain = engine.generate(prompt, 96, sampling=Sampling())
        fast = engine.generate(prompt, 96, sampling=Sampling(speculate="draft"))
        assert fast.tokens == plain.tokens and fast.text == plain.text
        assert fast.accepted > len(fast.tokens) // 3 and fast.passes < len(fast.tokens) // 2
        both = engine.generate_batch([prompt, prompt[:-3]], 48, sampling=Sampling(speculate="draft"))
        alone = engine.generate_batch([prompt, prompt[:-3]], 48, sampling=Sampling())
        assert [g.tokens for g in both] == [g.tokens for g in alone]
        sampled = engine.generate(prompt, 48, sampling=Sampling(temperature=0.8, speculate="draft"))
        assert sampled.drafted > 0 and len(sampled.tokens) > 0
    finally:
        engine.close()


@pytest.mark.integration
def test_a_draft_that_cannot_guess_for_the_target_is_refused(coder_pair: tuple[str, str], smol_model: str) -> None:
    from variantlab.engine import EngineSettings
    from variantlab.engine.llama import LlamaEngine
    from variantlab.errors import EngineError

    target, draft = coder_pair
    with pytest.raises(EngineError, match="cannot guess for this target: the .*differ|token"):
        LlamaEngine(target, EngineSettings(n_ctx=512, draft_model=smol_model))
    with pytest.raises(EngineError, match="not smaller than the target"):
        LlamaEngine(draft, EngineSettings(n_ctx=512, draft_model=target))
