"""The one scheduler: continuous batching over a LlamaEngine's sequence slots.

``eval`` (``generate_many`` here) and ``serve`` (the child's serving loop) both keep
up to ``slots`` sequences decoding together, one token each per ``llama_decode`` call, and
give a finished sequence's slot to the next prompt at once. This is the one place where a
sequence is admitted into a slot, stepped, finished (its sampler and KV cells freed),
cancelled and compacted; callers key their sequences by their own ids (a prompt's index, a
request id), which stay valid when compaction moves a sequence to another slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from ..errors import EngineError
from .llama import Generation, LlamaEngine, Sampling, _Sequence

Key = TypeVar("Key", bound=Hashable)


class Scheduler(Generic[Key]):
    """Sequences keyed by the caller's ``Key``, decoding together in ``slots`` slots.

    With a ``prefix`` (the prompts' common first tokens), it is decoded once into a sequence of
    its own after the slots and every admitted prompt starts from a copy of its KV cells.
    """

    def __init__(self, engine: LlamaEngine, slots: int, prefix: Sequence[int] = ()) -> None:
        self.engine = engine
        self.slots = slots
        self.prefix = list(prefix)
        self.prefix_seq = slots
        self.live: dict[Key, _Sequence] = {}
        engine.clear()
        if self.prefix:
            engine.share_prefix(self.prefix, self.prefix_seq)

    def has_room(self) -> bool:
        return len(self.live) < self.slots

    def admit(self, key: Key, prompt: list[int], sampling: Sampling, stop: list[str], max_tokens: int) -> _Sequence:
        """Start ``prompt`` in a free slot (its first token sampled); a failure leaves the slot clean."""
        used = {s.seq_id for s in self.live.values()}
        slot = next(i for i in range(self.slots) if i not in used)
        try:
            seq = self.engine.start_sequence(slot, prompt, sampling, stop, max_tokens, self.prefix, self.prefix_seq)
        except BaseException:
            self.engine.release_slot(slot)
            raise
        self.live[key] = seq
        return seq

    def step(self) -> list[tuple[Key, _Sequence]]:
        """One token for every running sequence; the sequences that are done now, with their
        whole text, taken out of the scheduler (sampler and KV cells freed)."""
        self.engine.step([s for s in self.live.values() if not s.done])
        finished = [(key, s) for key, s in self.live.items() if s.done]
        for key, s in finished:
            s.finish_text()
            self.engine.release(s)
            del self.live[key]
        return finished

    def compact(self) -> None:
        """Close the gaps finished sequences left, so that the next step is one pass over the weights."""
        self.engine.compact(list(self.live.values()))

    def cancel(self, key: Key) -> None:
        """Drop a sequence before it is done (a client that went away)."""
        seq = self.live.pop(key, None)
        if seq is not None:
            self.engine.release(seq)

    def close(self) -> None:
        """Free every live sequence (the end of a run, or an error part-way)."""
        for key in list(self.live):
            self.cancel(key)


def generate_many(engine: LlamaEngine, prompts: list[list[int]], max_tokens: int, stop: list[str] | None = None,
                  sampling: Sampling = Sampling(),
                  on_done: Callable[[int, Generation], None] | None = None) -> list[Generation]:
    """Continuous batching over all prompts (eval): up to ``n_seq_max - 1`` sequences decode
    together, and a finished sequence's slot takes the next prompt at once. The prompts' common
    token prefix is decoded once and shared through the KV cache. Sampled decoding seeds each
    prompt's sampler with ``seed + index``, so repeated prompts give independent samples; the
    schedule does not depend on timing, so greedy output is the same on every run.
    """
    settings = engine.settings
    slots = settings.n_seq_max - 1
    if slots < 1:
        raise EngineError("generate_many needs a context made for at least 2 sequences")
    if not prompts:
        return []
    if any(not p for p in prompts):
        raise EngineError("an empty prompt cannot be generated from")
    need = max(len(p) for p in prompts) + max_tokens
    per_seq = settings.n_ctx if settings.kv_unified else settings.n_ctx // settings.n_seq_max
    if need * (slots if settings.kv_unified else 1) > per_seq:
        raise EngineError(f"sequences of up to {need} tokens do not fit a context of {settings.n_ctx} "
                          f"shared by {settings.n_seq_max} sequences")
    scheduler: Scheduler[int] = Scheduler(engine, slots, shared_prefix(prompts))
    results: list[Generation | None] = [None] * len(prompts)
    waiting = list(range(len(prompts)))[::-1]
    try:
        while waiting or scheduler.live:
            while waiting and scheduler.has_room():
                index = waiting.pop()
                scheduler.admit(index, prompts[index], dataclasses.replace(sampling, seed=sampling.seed + index),
                                list(stop or []), max_tokens)
            for index, seq in scheduler.step():
                results[index] = seq.result
                if on_done:
                    on_done(index, seq.result)
            if not waiting:
                scheduler.compact()
    finally:
        scheduler.close()
    return [r for r in results if r is not None]


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix common to all prompts, leaving each at least one token of its own."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return first[:max(n, 0)]
