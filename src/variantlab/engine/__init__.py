"""The one engine: every command loads and runs models through it, in a child process."""

from ..errors import EngineCrashed, EngineError, RequestRefused
from .blocks import random_rows
from .child import EngineProcess, system_info
from .dispatcher import ServingEngine
from .llama import Generation, Sampling
from .messages import Piece
from .openai_backend import filler_prompt, is_openai_spec, resolve_endpoint, time_completion
from .quantizer import quantize_file
from .settings import EngineSettings, default_threads

__all__ = ["EngineCrashed", "EngineError", "EngineProcess", "EngineSettings", "Generation", "Piece", "RequestRefused",
           "Sampling", "ServingEngine", "default_threads", "filler_prompt", "is_openai_spec", "quantize_file", "random_rows",
           "resolve_endpoint", "system_info", "time_completion"]
