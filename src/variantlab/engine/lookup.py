"""Prompt-lookup speculation: guess the next tokens from where the last few tokens appeared before.

Code replies repeat their prompt (the signature, the docstring, the code being edited), so the
tokens that followed the latest earlier occurrence of the last n tokens are a cheap guess of the
next ones (llama.cpp's n-gram lookup, "prompt lookup decoding"). The target model verifies a
guess of k tokens in one batch; with greedy decoding the output is the target's own.

The guess length is the engine's choice (``speculative.choose_length``).
"""

from __future__ import annotations

from collections.abc import Sequence

# Only long matches: 8 tokens seen before are nearly always a copy in progress (kept 80-90 % of
# the time); matches of 2-4 tokens were right too seldom to pay for the longer pass on a CPU
# (measured: docs/benchmarks.md). 12 is llama.cpp's ngram-simple lookup size.
NGRAM_SIZES = (8, 12)


class PromptLookup:
    """An index of the sequence's n-grams (of ``NGRAM_SIZES``) to where each last ended."""

    def __init__(self, tokens: Sequence[int], sizes: Sequence[int] = NGRAM_SIZES) -> None:
        self.tokens: list[int] = []
        self.sizes = tuple(sorted(sizes, reverse=True))
        self.seen: dict[tuple[int, ...], int] = {}  # n-gram → the position just after its latest earlier occurrence
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Add tokens to the history. The n-grams that end at the new last token are indexed only
        once another token follows, so a lookup never finds the suffix it is looking from."""
        for token in tokens:
            self._index_ending_at(len(self.tokens))
            self.tokens.append(token)

    def _index_ending_at(self, end: int) -> None:
        for n in self.sizes:
            if end >= n:
                self.seen[tuple(self.tokens[end - n:end])] = end

    def match(self) -> tuple[int, int] | None:
        """Where the longest n-gram ending the history was last seen: (the position after it, n)."""
        for n in self.sizes:
            if len(self.tokens) >= n:
                at = self.seen.get(tuple(self.tokens[-n:]))
                if at is not None:
                    return at, n
        return None

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the longest n-gram, ending the history, seen before."""
        found = self.match()
        return self.tokens[found[0]: found[0] + k] if found else []
