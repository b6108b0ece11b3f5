"""Speculative decoding's two parts that are not the target's own pass: the draft model, and the
acceptance rule for sampled output.

A draft model (a smaller model with the target's vocabulary) guesses the next tokens greedily,
one cheap pass each; the target checks all of them in one pass (``LlamaEngine.step``). With
greedy decoding the target keeps guesses while they equal its own choice, so the output is the
target's. With sampling, a guess ``d`` is kept with probability ``p(d)`` under the target's
distribution and otherwise a token is drawn from ``p`` without ``d``: the standard rule
(Leviathan et al. 2023, Chen et al. 2023) for a draft that proposes one token for sure, which
leaves every output token distributed exactly as the target alone would draw it.

The draft length is chosen each pass from the sequence's acceptance rate and the measured cost of
target passes by size and of draft steps (``choose_length``): on a CPU a longer verification pass
costs more, and a guess that does not pay is not made. The draft model also stops early where it
is unsure of its own next token (llama.cpp's ``--draft-p-min``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llama_cpp as L
import numpy as np

from ..errors import EngineError

if TYPE_CHECKING:
    from .llama import LlamaEngine

VOCAB_SIZE_SLACK = 128  # llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE: padding rows some conversions add
DRAFT_P_MIN = 0.75  # llama-server's default --draft-p-min


PRIOR_SLOPE = 0.25  # before a pass of n tokens was timed: each token past the first costs a quarter of a 1-token pass (optimistic, so it gets tried)
GUESS_LENGTHS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)  # the lengths tried: few sizes, so each one's cost is soon known


class PassCost:
    """Seconds of one target pass by the number of tokens in it, learnt from the passes themselves.

    On a CPU a pass is partly compute-bound, so verifying k guesses is not free: here a 2-token
    pass of Qwen2.5-Coder 1.5B costs 1.6 single passes and a 9-token one 7.4 (docs/benchmarks.md).
    The guess length is chosen against these measured costs, not assumed."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}

    def record(self, n: int, seconds: float) -> None:
        old = self.seconds.get(n)
        self.seconds[n] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def cost(self, n: int) -> float:
        """The pass's seconds: measured, or from the nearest smaller measured size plus the prior."""
        if n <= 0:
            return 0.0
        if n in self.seconds:
            return self.seconds[n]
        unit = self.seconds.get(1) or next((v / (1 + PRIOR_SLOPE * (m - 1)) for m, v in sorted(self.seconds.items())), 1.0)
        below = max((m for m in self.seconds if m < n), default=None)
        if below is None:
            return unit * (1 + PRIOR_SLOPE * (n - 1))
        return self.seconds[below] + unit * PRIOR_SLOPE * (n - below)


class RunLengths:
    """How far a sequence's recent guesses of one kind ran before their first wrong token, as the
    chance ``S(j)`` that a guess's j-th token is right (Kaplan-Meier over the last guesses: a guess
    kept whole says nothing past its end). Guesses are bursty: a copy of a docstring in progress
    runs for dozens of tokens, then stops at once, which a per-token rate cannot express.

    One pseudo-guess at every position holds the prior per-token rate, so positions never reached
    yet are priced by it; a sequence that stopped guessing forgets its oldest guess every few
    passes and so tries again."""

    WINDOW = 32
    FORGET_AFTER = 8  # passes without a guess before the oldest outcome is dropped

    def __init__(self, prior: float = 0.6) -> None:
        self.prior = prior
        self.outcomes: deque[tuple[int, int]] = deque(maxlen=self.WINDOW)  # (proposed, accepted)
        self.idle = 0

    def record(self, proposed: int, accepted: int) -> None:
        if proposed:
            self.outcomes.append((proposed, accepted))
            self.idle = 0
            return
        self.idle += 1
        if self.idle >= self.FORGET_AFTER and self.outcomes:
            self.outcomes.popleft()
            self.idle = 0

    def survival(self, most: int) -> list[float]:
        """S(1) … S(most): the chance that a guess's first j tokens are all right."""
        found, s = [], 1.0
        for j in range(1, most + 1):
            at_risk = sum(1 for p, a in self.outcomes if p >= j and a >= j - 1)
            wrong = sum(1 for p, a in self.outcomes if a == j - 1 and a < p)
            s *= 1.0 - (wrong + 1.0 - self.prior) / (at_risk + 1.0)
            found.append(s)
        return found


