"""The one engine: every command loads and runs models through it, in a child process."""

from ..errors import EngineCrashed, EngineError, RequestRefused
from .blocks import random_rows
from .child import EngineProcess, system_info
from .dispatcher import ServingEngine
from .llama import Generation, Sampling
from .messages import Piece
from .openai_backend import (
                             Endpoint,
                             RemoteText,
                             filler_prompt,
                             is_llama_server,
                             is_openai_spec,
                             remote_complete,
                             remote_infill,
                             remote_tokenize,
                             resolve_endpoint,
                             server_identity,
                             time_completion,
)
from .quantizer import quantize_file
from .settings import EngineSettings, default_threads

__all__ = ["Endpoint", "RemoteText", "is_llama_server", "remote_complete", "remote_infill", "remote_tokenize", "server_identity",
           "EngineCrashed", "EngineError", "EngineProcess", "EngineSettings", "Generation", "Piece", "RequestRefused",
           "Sampling", "ServingEngine", "default_threads", "filler_prompt", "is_openai_spec", "quantize_file", "random_rows",
           "resolve_endpoint", "system_info", "time_completion"]
