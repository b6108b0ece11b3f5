"""Runs the untrusted code inside the sandbox (never imported by variantlab).

Invoked as ``python -I -S -B _guest.py RX TX MEMORY CPU_S FILE_BYTES OPEN_FILES MODE HIDDEN...``
with two pipe descriptors to the judge, or (a repository's own tests) as ``python -I -B _guest.py
RX TX MEMORY CPU_S FILE_BYTES OPEN_FILES MODE --pytest ARGS...``. In order, it:

1. in ``plain`` mode only (no bubblewrap), leaves the network: a new user + network namespace;
2. sets resource limits (address space, CPU seconds, file size, open files, no core dump);
3. installs a seccomp filter (x86-64 and aarch64): no new processes (fork, vfork, clone without
   CLONE_THREAD, clone3, execve), no sockets, no signals to other processes, no ptrace, no
   pidfd, no mknod, no extended attributes, no new namespaces or mounts, no keyrings, no bpf;
4. installs an audit hook (the second layer, and the one that names what it refused): no
   processes, signals, sockets or ctypes; no writes outside the working directory; no reads
   of installed packages (the benchmark's data among them);
5. receives the code, executes it, and answers the judge's calls of the entry point with plain
   values. It never sees the tests, and it has no channel to a verdict: the judge decides.
   With ``--pytest`` it runs the repository's selected tests instead, in this process, and sends
   each test's outcome; there the code under test shares the process with its tests, as in any
   test run, so the outcomes are the run's own report (docs/sandbox.md says what that means).
"""

import os
import resource
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wire  # noqa: E402  (the frames' format, beside this file)

del sys.path[0]

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
TIOCSTI = 0x5412  # push characters into a terminal's input

# Syscalls refused with EPERM (ENOSYS for clone3, so glibc falls back to clone, which is checked).
_DENIED = ("fork", "vfork", "execve", "execveat", "socket", "socketpair", "ptrace", "tkill",
           "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "process_vm_readv", "process_vm_writev",
           "mknod", "mknodat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
           "fremovexattr", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "keyctl",
           "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
           "kexec_load", "init_module", "finit_module", "open_by_handle_at", "name_to_handle_at")
_SYSCALLS = {
    0xC000003E: {  # AUDIT_ARCH_X86_64
        "ioctl": 16, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59, "execveat": 322, "socket": 41,
        "socketpair": 53, "ptrace": 101, "kill": 62, "tkill": 200, "tgkill": 234, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "process_vm_readv": 310, "process_vm_writev": 311,
        "mknod": 133, "mknodat": 259, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
        "lremovexattr": 198, "fremovexattr": 199, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "kexec_load": 246,
        "init_module": 175, "finit_module": 313, "open_by_handle_at": 304, "name_to_handle_at": 303,
    },
    0xC00000B7: {  # AUDIT_ARCH_AARCH64 (the generic table: no fork, vfork or mknod)
        "ioctl": 29, "clone": 220, "clone3": 435, "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199,
        "ptrace": 117, "kill": 129, "tkill": 130, "tgkill": 131, "pidfd_open": 434, "pidfd_send_signal": 424,
        "pidfd_getfd": 438, "process_vm_readv": 270, "process_vm_writev": 271, "mknodat": 33, "setxattr": 5,
        "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16,
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "keyctl": 219,
        "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "io_uring_setup": 425, "kexec_load": 104, "init_module": 105, "finit_module": 273,
        "open_by_handle_at": 265, "name_to_handle_at": 264,
    },
}
_MACHINE_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def leave_network():
    """A user + network namespace of our own; True when the kernel allowed it."""
    try:
        _, libc = _libc()
        return libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
    except Exception:
        return False


def limit(memory_bytes, cpu_s, file_bytes, open_files, no_processes):
    wanted = [(resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_FSIZE, file_bytes),
              (resource.RLIMIT_NOFILE, open_files), (resource.RLIMIT_CORE, 0)]
    if no_processes:  # only where seccomp is missing: the limit also forbids threads for non-root users
        wanted.append((resource.RLIMIT_NPROC, 0))
    for what, value in wanted:
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(what)
            resource.setrlimit(what, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))


