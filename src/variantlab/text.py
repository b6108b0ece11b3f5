"""Text helpers at the bottom layer: anything read from a model file passes through here before printing,
and figures that several tables print are formatted here once."""

from __future__ import annotations

import unicodedata


def clean_text(text: str) -> str:
    """Drop control and format characters so a model file cannot drive the terminal."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\n\t")


def rate(value: float | None) -> str:
    """Tokens/s to about three significant figures, so a 34B's 0.975 and a 0.5B's 35.3 both keep what
    tells two rungs apart (a fixed one decimal prints both 34B rungs as 1.0)."""
    if value is None:
        return "–"
    return format(value, ".0f" if value >= 100 else ".1f" if value >= 10 else ".2f" if value >= 1 else ".3f")
