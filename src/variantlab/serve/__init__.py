"""`serve`: the pinned model behind an OpenAI-compatible API, with llama-server's ``/infill``.

``schema`` holds what a request may say and the checks on it, ``state`` the served model, its
settings and metrics, ``responses`` the shapes of the answers and the streaming, ``app`` the
routes, the guards and the error handlers.
"""

from .app import create_app
from .state import Metrics, ServeConfig, Served, open_model, start

__all__ = ["Metrics", "ServeConfig", "Served", "create_app", "open_model", "start"]