def seccomp_program(arch, pid):
    """The classic-BPF filter as bytes: refuse the calls in _DENIED, clone without CLONE_THREAD,
    kill/tgkill aimed at any process but this one, and TIOCSTI."""
    table = _SYSCALLS[arch]
    ld_abs, jeq, jge, and_k, ret = 0x20, 0x15, 0x35, 0x54, 0x06
    allow, deny, enosys, kill = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38, 0x80000000
    code = []  # (op, jt label or 0, jf label or 0, k)

    def emit(op, k, jt=0, jf=0):
        code.append([op, jt, jf, k])

    emit(ld_abs, 4)  # seccomp_data.arch
    emit(jeq, arch, jt=1, jf=0)
    emit(ret, kill)
    emit(ld_abs, 0)  # seccomp_data.nr
    if arch == 0xC000003E:
        emit(jge, 0x40000000, jt="deny")  # the x32 ABI's numbers
    for name in _DENIED:
        if name in table:
            emit(jeq, table[name], jt="deny")
    emit(jeq, table["clone3"], jt="enosys")
    emit(jeq, table["clone"], jt="clone")
    emit(jeq, table["kill"], jt="own_pid")
    emit(jeq, table["tgkill"], jt="own_pid")
    emit(jeq, table["ioctl"], jt="ioctl")
    emit(ret, allow)
    labels = {"deny": len(code)}
    emit(ret, deny)
    labels["enosys"] = len(code)
    emit(ret, enosys)
    labels["clone"] = len(code)
    emit(ld_abs, 16)  # args[0], low 32 bits: the flags
    emit(and_k, CLONE_THREAD)
    emit(jeq, 0, jt=0, jf=1)
    emit(ret, deny)
    emit(ret, allow)
    labels["own_pid"] = len(code)
    emit(ld_abs, 16)  # args[0]: the pid (tgkill: the thread group)
    emit(jeq, pid, jt=1, jf=0)
    emit(ret, deny)
    emit(ret, allow)
    labels["ioctl"] = len(code)
    emit(ld_abs, 24)  # args[1], low 32 bits: the request
    emit(jeq, TIOCSTI, jt=0, jf=1)
    emit(ret, deny)
    emit(ret, allow)
    out = b""
    for i, (op, jt, jf, k) in enumerate(code):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        out += struct.pack("=HBBI", op, jt, jf, k & 0xFFFFFFFF)
    return out, len(code)


def install_seccomp():
    """Load the filter; True when the kernel took it."""
    arch = _MACHINE_ARCH.get(os.uname().machine)
    if arch is None:
        return False
    try:
        ctypes, libc = _libc()
        program, count = seccomp_program(arch, os.getpid())
        buffer = ctypes.create_string_buffer(program, len(program))

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        fprog = SockFprog(count, ctypes.addressof(buffer))
        pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
        zero = ctypes.c_ulong(0)
        if libc.prctl(pr_set_no_new_privs, ctypes.c_ulong(1), zero, zero, zero) != 0:
            return False
        pointer = ctypes.c_void_p(ctypes.addressof(fprog))  # a bare int would be passed as a 32-bit C int
        return libc.prctl(pr_set_seccomp, ctypes.c_ulong(seccomp_mode_filter), pointer, zero, zero) == 0
    except Exception:
        return False


