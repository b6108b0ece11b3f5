"""Where variantlab keeps things, resolved at call time from the environment.

Nothing here is read at import time, so a test or a caller can change
``VARIANTLAB_HOME`` between calls and be obeyed.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct:q4_k_m"


def home() -> Path:
    """The user data directory: ``$VARIANTLAB_HOME``, else ``$XDG_DATA_HOME/variantlab``."""
    explicit = os.environ.get("VARIANTLAB_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "variantlab"


def hf_endpoint() -> str | None:
    """The Hugging Face endpoint to use, or None for huggingface_hub's default."""
    return os.environ.get("HF_ENDPOINT") or None


def debug() -> bool:
    """Whether the CLI should show tracebacks instead of one-line errors."""
    return os.environ.get("VARIANTLAB_DEBUG", "") not in ("", "0", "false", "no")
