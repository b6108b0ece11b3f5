"""The public API is a deliberate list; changing it should be a visible decision."""

from __future__ import annotations

import subprocess
import sys

import variantlab


def test_exported_names_are_pinned() -> None:
    assert sorted(variantlab.__all__) == sorted([
        "Disagreement", "Estimate", "FetchResult", "FitRequest", "IntegrityError", "Manifest", "MissingFileError", "ModelFile", "ModelFileError",
        "ResolvedModel", "SourceError", "Store", "StoreError", "UnknownModelError", "UsageError",
        "VariantName", "VariantlabError", "VerifyReport", "__version__", "compare_with_file",
        "default_model_name", "explain_name", "explain_variant", "fetch", "fit", "hardware_profile", "inspect_model",
        "pick", "read_model_file",
    ])
    for name in variantlab.__all__:
        assert hasattr(variantlab, name), name


def test_errors_inherit_the_matching_builtins() -> None:
    assert issubclass(variantlab.UsageError, ValueError)
    assert issubclass(variantlab.UnknownModelError, LookupError)
    assert issubclass(variantlab.SourceError, ConnectionError)
    assert issubclass(variantlab.StoreError, OSError)
    assert issubclass(variantlab.MissingFileError, FileNotFoundError)


def test_importing_the_library_loads_no_engine() -> None:
    code = "import sys, variantlab; print('llama_cpp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