def forget_ctypes():
    """So that the program's own ``import ctypes`` goes through the (refusing) audit hook."""
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def install_guard(workdir, hidden, allow_native=False):
    """The audit hook: the second layer, which also names what it refuses."""
    root = os.path.realpath(workdir) + os.sep
    hidden = tuple(os.path.realpath(h) + os.sep for h in hidden)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    realpath, isinstance_, str_, bytes_, int_ = os.path.realpath, isinstance, str, bytes, int
    fsdecode = os.fsdecode
    own_pid = os.getpid()

    def resolved(path):
        if isinstance_(path, bytes_):
            path = fsdecode(path)
        return realpath(str_(path)) + os.sep

    def inside(path):
        return isinstance_(path, int_) or resolved(path).startswith(root) or resolved(path) == "/dev/null" + os.sep

    refused_always = {
        "os.fork": "starting a process", "os.forkpty": "starting a process", "os.system": "running a shell",
        "os.exec": "executing a program", "os.posix_spawn": "starting a process", "os.spawn": "starting a process",
        "subprocess.Popen": "starting a process", "os.killpg": "signalling a process group",
        "socket.__new__": "opening a socket", "socket.connect": "connecting a socket", "socket.bind": "binding a socket",
        "socket.getaddrinfo": "resolving a host name",
        "ctypes.dlopen": "loading native code", "ctypes.dlsym": "loading native code",
    }
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                   "os.mkfifo", "os.mknod", "os.setxattr", "os.removexattr"}

    def guard(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance_(path, int_):
                return
            writing = (isinstance_(mode, str_) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            if writing and not inside(path):
                raise PermissionError("sandbox: writing %r outside the working directory" % (path,))
            if hidden and resolved(path).startswith(hidden):
                raise PermissionError("sandbox: reading installed packages (%r)" % (path,))
            return
        if event in path_events:
            for arg in args[:2]:
                if isinstance_(arg, (str_, bytes_)) and not inside(arg):
                    raise PermissionError("sandbox: %s on %r outside the working directory" % (event, arg))
            return
        if event == "os.kill":
            if args[0] not in (own_pid, 0):
                raise PermissionError("sandbox: signalling another process")
            return
        if event == "import" and args[0] in ("ctypes", "_ctypes") and not allow_native:
            raise PermissionError("sandbox: importing %s" % args[0])
        why = refused_always.get(event)
        if allow_native and event.startswith("ctypes."):
            return
        if why:
            raise PermissionError("sandbox: " + why)

    sys.addaudithook(guard)


def failure(exc):
    """One line naming how the program failed."""
    if isinstance(exc, SystemExit):
        return "the program called exit(%r)" % (exc.code,)
    if isinstance(exc, MemoryError):
        return "MemoryError (over the sandbox's memory limit)"
    if isinstance(exc, RecursionError):
        return "RecursionError"
    text = str(exc).replace("\n", " ")[:200]
    return type(exc).__name__ + (": " + text if text else "")


def serve(rx, tx):
    """Load the code, then answer calls until the judge closes the channel."""
    job = _wire.receive(rx)
    namespace = {}
    try:
        exec(compile(job["code"], "program.py", "exec"), namespace)
        function = namespace.get(job["entry"]) if job["entry"] else None
        if job["entry"] and not callable(function):
            raise NameError("the program defines no function %r" % job["entry"])
        _wire.send(tx, {"loaded": True})
    except BaseException as exc:  # the program's own failure, whatever it is
        _wire.send(tx, {"loaded": False, "error": failure(exc)})
        return
    while True:
        try:
            call = _wire.receive(rx)
        except _wire.WireError:
            return
        try:
            value = function(*call["args"], **call["kwargs"])
        except BaseException as exc:
            _wire.send(tx, {"raised": type(exc).__name__, "message": failure(exc)})
            continue
        try:
            _wire.check(value)
            reply = {"value": value}
        except (_wire.WireError, RecursionError) as exc:
            reply = {"refused": "the function returned %s" % exc}
        _wire.send(tx, reply)


def run_pytest(tx, args):
    """Run a repository's selected tests (the working directory is its throw-away copy) and send
    each test's outcome, then how the session ended."""
    root = os.getcwd()
    sys.path[:0] = [root] + ([os.path.join(root, "src")] if os.path.isdir(os.path.join(root, "src")) else [])
    try:
        import pytest
    except ImportError:
        _wire.send(tx, {"done": -1, "error": "pytest is not installed for %s" % sys.executable})
        return

    class Reporter:
        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                _wire.send(tx, {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome})

    code = pytest.main(args, plugins=[Reporter()])
    _wire.send(tx, {"done": int(code)})


def main():
    rx, tx = int(sys.argv[1]), int(sys.argv[2])
    memory_bytes, cpu_s, file_bytes, open_files = (int(v) for v in sys.argv[3:7])
    mode, hidden, pytest_args = sys.argv[7], sys.argv[8:], None
    if "--pytest" in hidden:
        cut = hidden.index("--pytest")
        hidden, pytest_args = hidden[:cut], hidden[cut + 1:]
    layers = ["namespaces"] if mode == "bwrap" else (["netns"] if leave_network() else [])
    seccomp = install_seccomp()
    if seccomp:
        layers.append("seccomp")
    # A repository's tests may need native code (numpy, …): allowed only inside bubblewrap's
    # namespaces under seccomp, where the audit hook is not the layer that confines.
    allow_native = pytest_args is not None and mode == "bwrap" and seccomp
    if not allow_native:
        forget_ctypes()
    limit(memory_bytes, cpu_s, file_bytes, open_files, no_processes=not seccomp)
    install_guard(os.getcwd(), hidden, allow_native)
    layers.append("audit")
    _wire.send(tx, {"isolation": "+".join(layers)})
    if pytest_args is None:
        serve(rx, tx)
    else:
        run_pytest(tx, pytest_args)


main()
