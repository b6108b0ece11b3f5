"""This process's peak resident memory, and a way to leave a passing buffer out of it."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's own peak resident memory. Linux's ``ru_maxrss`` survives exec: a child spawned
    by a large parent starts with the parent's peak (the fork copy's), so VmHWM, kept per address
    space, is read where there is one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def restart_peak() -> bool:
    """Set the peak to the present resident memory (Linux: ``5`` to /proc/self/clear_refs), so a
    buffer that was built, used and freed does not count in later peaks. False where the system
    cannot: the peak then still holds the buffer, which over-counts rather than hides."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
