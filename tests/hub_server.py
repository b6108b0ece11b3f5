"""A local HTTP server with the Hugging Face Hub's download URL layout, for real huggingface_hub calls.

    HEAD/GET /{owner}/{repo}/resolve/{revision}/{file}
        200 with X-Repo-Commit, ETag (the sha256, as the Hub sends for LFS files) and the bytes;
        206 with Content-Range for a GET with ``Range: bytes=A-B`` (416 when unsatisfiable), as the Hub's CDN;
        404 with X-Error-Code for unknown repos, revisions or files, as the Hub answers.

``HubRepo.bytes_sent`` counts the body bytes served, so a test can show what a client transferred.
"""

from __future__ import annotations

import hashlib
import re
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
    bytes_sent: int = 0
    range_requests: int = 0

    def add_commit(self, commit: str, files: dict[str, bytes], ref: str | None = "main") -> None:
        self.commits[commit] = files
        if ref:
            self.refs[ref] = commit


_ETAGS: dict[int, tuple[bytes, str]] = {}


def _etag(data: bytes) -> str:
    """The sha256 of a served file, hashed once (a range request must not re-hash 500 MB)."""
    known = _ETAGS.get(id(data))
    if known is None or known[0] is not data:
        known = _ETAGS[id(data)] = (data, hashlib.sha256(data).hexdigest())
    return known[1]


@contextmanager
def serve_hub(repos: dict[str, HubRepo]) -> Iterator[str]:
    """Serve ``repos`` on a loopback port; yield the endpoint URL."""

    class Handler(BaseHTTPRequestHandler):
        def _lookup(self) -> tuple[HubRepo, str, bytes] | None:
            parts = unquote(self.path.split("?")[0]).strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            repo = repos.get(f"{parts[0]}/{parts[1]}")
            if repo is None:
                return None
            commit = repo.refs.get(parts[3], parts[3])
            data = repo.commits.get(commit, {}).get("/".join(parts[4:]))
            return None if data is None else (repo, commit, data)

        def _answer(self, with_body: bool) -> None:
            found = self._lookup()
            if found is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            repo, commit, data = found
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")) if with_body else None
            body, status = data, 200
            if wanted:
                start = int(wanted.group(1))
                end = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, status = data[start:end + 1], 206
                repo.range_requests += 1
            self.send_response(status)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{_etag(data)}"')
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                repo.bytes_sent += len(body)
                self.wfile.write(body)

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