def choose_length(survival: Sequence[float], passes: PassCost, before: int, draft_token_s: float, most: int) -> int:
    """The guess length with the most expected tokens per second: k guesses give 1 + S(1) + … + S(k)
    tokens on average for the pass's extra cost plus k draft steps. 0 means guessing does not pay
    now (the pass alone is faster)."""
    best, best_rate = 0, 0.0
    base = passes.cost(before)
    cumulative = [1.0]
    for s in survival[:most]:
        cumulative.append(cumulative[-1] + s)
    for k in (k for k in GUESS_LENGTHS if k <= min(most, len(survival))):
        seconds = passes.cost(before + 1 + k) - base + k * draft_token_s
        if seconds > 0 and cumulative[k] / seconds > best_rate:
            best, best_rate = k, cumulative[k] / seconds
    return best


def vocabulary_mismatch(target: Any, draft: Any) -> str | None:
    """Why ``draft``'s vocabulary cannot guess for ``target`` (llama.cpp vocab handles), or None.

    The same checks as llama.cpp's ``common_speculative_are_compatible``: the same tokenizer type,
    the same BOS/EOS, sizes within a small slack, and the same text for every shared token.
    """
    if L.llama_vocab_type(target) != L.llama_vocab_type(draft):
        return "the tokenizer types differ"
    for name, get in (("BOS", L.llama_vocab_bos), ("EOS", L.llama_vocab_eos)):
        if get(target) != get(draft):
            return f"the {name} tokens differ ({get(target)} against {get(draft)})"
    n_target, n_draft = L.llama_vocab_n_tokens(target), L.llama_vocab_n_tokens(draft)
    if abs(n_target - n_draft) > VOCAB_SIZE_SLACK:
        return f"the vocabularies have {n_target} and {n_draft} tokens"
    for token in range(min(n_target, n_draft)):
        if L.llama_vocab_get_text(target, token) != L.llama_vocab_get_text(draft, token):
            text = L.llama_vocab_get_text(target, token).decode("utf-8", "replace")
            return f"token {token} is {text!r} for the target but not for the draft"
    return None


@dataclass
class _DraftSlot:
    slot: int
    kept: int = 0  # tokens of the sequence's history in this slot's cache


