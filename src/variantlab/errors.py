"""Every error variantlab raises on purpose, in one small hierarchy.

    VariantlabError
    ├── UsageError            (ValueError)        a bad argument: value, range, unknown choice
    │   └── TemplateRefused                       a chat template that fails or overruns its budget
    ├── UnknownModelError     (LookupError)       a name the store or the catalog does not know
    ├── MissingFileError      (FileNotFoundError) a path that names no file
    ├── ModelFileError        (ValueError)        a file that is not a readable GGUF model
    ├── IntegrityError        (ValueError)        bytes whose sha256 is not the one expected
    ├── SourceError           (ConnectionError)   a download or package fetch that failed
    ├── StoreError            (OSError)           the store on disk is unusable
    ├── LockError             (ValueError)        a lockfile that is unreadable, or a pin that cannot be met
    ├── EngineError           (RuntimeError)      llama.cpp refused a model or failed to decode
    │   └── RequestRefused                        one request the engine cannot run (with a code)
    ├── EngineCrashed         (RuntimeError)      the engine's child process died
    ├── SandboxError          (RuntimeError)      the sandbox cannot be trusted here (canary gate failed)
    └── ClusterError          (ConnectionError)   a Ray cluster that cannot be joined, lacks slots, or lost a unit

Each inherits the matching builtin so callers that only know Python's own
exceptions still catch them. The message always names the bad value; ``hint``
says what to do next. The CLI turns any of them into one line and exit code 2.
"""

from __future__ import annotations


class VariantlabError(Exception):
    """Base of all deliberate variantlab errors: a message plus a way out."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(VariantlabError, ValueError):
    """An argument the user gave is out of range or not one of the choices."""


class SyntheticModelError(UsageError):
    """A twin (random weights) asked to do what only real weights can: be evaluated, served or pinned."""


class UnknownModelError(VariantlabError, LookupError):
    """A model name that neither the store nor the built-in sources know."""

    def __init__(self, name: str, suggestions: list[str], *, why: str | None = None, hint: str | None = None) -> None:
        hint = (
            "did you mean " + ", ".join(repr(s) for s in suggestions) + "?"
            if suggestions
            else hint or "run `variantlab models list --available` to see the names"
        )
        super().__init__(f"unknown model {name!r}" + (f" ({why})" if why else ""), hint=hint)
        self.name = name
        self.suggestions = suggestions


class ModelFileError(VariantlabError, ValueError):
    """A file that is missing, not GGUF, truncated or self-contradictory."""

    def __init__(self, path: object, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = path
        self.problem = problem


class IntegrityError(VariantlabError, ValueError):
    """Bytes on disk or on the wire that do not hash to the expected sha256."""

    def __init__(self, what: str, expected: str, found: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"{what}: sha256 mismatch, expected {expected}, found {found}",
            hint=hint or "nothing was registered; fetch it again from a trusted source",
        )
        self.expected = expected
        self.found = found


class SourceError(VariantlabError, ConnectionError):
    """A model source (PyPI parts, Hugging Face) could not deliver the file."""


class StoreError(VariantlabError, OSError):
    """The store directory is unusable (permissions, corrupt manifest)."""


class LockError(VariantlabError, ValueError):
    """A lockfile with a syntax error, an unknown role or revision, or a pin whose blob is gone."""


class TemplateRefused(UsageError):
    """The chat template failed, ran over its time or memory budget, or wrote too much."""


class MissingFileError(VariantlabError, FileNotFoundError):
    """A path given as a model (or another input file) that names no file."""

    def __init__(self, path: object, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: no such file", hint=hint)
        self.path = path
        self.problem = "no such file"


class EngineError(VariantlabError, RuntimeError):
    """llama.cpp refused a model or failed to decode; the message carries llama.cpp's reason."""


class RequestRefused(EngineError):
    """A request the engine cannot run (an empty prompt, or one longer than a slot's context)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class EngineCrashed(VariantlabError, RuntimeError):
    """The engine's child process died; its signal or exit code is in the message."""


class SandboxError(VariantlabError, RuntimeError):
    """The sandbox cannot be trusted on this machine (the canary gate failed), so nothing is scored."""


class ClusterError(VariantlabError, ConnectionError):
    """A Ray cluster that cannot be joined, has no node able to take the work, or could not finish a unit."""
