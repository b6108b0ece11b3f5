"""Running the engine in a child process, so a crash in llama.cpp cannot take variantlab down.

``EngineProcess`` spawns a fresh interpreter that loads one model and answers calls over a
pipe. If the child dies (a segfault in llama.cpp, the OOM killer), the caller gets
``EngineCrashed`` with the signal or exit code, and can go on with other work.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..errors import EngineCrashed, EngineError, VariantlabError
from .llama import Generation, LlamaEngine, Sampling
from .messages import Call, Cancel, Close, Failed, Progress, Ready, Reply, StopServing, Submit
from .rss import peak_rss_bytes
from .scheduler import generate_many
from .serving import serve_loop
from .settings import EngineSettings

LOAD_TIMEOUT_S = 600


def system_info() -> str:
    """llama.cpp's build line (CPU features the build uses): the same in this process and in the child."""
    import llama_cpp

    return str(llama_cpp.llama_print_system_info().decode())


class _Service:
    """What the child can be asked to do. Each method returns plain data (picklable)."""

    def __init__(self, engine: LlamaEngine, model_path: str, conn: Any) -> None:
        self.engine = engine
        self.model_path = model_path
        self.conn = conn
        self.notify = lambda payload: conn.send(Progress(payload))  # a progress message before the reply

    def info(self) -> dict[str, Any]:
        e = self.engine
        return {"load_s": e.load_s, "n_ctx_train": e.n_ctx_train, "n_vocab": e.n_vocab,
                "settings": e.settings.to_dict(), "peak_rss_bytes": max(peak_rss_bytes(), e.peak_floor_bytes), "system_info": system_info(),
                "buffers": dict(e.buffers), "depth_fill": e.depth_fill}

    def special_tokens(self) -> dict[str, str]:
        """BOS and EOS as text, which chat templates write into the prompt."""
        e = self.engine
        import llama_cpp

        return {"bos": e.token_text(llama_cpp.llama_vocab_bos(e.vocab)), "eos": e.token_text(llama_cpp.llama_vocab_eos(e.vocab))}

    def fim_prompt(self, prefix: str, suffix: str, extra: list[list[str]] | None = None, repo: str = "myproject",
                   filename: str = "filename", budget: list[int] | None = None) -> list[int]:
        return self.engine.fim_prompt(prefix, suffix, [(p, t) for p, t in extra or []], repo, filename,
                                      (budget[0], budget[1], budget[2]) if budget else None)

    def repo_level_fim(self) -> bool:
        return self.engine.repo_level_fim()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.engine.tokenize(text, add_special)

    def generate(self, prompt: list[int], max_tokens: int, stop: list[str] | None = None,
                 sampling: dict[str, Any] | None = None) -> dict[str, Any]:
        return asdict(self.engine.generate(prompt, max_tokens, stop, Sampling(**(sampling or {}))))

    def generate_batch(self, prompts: list[list[int]], max_tokens: int, stop: list[str] | None = None,
                       sampling: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        gens: list[Generation] = self.engine.generate_batch(prompts, max_tokens, stop, Sampling(**(sampling or {})))
        return [asdict(g) for g in gens]

    def generate_many(self, prompts: list[list[int]], max_tokens: int, stop: list[str] | None = None,
                      sampling: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Continuous batching over all prompts; each finished one is reported as progress."""
        gens = generate_many(self.engine, prompts, max_tokens, stop, Sampling(**(sampling or {})),
                             on_done=lambda i, g: self.notify({"done": i, "generation": asdict(g)}))
        return [asdict(g) for g in gens]

    def score_chunk(self, tokens: list[int], first: int, top_k: int = 0, ref_ids: Any = None) -> dict[str, Any]:
        return self.engine.score_chunk(tokens, first, top_k, ref_ids)

    def serve_loop(self, slots: int) -> None:
        """Serve requests the parent streams in (see serving.py) until it sends StopServing."""
        serve_loop(self.engine, self.conn.poll, self.conn.recv, self.conn.send, slots)

    def bos(self) -> int | None:
        return self.engine.bos()

    def reload_times(self, times: int) -> list[float]:
        """Load the same model ``times`` more times (freeing each), for a spread of load times."""
        found = []
        for _ in range(times):
            other = LlamaEngine(self.model_path, self.engine.settings)
            found.append(other.load_s)
            other.close()
        return found

    def time_prompt(self, n_prompt: int, seed: int, depth: int = 0, synthetic_depth: bool = False) -> tuple[float, float]:
        return self.engine.time_prompt(n_prompt, seed, depth, synthetic_depth)

    def time_generation(self, n_gen: int, depth: int = 0, synthetic_depth: bool = False) -> float:
        return self.engine.time_generation(n_gen, depth, synthetic_depth)

    def crash(self) -> None:
        """Die the way a llama.cpp bug would (for tests of crash handling)."""
        import ctypes

        ctypes.string_at(0)


def _child_main(conn: Any, model_path: str, settings: dict[str, Any]) -> None:
    try:
        engine = LlamaEngine(model_path, EngineSettings(**settings))
    except VariantlabError as exc:
        conn.send(Failed(type(exc).__name__, exc.message))
        return
    service = _Service(engine, model_path, conn)
    conn.send(Ready(engine.load_s))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            break
        if not isinstance(request, Call):
            break  # Close
        try:
            conn.send(Reply(getattr(service, request.method)(**request.kwargs)))
        except VariantlabError as exc:
            conn.send(Failed(type(exc).__name__, exc.message))
        except Exception as exc:  # report, keep serving
            conn.send(Failed(type(exc).__name__, "".join(traceback.format_exception_only(exc)).strip()))
    engine.close()


class EngineProcess:
    """A model loaded in a child process. Use as a context manager; call methods with ``call``."""

    def __init__(self, model_path: str, settings: EngineSettings) -> None:
        self.model_path = model_path
        self.settings = settings.resolved()
        self._proc: Any = None
        self._conn: Any = None
        self.load_s: float | None = None

    def __enter__(self) -> EngineProcess:
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child_conn, self.model_path, self.settings.to_dict()), daemon=True)
        self._proc.start()
        child_conn.close()
        reply = self._receive(LOAD_TIMEOUT_S, during="loading")
        if isinstance(reply, Failed):
            self.close()
            raise EngineError(reply.message)
        self.load_s = reply.load_s
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, timeout: float | None = None, on_progress: Callable[[Any], None] | None = None,
             **kwargs: Any) -> Any:
        """Run ``method`` in the child and return its result; EngineCrashed if the child dies.

        Progress messages the child sends on the way go to ``on_progress``; ``timeout`` applies
        to the wait for each message.
        """
        try:
            self._conn.send(Call(method, kwargs))
        except (BrokenPipeError, OSError):
            raise self._crashed(f"calling {method}") from None
        reply = self._receive(timeout, during=method)
        while isinstance(reply, Progress):
            if on_progress:
                on_progress(reply.payload)
            reply = self._receive(timeout, during=method)
        if isinstance(reply, Failed):
            raise EngineError(reply.message)
        return reply.value

    def post(self, method: str, **kwargs: Any) -> None:
        """Start ``method`` in the child without waiting for its reply (a long-running loop)."""
        self.post_raw(Call(method, kwargs))

    def post_raw(self, message: Call | Submit | Cancel | StopServing) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError):
            raise self._crashed("sending a request") from None

    def receive_raw(self) -> Any:
        """The child's next message, waiting as long as it takes; EngineCrashed if it died."""
        return self._receive(None, during="serving")

    def _receive(self, timeout: float | None, during: str) -> Any:
        if not self._conn.poll(timeout):
            self.close()
            raise EngineCrashed(f"the engine process did not answer within {timeout:.0f} s while {during}; it was stopped")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._crashed(during) from None

    def _crashed(self, during: str) -> EngineCrashed:
        self._proc.join(timeout=5)
        code = self._proc.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self.close()
        return EngineCrashed(f"the engine process died ({how}) while {during} {self.model_path}")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(Close())
            except (BrokenPipeError, OSError):
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            self._proc = None
