"""Runs one untrusted program inside the sandbox's child process (never imported by variantlab).

Invoked as ``python -I -S -B _guest.py VERDICT_FD`` with the program in ``program.py`` of the
working directory and a one-time nonce on stdin. In order, it:

1. leaves the network: a new user + network namespace (only a loopback that is down), when the
   kernel allows unprivileged namespaces;
2. sets resource limits (address space, CPU seconds, processes, open files, file size, no core);
3. installs an audit hook that refuses, for the rest of the process's life, new processes,
   signals to other processes, sockets, ctypes, writes/renames/deletes outside the working
   directory;
4. executes the program, and writes ``NONCE passed`` or ``NONCE failed: reason`` to the verdict
   pipe only after the program returned. An ``exit()`` in the program is a failure; a process
   that ends without writing a verdict is a failure too (``os._exit`` and fatal signals).
   The nonce stops printed or generic fake successes; a program written against this guest
   could still walk the frames to it (see docs/sandbox.md).
"""

import os
import resource
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def leave_network() -> str:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            return "netns"
    except Exception:
        pass
    finally:  # so that the program's own `import ctypes` goes through the (refusing) import hook
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]
    return "audit"


def limit(memory_bytes: int, cpu_s: int, file_bytes: int, open_files: int) -> None:
    for what, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_s),
                        (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_NOFILE, open_files),
                        (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(what)
            resource.setrlimit(what, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))


def install_guard(workdir: str) -> None:
    root = os.path.realpath(workdir) + os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    realpath, isinstance_, str_, bytes_, int_ = os.path.realpath, isinstance, str, bytes, int
    fsdecode = os.fsdecode
    own_pid = os.getpid()

    def inside(path) -> bool:
        if isinstance_(path, int_):
            return True  # an fd the program already holds
        if isinstance_(path, bytes_):
            path = fsdecode(path)
        return (realpath(str_(path)) + os.sep).startswith(root)

    refused_always = {
        "os.fork": "starting a process", "os.forkpty": "starting a process", "os.system": "running a shell",
        "os.exec": "executing a program", "os.posix_spawn": "starting a process", "os.spawn": "starting a process",
        "subprocess.Popen": "starting a process", "os.killpg": "signalling a process group",
        "socket.__new__": "opening a socket", "socket.connect": "connecting a socket", "socket.bind": "binding a socket",
        "socket.getaddrinfo": "resolving a host name",
        "ctypes.dlopen": "loading native code", "ctypes.dlsym": "loading native code",
    }
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

    def guard(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance_(mode, str_) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
            return
        if event in path_events:
            for arg in args[:2]:
                if isinstance_(arg, (str_, bytes_)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} on {arg!r} outside the working directory")
            return
        if event == "os.kill":
            if args[0] not in (own_pid, 0):
                raise PermissionError("sandbox: signalling another process")
            return
        if event == "import" and args[0] in ("ctypes", "_ctypes"):
            raise PermissionError(f"sandbox: importing {args[0]}")
        why = refused_always.get(event)
        if why:
            raise PermissionError(f"sandbox: {why}")

    sys.addaudithook(guard)


def main() -> None:
    verdict_fd = int(sys.argv[1])
    memory_bytes, cpu_s, file_bytes, open_files = (int(v) for v in sys.argv[2:6])
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    os.remove("program.py")
    sys.argv[:] = ["program.py"]
    network = leave_network()
    limit(memory_bytes, cpu_s, file_bytes, open_files)
    install_guard(os.getcwd())
    write = os.write
    try:
        code = compile(source, "program.py", "exec")
        exec(code, {})
        verdict = "passed"
    except SystemExit as exc:
        verdict = f"failed: the program called exit({exc.code!r}) before its tests finished"
    except MemoryError:
        verdict = "failed: MemoryError (over the sandbox's memory limit)"
    except RecursionError:
        verdict = "failed: RecursionError"
    except BaseException as exc:  # the program's own failure, whatever it is
        text = str(exc).replace("\n", " ")[:200]
        verdict = f"failed: {type(exc).__name__}" + (f": {text}" if text else "")
    write(verdict_fd, f"{nonce} {network} {verdict}\n".encode("utf-8", "replace"))


main()
