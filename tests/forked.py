"""Run a piece of a test in a forked child, for what may not happen in pytest's process.

Capabilities dropped, a seccomp filter loaded, a uid changed: none of it can be undone,
so tests do it in a child that reports back through a pipe and leaves with os._exit.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


def in_child(body: Callable[[int], None]) -> tuple[int, bytes]:
    """Run ``body(write_fd)`` in a forked child; return its wait status and what it wrote.

    An exception in the child is written as its traceback, with exit status 1.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            body(write_fd)
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return status, output
