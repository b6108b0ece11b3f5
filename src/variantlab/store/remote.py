"""A remote GGUF's header, read by HTTP range requests through huggingface_hub, never its weights.

``hf:OWNER/REPO/FILE.gguf[@REV]`` → the commit the revision points to, the file's size and
ETag (HEAD, ``get_hf_file_metadata``), then the header's bytes in growing ranges until the
tensor table ends (``modelfile.header_length`` says where). The bytes transferred are
counted, so a caller can show that the weights stayed where they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..errors import SourceError, UsageError, VariantlabError
from ..modelfile import ModelFile, header_length, read_header

_HF_SPEC = re.compile(r"^hf:(?P<repo>[^/@\s]+/[^/@\s]+)/(?P<file>[^@\s]+?)(?:@(?P<rev>[^@\s]+))?$")
_FIRST_RANGE = 64 * 1024
_LARGEST_RANGE = 512 * 1024


@dataclass(frozen=True)
class RemoteHeader:
    """The header bytes of a remote file, where they came from, and what reading them cost."""

    spec: str
    repo: str
    file: str
    commit: str | None
    etag: str | None
    file_size: int
    header: bytes
    bytes_transferred: int
    requests: int
    model: ModelFile


def parse_hf_spec(spec: str) -> tuple[str, str, str | None]:
    """``hf:OWNER/REPO/FILE[@REV]`` → (repo, file, revision)."""
    m = _HF_SPEC.match(spec)
    if not m:
        raise UsageError(f"bad Hugging Face reference {spec!r}", hint="write hf:OWNER/REPO/FILE.gguf[@REVISION]")
    return m["repo"], m["file"], m["rev"]


class _RangeReader:
    """Sequential reads of a remote file, fetched in ranges that double up to a cap."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self.buffer = bytearray()
        self.pos = 0
        self.requests = 0
        self.next_range = _FIRST_RANGE

    def read(self, n: int) -> bytes:
        while self.pos + n > len(self.buffer):
            self._fetch(max(self.next_range, self.pos + n - len(self.buffer)))
            self.next_range = min(2 * self.next_range, _LARGEST_RANGE)
        data = bytes(self.buffer[self.pos:self.pos + n])
        self.pos += n
        return data

    def _fetch(self, n: int) -> None:
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

        start = len(self.buffer)
        end = min(self.size, start + n) - 1
        response = http_backoff("GET", self.url, headers={**build_hf_headers(), "Range": f"bytes={start}-{end}"})
        hf_raise_for_status(response)
        if response.status_code != 206:
            raise SourceError(f"{self.url} does not answer range requests (status {response.status_code})",
                              hint="twin needs a server that serves byte ranges, as the Hugging Face Hub does")
        chunk = response.content
        if len(chunk) != end - start + 1:
            raise SourceError(f"{self.url}: asked for {end - start + 1} bytes at {start}, got {len(chunk)}")
        self.buffer += chunk
        self.requests += 1


def fetch_header(spec: str, scratch: Path) -> RemoteHeader:
    """Read the header of ``hf:…`` by range requests; parse it as the file it heads."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    repo, file, revision = parse_hf_spec(spec)
    endpoint = config.hf_endpoint()
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, file, revision=revision, endpoint=endpoint))
        if not meta.size:
            raise SourceError(f"{spec}: the Hub did not say how large the file is", hint="try again later")
        url = hf_hub_url(repo, file, revision=meta.commit_hash or revision, endpoint=endpoint)
        reader = _RangeReader(url, meta.size)
        length = header_length(reader.read, meta.size, spec)
        model = read_header(bytes(reader.buffer[:length]), meta.size, scratch, spec)
    except VariantlabError:
        raise
    except Exception as exc:  # huggingface_hub raises its own HTTP and validation errors
        if exc.__class__.__module__.startswith(("huggingface_hub", "httpx", "requests")) or isinstance(exc, (OSError, ValueError)):
            first = (str(exc).strip().splitlines() or [""])[0]
            raise SourceError(f"{spec}: {type(exc).__name__}: {first}", hint="check the repo id, file name, revision and HF_ENDPOINT") from None
        raise
    etag = meta.etag if meta.etag and re.fullmatch(r"[0-9a-f]{64}", meta.etag) else None
    return RemoteHeader(spec=spec, repo=repo, file=file, commit=meta.commit_hash, etag=etag or meta.etag,
                        file_size=meta.size, header=bytes(reader.buffer[:length]), bytes_transferred=len(reader.buffer),
                        requests=reader.requests, model=model)
