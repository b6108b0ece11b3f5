"""A local HTTP server with the Hugging Face Hub's download URL layout, for real huggingface_hub calls.

    HEAD/GET /{owner}/{repo}/resolve/{revision}/{file}
        200 with X-Repo-Commit, ETag (the sha256, as the Hub sends for LFS files) and the bytes;
        404 with X-Error-Code for unknown repos, revisions or files, as the Hub answers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class HubRepo:
    """One repo: revision name → commit, commit → {file name → bytes}."""

    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def add_commit(self, commit: str, files: dict[str, bytes], ref: str | None = "main") -> None:
        self.commits[commit] = files
        if ref:
            self.refs[ref] = commit


@contextmanager
def serve_hub(repos: dict[str, HubRepo]) -> Iterator[str]:
    """Serve ``repos`` on a loopback port; yield the endpoint URL."""

    class Handler(BaseHTTPRequestHandler):
        def _lookup(self) -> tuple[str, bytes] | None:
            parts = unquote(self.path.split("?")[0]).strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            repo = repos.get(f"{parts[0]}/{parts[1]}")
            if repo is None:
                return None
            commit = repo.refs.get(parts[3], parts[3])
            data = repo.commits.get(commit, {}).get("/".join(parts[4:]))
            return None if data is None else (commit, data)

        def _answer(self, with_body: bool) -> None:
            found = self._lookup()
            if found is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            commit, data = found
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(with_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(with_body=True)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