class DraftModel:
    """A second, smaller model in the same engine process, guessing greedily for the target's sequences.

    It has a cache slot per target sequence (its own numbering: the target's compaction does not
    move it) holding the sequence's history up to where the target last confirmed it.
    """

    def __init__(self, engine: LlamaEngine, target: LlamaEngine) -> None:
        self.engine = engine
        reason = vocabulary_mismatch(target.vocab, engine.vocab)
        if reason:
            raise EngineError(f"the draft model cannot guess for this target: {reason}; give a draft of the same family and tokenizer")
        if L.llama_model_n_params(engine.model) >= L.llama_model_n_params(target.model):
            raise EngineError(f"the draft model ({L.llama_model_n_params(engine.model) / 1e9:.2f} B parameters) is not smaller "
                              f"than the target ({L.llama_model_n_params(target.model) / 1e9:.2f} B): it would only slow it down")
        self.slots: dict[int, _DraftSlot] = {}  # by id() of the target's sequence
        self.token_s = 0.0  # seconds per guessed token (a draft step), learnt; 0 until measured

    def close(self) -> None:
        self.engine.close()

    def clear(self) -> None:
        """Forget every sequence (the target's cache was cleared)."""
        self.engine.clear()
        self.slots.clear()

    def release(self, key: int) -> None:
        slot = self.slots.pop(key, None)
        if slot is not None:
            self.engine.release_slot(slot.slot)

    def propose(self, wanted: Sequence[tuple[int, list[int], int]]) -> dict[int, list[int]]:
        """Guesses for sequences given as (key, history, most tokens wanted): the catch-up of each
        history in one batch, then one batched pass per further guessed token."""
        budget: dict[int, int] = {}
        entries: list[tuple[int, int, int, bool]] = []
        last_index: dict[int, int] = {}
        for key, history, most in wanted:
            slot = self._slot(key)
            n = most
            if n <= 0 or len(history) <= slot.kept:
                continue
            pending = history[slot.kept:]
            entries += [(t, slot.kept + i, slot.slot, i == len(pending) - 1) for i, t in enumerate(pending)]
            last_index[key] = len(entries) - 1
            slot.kept = len(history)
            budget[key] = n
        if not entries:
            return {}
        guesses: dict[int, list[int]] = {key: [] for key in budget}
        t0 = time.perf_counter()
        self._decode_catch_up(entries, last_index)
        indices = last_index
        while indices:
            nxt: list[tuple[int, int, int, bool]] = []
            new_indices: dict[int, int] = {}
            for key, index in indices.items():
                token, sure = self._choose(index)
                guesses[key].append(token)
                if not sure or self.engine.is_end(token) or len(guesses[key]) >= budget[key]:
                    continue
                slot = self.slots[key]
                new_indices[key] = len(nxt)
                nxt.append((token, slot.kept + len(guesses[key]) - 1, slot.slot, True))
            if not nxt:
                break
            self.engine._decode(nxt)
            indices = new_indices
        steps = max(len(g) for g in guesses.values())
        if steps:
            per_token = (time.perf_counter() - t0) / steps
            self.token_s = per_token if not self.token_s else 0.7 * self.token_s + 0.3 * per_token
        return guesses

    def _decode_catch_up(self, entries: list[tuple[int, int, int, bool]], last_index: dict[int, int]) -> None:
        """Decode every sequence's new history. Too long for one call (a first prompt), the tokens
        without logits go first, in as many calls as needed, and the last ones together after them."""
        if len(entries) <= self.engine.settings.n_batch:
            self.engine._decode(entries)
            return
        self.engine._decode([e for e in entries if not e[3]])
        keys = sorted(last_index, key=last_index.__getitem__)
        self.engine._decode([entries[last_index[key]] for key in keys])
        last_index.update({key: i for i, key in enumerate(keys)})

    def _choose(self, index: int) -> tuple[int, bool]:
        """The draft's own most likely token at a batch row, and whether it is sure enough of it."""
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.engine.ctx, index), shape=(self.engine.n_vocab,))
        token = int(logits.argmax())
        z = np.exp(logits - logits[token], dtype=np.float64)
        return token, bool(1.0 / z.sum() >= DRAFT_P_MIN)

    def confirmed(self, key: int, history_len: int, guessed: int, accepted: int) -> None:
        """The target kept ``accepted`` of ``guessed`` guesses; the cache keeps only what the history now holds."""
        slot = self.slots.get(key)
        if slot is None:
            return
        in_cache = slot.kept + max(0, guessed - 1)  # the last guess was chosen, never decoded
        keep = min(in_cache, history_len - 1)  # the target's own token after the guesses is not in it
        if keep < in_cache:
            L.llama_memory_seq_rm(L.llama_get_memory(self.engine.ctx), slot.slot, keep, -1)
        slot.kept = keep

    def _slot(self, key: int) -> _DraftSlot:
        if key not in self.slots:
            used = {s.slot for s in self.slots.values()}
            free = next(i for i in range(self.engine.settings.n_seq_max) if i not in used)
            self.engine.release_slot(free)
            self.slots[key] = _DraftSlot(free)
        return self.slots[key]


def target_probabilities(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The distribution llama.cpp's sampler chain (top-k, top-p, temperature, dist) draws from.

    Top-k keeps the k largest logits; top-p then keeps the fewest of those, most likely first,
    whose probability (at temperature 1) reaches ``top_p``; the rest get probability 0.
    """
    logits = np.asarray(logits, dtype=np.float64)
    order = np.argsort(-logits, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    kept = logits[order]
    if top_p < 1.0:
        z = np.exp(kept - kept[0])
        cum = np.cumsum(z / z.sum())
        order = order[: int(np.searchsorted(cum, top_p) + 1)]
        kept = kept[: len(order)]
    z = np.exp((kept - kept[0]) / temperature)
    p = np.zeros_like(logits)
    p[order] = z / z.sum()
    return p


def accept_or_replace(p: np.ndarray, guess: int, rng: np.random.Generator) -> tuple[int, bool]:
    """The standard acceptance rule for a guess proposed with certainty: keep it with probability
    ``p[guess]``; otherwise draw from ``p`` without it. Returns (token, whether the guess was kept)."""
    if rng.random() < p[guess]:
        return guess, True
    rest = p.copy()
    rest[guess] = 0.0
    total = rest.sum()
    if total <= 0:  # p put all its mass on the guess: the draw above cannot have missed it
        return guess, True
    return int(rng.choice(len(rest), p=rest / total)), False


def draw(p: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(len(p), p=p))
