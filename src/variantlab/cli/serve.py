"""`variantlab serve`: the pinned model as an OpenAI-compatible server, with llama-server's /infill."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from ..serve import ServeConfig, create_app, start


def serve(
    model: Annotated[Optional[str], typer.Argument(help="A role of variantlab.lock (its pinned, hash-checked file), a store name or a .gguf path; default: the lock's only role.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; the default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    parallel: Annotated[int, typer.Option(help="Requests decoded together in one batch; more wait in a queue.")] = 4,
    ctx: Annotated[int, typer.Option(help="Context tokens per request (prompt + output).")] = 4096,
    max_tokens_cap: Annotated[int, typer.Option(help="Most tokens one request may generate; the default when a request gives none.")] = 512,
    api_key: Annotated[Optional[str], typer.Option(envvar="VARIANTLAB_API_KEY", help="Require Authorization: Bearer KEY on every route but /health.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: one per physical core).")] = None,
    lookup: Annotated[bool, typer.Option("--lookup", help="Speculative decoding with guesses copied from the prompt and reply (n-gram lookup); greedy replies unchanged.")] = False,
    draft: Annotated[Optional[str], typer.Option(help="Speculative decoding with this smaller model of the same tokenizer (default: the draft pinned with the role, if any).")] = None,
    no_draft: Annotated[bool, typer.Option("--no-draft", help="Do not use the draft model pinned with the role.")] = False,
) -> None:
    """Serve MODEL: /v1/models, /v1/completions, /v1/chat/completions (streaming), /infill, /health, /metrics."""
    import uvicorn

    config = ServeConfig(host=host, port=port, parallel=parallel, ctx=ctx, max_tokens_cap=max_tokens_cap,
                         api_key=api_key or None, threads=threads, lookup=lookup, draft=draft, no_draft=no_draft)
    served = start(model, config)
    served.engine.on_death = _exit_on_engine_death
    try:
        m = served.resolved.manifest
        print(f"variantlab serve: {served.model_id} = {served.resolved.path}"
              + (f" (sha256 {m.sha256} verified)" if m else "")
              + (f", role {served.role!r} of the lock" if served.role else "")
              + f"; {parallel} parallel, {ctx} context tokens each, max_tokens cap {max_tokens_cap}"
              + (f"; speculative decoding with draft {served.draft.label}" if served.draft else "")
              + ("; speculative decoding by prompt lookup" if lookup else "")
              + f", API key {'required' if api_key else 'off'}; http://{host}:{port}/v1", file=sys.stderr, flush=True)
        # SIGTERM ends the server within a few seconds in every state: streams still open are cut after 3 s
        uvicorn.run(create_app(served), host=host, port=port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=3)
    finally:
        if served.renderer is not None:
            served.renderer.close()
        served.engine.close()


def _exit_on_engine_death(reason: str) -> None:
    """The engine stopped serving: end the server with exit code 3 rather than answer 503 forever."""
    print(f"variantlab serve: {reason}; stopping (exit code 3)", file=sys.stderr, flush=True)
    os._exit(3)
