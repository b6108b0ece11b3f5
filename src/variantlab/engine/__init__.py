"""The one engine: every command loads and runs models through it, in a child process."""

from .child import EngineCrashed, EngineProcess, system_info
from .llama import EngineError, Generation, Sampling
from .settings import EngineSettings, default_threads

__all__ = ["EngineCrashed", "EngineError", "EngineProcess", "EngineSettings", "Generation", "Sampling", "default_threads",
           "system_info"]
