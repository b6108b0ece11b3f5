"""Decides whether a program passes, in a process the guest cannot reach (never imported by variantlab).

Invoked as ``python -I -S -B _judge.py CONTROL_FD``, where CONTROL_FD is one end of a Unix socket
pair whose other end variantlab holds. The judge serves one job after another (an interpreter's
start-up is most of the cost of a short program, so one judge per worker is reused): each job
arrives as one byte carrying the two pipe descriptors to a new guest, then the job itself
(``_wire`` frame: the trusted context, i.e. the problem's prompt with helpers the tests use, the
tests and the entry point). The untrusted code runs in the guest; the judge executes the tests
here against a stand-in for the entry point that sends each call's arguments to the guest and
takes back a plain value (``_wire``). So the guest never sees the tests or the control socket,
and what is compared is a built-in value checked by the judge itself. The verdict goes back as
a ``_wire`` frame on the control socket. Each job's tests run in a fresh namespace; variantlab
replaces a judge that overran its time.
"""

import builtins
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _wire  # noqa: E402  (the frames' format, beside this file)

del sys.path[0]


class Disqualified(BaseException):
    """The guest did something that fails the program whatever the tests catch."""


def _exception(reply):
    """The guest's exception as one of the same built-in class, so tests that expect it still work."""
    kind = getattr(builtins, str(reply.get("raised")), None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = RuntimeError
    try:
        return kind(str(reply.get("message", "")))
    except Exception:
        return RuntimeError(str(reply.get("message", "")))


def judge(rx, tx, job):
    """(passed, reason, isolation) for one job."""
    hello = _wire.receive(rx)
    isolation = str(hello.get("isolation", "")) if type(hello) is dict else ""
    _wire.send(tx, {"code": job["code"], "entry": job["entry"]})
    loaded = _wire.receive(rx)
    if type(loaded) is not dict or loaded.get("loaded") is not True:
        return False, "failed: " + str(loaded.get("error", "the program did not load") if type(loaded) is dict else ""), isolation
    if not job["entry"]:
        return True, "passed", isolation
    disqualified = []

    def candidate(*args, **kwargs):
        if disqualified:
            raise Disqualified(disqualified[0])
        try:
            _wire.send(tx, {"args": list(args), "kwargs": dict(kwargs)})
            reply = _wire.receive(rx)
        except (_wire.WireError, OSError) as exc:
            disqualified.append("the program ended without answering (%s)" % exc)
            raise Disqualified(disqualified[0]) from None
        if type(reply) is dict and "value" in reply:
            return reply["value"]
        if type(reply) is dict and "raised" in reply:
            raise _exception(reply)
        else:
            disqualified.append(str(reply.get("refused", "a malformed answer")) if type(reply) is dict else "a malformed answer")
        raise Disqualified(disqualified[0])

    namespace = {}
    try:
        exec(compile(job["context"], "context.py", "exec"), namespace)
        namespace[job["entry"]] = candidate  # tests may call the function by name (HumanEval/33)
        exec(compile(job["test"], "test.py", "exec"), namespace)
        namespace["check"](candidate)
    except Disqualified:
        pass
    except AssertionError as exc:
        return False, "failed: AssertionError" + (": " + str(exc)[:200] if str(exc) else ""), isolation
    except BaseException as exc:
        return False, "failed: %s: %s" % (type(exc).__name__, str(exc).replace("\n", " ")[:200]), isolation
    if disqualified:
        return False, "failed: " + disqualified[0], isolation
    return True, "passed", isolation


def serve_one(control):
    """Take one job with its guest's pipes, judge it, answer; False when variantlab closed the socket."""
    data, fds, _, _ = socket.recv_fds(control, 1, 2)
    if not data:
        return False
    rx, tx = fds
    try:
        job = _wire.receive(control.fileno())
        try:
            passed, reason, isolation = judge(rx, tx, job)
        except _wire.WireError as exc:
            passed, reason, isolation = False, "failed: the process ended without a verdict (%s)" % exc, ""
    finally:
        os.close(rx)
        os.close(tx)
    _wire.send(control.fileno(), {"passed": passed, "reason": reason, "isolation": isolation})
    return True


def undumpable():
    """Keep this process's memory and descriptors out of reach of other processes of the same user.

    Under bubblewrap the guest cannot see the judge at all (its own PID namespace). Without it (the
    weaker layer), a guest that slips past the audit hook could open /proc/<judge>/mem, and a judge
    serves many programs; PR_SET_DUMPABLE 0 makes those files the kernel's, not the user's."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except Exception:
        pass


def main():
    undumpable()
    control = socket.socket(fileno=int(sys.argv[1]))
    while serve_one(control):
        pass


main()
