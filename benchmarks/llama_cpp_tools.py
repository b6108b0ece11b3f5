"""Build llama.cpp's own tools (llama-bench, llama-quantize, llama-perplexity) from the
exact llama.cpp source that the installed llama-cpp-python vendors, for side-by-side runs
(llama-batched-bench too: the ceiling for decoding several sequences together; llama-imatrix
for an importance matrix).

The sdist comes from PyPI through pip; the build lives in ~/.cache/variantlab, never in the
repository. Same compiler flags as pip's build of the bindings: Release, GGML_NATIVE, OpenMP.

    python benchmarks/llama_cpp_tools.py        # build (minutes on 2 cores) and print the bin dir
    python benchmarks/llama_cpp_tools.py server # llama-server alone: print its path
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

TOOLS = ("llama-bench", "llama-quantize", "llama-perplexity", "llama-batched-bench", "llama-imatrix", "llama-server")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "variantlab"


def ensure_tools(tools: tuple[str, ...] = TOOLS) -> Path:
    """The bin directory holding ``tools``, building them first if needed."""
    ver = version("llama-cpp-python")
    root = cache_dir() / f"llama.cpp-{ver}"
    bin_dir = root / "build" / "bin"
    if all((bin_dir / t).exists() for t in tools):
        return bin_dir
    src = root / "src"
    if not (src / "CMakeLists.txt").exists():
        dl = root / "sdist"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-q", "-d", str(dl), f"llama-cpp-python=={ver}"], check=True)
        archive = next(dl.glob("*.tar.gz"))
        prefix = f"llama_cpp_python-{ver}/vendor/llama.cpp/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(src, members=members, filter="data")
    build = root / "build"
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON"]
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", *tools], check=True)
    return bin_dir


def ensure_server() -> Path:
    """llama-server alone (what the eval-through-a-server tests need): the binary's path."""
    return ensure_tools(("llama-server",)) / "llama-server"


def start_server(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """llama-server with ``args`` on a free loopback port, once /health answers: the process and its base URL."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([str(ensure_server()), *args, "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"llama-server {args} did not come up")


if __name__ == "__main__":
    print(ensure_server() if sys.argv[1:] == ["server"] else ensure_tools())
