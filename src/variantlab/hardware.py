"""Facts about this machine that make measurements comparable, and its memory bandwidth.

Token generation on a CPU reads every weight once per token, so memory bandwidth sets the
ceiling: tokens/s ≤ bandwidth ÷ bytes read per token. The probe reads a 1 GiB buffer (far
beyond any cache) with one thread per core and keeps the best of 7 passes. The result is
cached per machine in the user directory, unless the CPU was busy when it was taken: a
probe under load (a compile, say) reads low and would make every ceiling wrong.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from . import config
from .files import atomic_write_text

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "sve")
PROBE_BYTES = 1024 * 1024 * 1024
BUSY_PERCENT = 25.0  # above this CPU use, a probe is used once but not cached


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_features() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in SIMD_FLAGS if f in flags]


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs through NVML when the driver and nvidia-ml-py are present; else none."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    found = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        found.append({"name": name.decode() if isinstance(name, bytes) else name, "total_bytes": mem.total, "free_bytes": mem.free})
    return found


def apple_unified_memory() -> list[dict[str, Any]]:
    """On Apple silicon the GPU shares RAM: report it as such, so nothing counts it twice."""
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return []
    vm = psutil.virtual_memory()
    return [{"name": "Apple unified memory (Metal)", "total_bytes": vm.total, "free_bytes": vm.available, "unified": True}]


def ram_available_bytes() -> int:
    """RAM the kernel could give a new process now without swapping."""
    return int(psutil.virtual_memory().available)


def free_disk_bytes(path: Path) -> int:
    """Free space on the file system holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def machine_facts() -> dict[str, Any]:
    """What a result depends on besides the model and the settings."""
    vm = psutil.virtual_memory()
    return {
        "cpu": cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "simd": simd_features(),
        "ram_total_bytes": vm.total,
        "ram_available_bytes": vm.available,
        "gpus": gpus() + apple_unified_memory(),
        "os": platform.platform(),
    }


def _probe_bandwidth(threads: int, passes: int = 7) -> float:
    """Bytes per second read by ``threads`` threads reducing disjoint slices of one buffer."""
    data = np.ones(PROBE_BYTES // 8, dtype=np.int64)
    chunks = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(passes):
            t0 = time.perf_counter()
            list(pool.map(np.bitwise_or.reduce, chunks))
            best = min(best, time.perf_counter() - t0)
    return data.nbytes / best


def memory_bandwidth(refresh: bool = False) -> float:
    """Measured memory read bandwidth in bytes/s, cached per CPU model and core count."""
    cache = config.home() / "hardware.json"
    key = f"{cpu_model()}|{psutil.cpu_count(logical=True)}"
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = {}
    if not refresh and cached.get("key") == key and cached.get("bandwidth_bytes_per_s"):
        return float(cached["bandwidth_bytes_per_s"])
    busy = psutil.cpu_percent(interval=0.3)
    value = _probe_bandwidth(psutil.cpu_count(logical=True) or 1)
    if busy <= BUSY_PERCENT:
        record = {"key": key, "bandwidth_bytes_per_s": value, "measured_at": time.time(), "cpu_busy_percent": busy}
        atomic_write_text(cache, json.dumps(record) + "\n")
    return value


def profile(refresh_bandwidth: bool = False) -> dict[str, Any]:
    """Everything `variantlab hw` reports: machine facts, free disk in the store, bandwidth."""
    facts = machine_facts()
    facts["store_path"] = str(config.home())
    facts["store_free_disk_bytes"] = free_disk_bytes(config.home())
    facts["memory_bandwidth_bytes_per_s"] = memory_bandwidth(refresh=refresh_bandwidth)
    return facts
