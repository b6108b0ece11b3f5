"""The one store: content-addressed blobs, manifests, and the sources that fill them."""

from ..files import ProgressFn, sha256_file
from ..knowledge.models import builtin_models, default_model_name
from .sources import FetchResult, fetch
from .store import Manifest, ResolvedModel, Store, VerifyReport, verified_sha256

__all__ = [
    "FetchResult", "Manifest", "ProgressFn", "ResolvedModel", "Store", "VerifyReport",
    "builtin_models", "default_model_name", "fetch", "sha256_file", "verified_sha256",
]
