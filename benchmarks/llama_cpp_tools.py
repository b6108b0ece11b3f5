"""Build llama.cpp's own tools (llama-bench, llama-quantize, llama-perplexity) from the
exact llama.cpp source that the installed llama-cpp-python vendors, for side-by-side runs
(llama-batched-bench too: the ceiling for decoding several sequences together; llama-imatrix
for an importance matrix).

The sdist comes from PyPI through pip; the build lives in ~/.cache/variantlab, never in the
repository. The CPU flags are the ones pip's build of the bindings gets (the Makefile reads
them from here): Release, OpenMP, AVX2/FMA/F16C/BMI2, never -march=native. On these VMs the CPU
reports AMX but the kernel does not grant its state, and a native build dies on its first AMX
instruction (SIGILL or SIGSEGV: the bindings on 2026-12-02, llama-server in CI on 2026-12-05,
after a native build made on one VM was reused on another). The build directory is named by
the flags, so a build made with other flags is never reused.

    python benchmarks/llama_cpp_tools.py           # build (minutes on 2 cores) and print the bin dir
    python benchmarks/llama_cpp_tools.py server    # llama-server alone: print its path
    python benchmarks/llama_cpp_tools.py cpu-flags # the CPU flags, for the bindings' CMAKE_ARGS
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

# x86-64-v3: every x86 machine this project runs on has these; nothing newer is assumed.
CPU_FLAGS = ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
             "-DGGML_BMI2=ON")
BUILD_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_APP=OFF",
               "-DLLAMA_BUILD_TOOLS=ON", *CPU_FLAGS)
TOOLS = ("llama-bench", "llama-quantize", "llama-perplexity", "llama-batched-bench", "llama-imatrix", "llama-server")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "variantlab"


def ensure_tools(tools: tuple[str, ...] = TOOLS) -> Path:
    """The bin directory holding ``tools``, building them first if needed."""
    ver = version("llama-cpp-python")
    root = cache_dir() / f"llama.cpp-{ver}"
    build = root / f"build-{hashlib.sha256(' '.join(BUILD_FLAGS).encode()).hexdigest()[:12]}"
    bin_dir = build / "bin"
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
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), *BUILD_FLAGS], check=True, stdout=subprocess.DEVNULL)
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
    if sys.argv[1:] == ["cpu-flags"]:
        print(" ".join(CPU_FLAGS))
    else:
        print(ensure_server() if sys.argv[1:] == ["server"] else ensure_tools())
