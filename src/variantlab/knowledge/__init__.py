"""What variantlab knows without looking at a file: quant tables, names, model sources.

The facts live in TOML files under ``data/``; the modules here only load and index them.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any


@functools.cache
def load_data(file_name: str) -> dict[str, Any]:
    """Parse one TOML data file shipped with the package (read once per process)."""
    text = resources.files(__package__).joinpath("data", file_name).read_text(encoding="utf-8")
    return tomllib.loads(text)
