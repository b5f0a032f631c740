"""The runtime's own end of a container's terminal, for ``run`` and ``exec`` in front.

When nobody passed ``--console-socket``, the runtime plays the console-socket server
itself: it receives the pty master from the container and copies bytes between it and
its own stdin/stdout, in raw mode when stdin is a terminal, passing window-size
changes on, until the container's process exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import sys
import termios
import tty

from dockyard.errors import SystemFailure
from dockyard.runtime.state import proc_start_time


class Terminal:
    """A socketpair standing in for a console socket, and the master it receives."""

    def __init__(self) -> None:
        self.socket, self._peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.master = -1

    def receive(self, timeout: float = 30.0) -> None:
        """Take the pty master the container sent."""
        ready, _, _ = select.select([self._peer], [], [], timeout)
        if not ready:
            raise SystemFailure("the container did not send its terminal")
        _, fds, _, _ = socket.recv_fds(self._peer, 1024, 1)
        if not fds:
            raise SystemFailure("the container closed its console socket without a terminal")
        self.master = fds[0]

    def _copy_size(self) -> None:
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(sys.stdin.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def proxy(self, pid: int) -> None:
        """Copy stdin to the master and the master to stdout until the process ends."""
        stdin = sys.stdin.fileno()
        stdout = sys.stdout.fileno()
        is_tty = os.isatty(stdin)
        saved = termios.tcgetattr(stdin) if is_tty else None
        if is_tty:
            tty.setraw(stdin)
            self._copy_size()
            signal.signal(signal.SIGWINCH, lambda *_: self._copy_size())
        inputs = [self.master, stdin]
        try:
            while True:
                try:
                    ready, _, _ = select.select(inputs, [], [], 0.2)
                except InterruptedError:
                    continue
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:  # EIO: every slave fd is closed
                        data = b""
                    if not data:
                        return
                    os.write(stdout, data)
                if stdin in ready:
                    data = os.read(stdin, 65536)
                    if data:
                        os.write(self.master, data)
                    else:
                        inputs.remove(stdin)
                        # End of input: send the terminal's EOF character.
                        os.write(self.master, b"\x04")
                if not ready and proc_start_time(pid) is None:
                    return  # ended, and nothing is left to copy
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)

    def close(self) -> None:
        """Close both socket ends and the master."""
        self.socket.close()
        self._peer.close()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
