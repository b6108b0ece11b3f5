"""Speculative decoding: the acceptance rule keeps the target's distribution, the distribution is
llama.cpp's own, and with a real draft model greedy output is the target's, token for token."""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from variantlab.engine.speculative import PassCost, RunLengths, accept_or_replace, choose_length, target_probabilities


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


def test_the_guess_length_weighs_expected_tokens_against_measured_pass_costs() -> None:
    passes = PassCost()
    costs = {1: 1.0, 2: 1.6, 3: 2.1, 4: 2.6, 5: 3.1, 7: 4.2, 9: 7.4, 13: 8.0, 17: 8.7, 25: 11.0, 33: 13.0, 49: 17.0}
    for n, seconds in costs.items():  # the shape measured on this CPU (docs/benchmarks.md), in 1-pass units
        passes.record(n, seconds)
    geometric = [0.9 ** j for j in range(1, 49)]
    # each token right with chance 0.9: k = 3 gives 1 + .9 + .81 + .729 = 3.439 tokens for 2.6 = 1.323 a unit, the best
    # (k = 4: 4.095 / 3.1 = 1.321; k = 2: 2.71 / 2.1 = 1.290; k = 16: 8.33 / 8.7 = 0.96)
    assert choose_length(geometric, passes, 0, 0.0, 48) == 3
    # a copy in progress (0.99 a token): 48 guesses give 38.9 tokens for 17 = 2.29 (k = 32: 28.2 / 13 = 2.17)
    assert choose_length([0.99 ** j for j in range(1, 49)], passes, 0, 0.0, 48) == 48
    assert choose_length([0.3 ** j for j in range(1, 49)], passes, 0, 0.0, 48) == 0  # 1.3 / 1.6 < 1: does not pay
    assert choose_length([0.99 ** j for j in range(1, 17)], passes, 0, 0.6, 16) == 0  # a draft step of 0.6: sure guesses lose
    assert choose_length(geometric, passes, 0, 0.0, 2) == 2  # never beyond what is wanted


def test_an_untimed_pass_size_is_priced_from_the_nearest_smaller_one() -> None:
    passes = PassCost()
    assert passes.cost(3) == pytest.approx(1.5)  # nothing timed: 1 + a quarter per extra token, in 1-pass units
    passes.record(1, 0.04)
    passes.record(4, 0.11)
    assert passes.cost(6) == pytest.approx(0.11 + 2 * 0.25 * 0.04)
    passes.record(4, 0.21)
    assert passes.cost(4) == pytest.approx(0.7 * 0.11 + 0.3 * 0.21)


def test_run_lengths_are_kaplan_meier_over_recent_guesses() -> None:
    runs = RunLengths(prior=0.5)
    runs.record(4, 4)  # kept whole: right at 1-4, unknown after
    runs.record(4, 1)  # right at 1, wrong at 2
    s = runs.survival(5)
    # j=1: 2 at risk, 0 wrong, one pseudo-guess with hazard 0.5 → 1 - 0.5/3; j=2: 2 at risk, 1 wrong → 1 - 1.5/3;
    # j=3: 1 at risk → 1 - 0.5/2; j=4 the same; j=5: none at risk → the prior's 0.5
    expected = [5 / 6, 5 / 6 * 0.5]
    expected += [expected[-1] * 0.75, expected[-1] * 0.75 * 0.75]
    expected += [expected[-1] * 0.5]
    assert s == pytest.approx(expected)
    assert RunLengths(0.9).survival(3) == pytest.approx([0.9, 0.81, 0.729])  # no guesses yet: the prior, a token at a time


def test_a_sequence_that_stopped_guessing_forgets_and_tries_again() -> None:
    runs = RunLengths(prior=0.9)
    for _ in range(4):
        runs.record(8, 0)
    low = runs.survival(1)[0]
    for _ in range(RunLengths.FORGET_AFTER * 4):
        runs.record(0, 0)
    assert not runs.outcomes and runs.survival(1)[0] == pytest.approx(0.9) and low < 0.5


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
        fast = engine.generate(prompt, 96, sampling=Sampling(speculate="draft", draft_min=4))
        assert fast.tokens == plain.tokens and fast.text == plain.text
        assert fast.accepted > len(fast.tokens) // 3 and fast.passes < len(fast.tokens) // 2
        both = engine.generate_batch([prompt, prompt[:-3]], 48, sampling=Sampling(speculate="draft", draft_min=4))
        alone = engine.generate_batch([prompt, prompt[:-3]], 48, sampling=Sampling())
        assert [g.tokens for g in both] == [g.tokens for g in alone]
        sampled = engine.generate(prompt, 48, sampling=Sampling(temperature=0.8, speculate="draft", draft_min=4))
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
