"""variantlab: choose, test, pin and run the right local code LLM variant for your machine and task.

The public library API is what this module exports; everything else is private detail.
The loop is explain → fit → bench/eval → pick → lock → serve, over one store
(``variantlab.store``), one GGUF reader (``variantlab.modelfile``) and one set of
knowledge tables (``variantlab.knowledge``).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    IntegrityError,
    MissingFileError,
    ModelFileError,
    SourceError,
    StoreError,
    UnknownModelError,
    UsageError,
    VariantlabError,
)

# The rest of the API loads on first use: engine and quantizer children import this package,
# and each of them should not pay for the whole library (about 0.15 s) before doing its job.
_LAZY = {
    "Disagreement": "explain", "VariantName": "explain", "compare_with_file": "explain", "explain_name": "explain",
    "Estimate": "fit", "FitRequest": "fit", "fit": "fit",
    "explain_variant": "inspection", "inspect_model": "inspection",
    "ModelFile": "modelfile", "read_model_file": "modelfile",
    "pick": "pick",
    "FetchResult": "store", "Manifest": "store", "ResolvedModel": "store", "Store": "store",
    "VerifyReport": "store", "default_model_name": "store", "fetch": "store",
}

if TYPE_CHECKING:
    from .explain import Disagreement, VariantName, compare_with_file, explain_name
    from .fit import Estimate, FitRequest, fit
    from .hardware import profile as hardware_profile
    from .inspection import explain_variant, inspect_model
    from .modelfile import ModelFile, read_model_file
    from .pick import pick
    from .store import FetchResult, Manifest, ResolvedModel, Store, VerifyReport, default_model_name, fetch


def __getattr__(name: str) -> Any:
    if name == "hardware_profile":
        return import_module(".hardware", __name__).profile
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Disagreement", "Estimate", "FetchResult", "FitRequest", "IntegrityError", "Manifest", "MissingFileError", "ModelFile",
    "ModelFileError",
    "ResolvedModel", "SourceError", "Store", "StoreError", "UnknownModelError", "UsageError",
    "VariantName", "VariantlabError", "VerifyReport", "__version__", "compare_with_file",
    "default_model_name", "explain_name", "explain_variant", "fetch", "fit", "hardware_profile", "inspect_model",
    "pick", "read_model_file",
]
