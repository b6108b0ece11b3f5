"""variantlab: choose, test, pin and run the right local code LLM variant for your machine and task.

The public library API is what this module exports; everything else is private detail.
The loop is explain → fit → bench/eval → pick → lock → serve, over one store
(``variantlab.store``), one GGUF reader (``variantlab.modelfile``) and one set of
knowledge tables (``variantlab.knowledge``).
"""

from .errors import (
    IntegrityError,
    ModelFileError,
    SourceError,
    StoreError,
    UnknownModelError,
    UsageError,
    VariantlabError,
)
from .explain import Disagreement, VariantName, compare_with_file, explain_name
from .fit import Estimate, FitRequest, fit
from .hardware import profile as hardware_profile
from .inspection import explain_variant, inspect_model
from .modelfile import ModelFile, read_model_file
from .pick import pick
from .store import FetchResult, Manifest, ResolvedModel, Store, VerifyReport, default_model_name, fetch

__version__ = "0.1.0"

__all__ = [
    "Disagreement", "Estimate", "FetchResult", "FitRequest", "IntegrityError", "Manifest", "ModelFile", "ModelFileError",
    "ResolvedModel", "SourceError", "Store", "StoreError", "UnknownModelError", "UsageError",
    "VariantName", "VariantlabError", "VerifyReport", "__version__", "compare_with_file",
    "default_model_name", "explain_name", "explain_variant", "fetch", "fit", "hardware_profile", "inspect_model",
    "pick", "read_model_file",
]
