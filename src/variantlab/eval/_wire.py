"""What crosses between the judge and the guest: values of built-in types only, in framed messages.

Imported by the judge and by the guest (both fresh ``python -I -S`` interpreters) and by nothing
else. Messages are ``marshal`` data (built into the interpreter, so no start-up cost; it writes
only exact built-in types), and every value is checked by its exact type (``type(v) is int``,
never ``isinstance``) on both sides: an object of a class the program defined, or a subclass of
a built-in with its own ``__eq__``, cannot cross, so what the judge compares is always a plain
value. The judge checks what it reads again, since marshal also knows code objects.
"""

import marshal
import os

MAX_MESSAGE = 64 << 20  # bytes in one message
MAX_DEPTH = 200  # nesting of one value
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (list, tuple, set, frozenset)


class WireError(Exception):
    """A message or value that is not of the agreed form."""


def check(value, depth=0):
    """Raise WireError unless ``value`` is built only of plain built-in values."""
    if depth > MAX_DEPTH:
        raise WireError("a value nested more than %d deep" % MAX_DEPTH)
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind in _CONTAINERS:
        for item in value:
            check(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            check(key, depth + 1)
            check(item, depth + 1)
        return
    raise WireError("a value of type %s, which is not a plain built-in type" % _type_name(kind))


def _type_name(kind):
    module = getattr(kind, "__module__", "?")
    name = getattr(kind, "__qualname__", "?")
    return name if module == "builtins" else "%s.%s" % (module, name)


def send(fd, message):
    """Write one message: 8 hex digits of length, then the marshal data."""
    try:
        data = marshal.dumps(message)
    except ValueError as exc:
        raise WireError("a message that cannot be sent (%s)" % exc) from None
    if len(data) > MAX_MESSAGE:
        raise WireError("a message of %d bytes, over the limit of %d" % (len(data), MAX_MESSAGE))
    _write_all(fd, b"%08x" % len(data) + data)


def receive(fd):
    """Read one message; WireError on end of file, a bad frame or bad data."""
    head = _read_exactly(fd, 8)
    try:
        size = int(head.decode("ascii"), 16)
    except ValueError:
        raise WireError("a malformed frame") from None
    if size > MAX_MESSAGE:
        raise WireError("a message of %d bytes, over the limit of %d" % (size, MAX_MESSAGE))
    try:
        message = marshal.loads(_read_exactly(fd, size))
    except (ValueError, EOFError, TypeError, RecursionError):
        raise WireError("a message that is not marshal data") from None
    check(message)
    return message


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise WireError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
