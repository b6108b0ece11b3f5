"""Text helpers at the bottom layer: anything read from a model file passes through here before printing."""

from __future__ import annotations

import unicodedata


def clean_text(text: str) -> str:
    """Drop control and format characters so a model file cannot drive the terminal."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\n\t")
