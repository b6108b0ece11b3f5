"""Prompt-lookup speculation: guess the next tokens from where the last few tokens appeared before.

Code replies repeat their prompt (the signature, the docstring, the code being edited), so the
tokens that followed the latest earlier occurrence of the last n tokens are a cheap guess of the
next ones (llama.cpp's n-gram lookup, "prompt lookup decoding"). The target model verifies a
guess of k tokens in one batch; with greedy decoding the output is the target's own.

The guess length is the engine's choice (``speculative.choose_length``).
"""

from __future__ import annotations

from collections.abc import Sequence


class PromptLookup:
    """An index of the sequence's n-grams (n from ``ngram_min`` to ``ngram_max``) to where each last ended."""

    def __init__(self, tokens: Sequence[int], ngram_min: int = 2, ngram_max: int = 4) -> None:
        self.tokens: list[int] = []
        self.ngram_min, self.ngram_max = ngram_min, ngram_max
        self.seen: dict[tuple[int, ...], int] = {}  # n-gram → the position just after its latest earlier occurrence
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Add tokens to the history. The n-grams that end at the new last token are indexed only
        once another token follows, so a lookup never finds the suffix it is looking from."""
        for token in tokens:
            self._index_ending_at(len(self.tokens))
            self.tokens.append(token)

    def _index_ending_at(self, end: int) -> None:
        for n in range(self.ngram_min, self.ngram_max + 1):
            if end >= n:
                self.seen[tuple(self.tokens[end - n:end])] = end

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the longest n-gram, ending the history, seen before."""
        for n in range(self.ngram_max, self.ngram_min - 1, -1):
            if len(self.tokens) < n:
                continue
            at = self.seen.get(tuple(self.tokens[-n:]))
            if at is not None:
                return self.tokens[at: at + k]
        return []
