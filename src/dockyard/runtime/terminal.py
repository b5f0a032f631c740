"""Our end of a container's terminal: raw mode, window size, detach keys, and the proxy.

When nobody passed ``--console-socket``, the runtime plays the console-socket server
itself: it receives the pty master from the container and copies bytes between it and
its own stdin/stdout, in raw mode when stdin is a terminal, passing window-size
changes on, until the container's process exits. The engine's clients (``dockyard
exec -t``, ``run -it``, ``attach``) use the same pieces: ``raw_mode``,
``window_size``, ``on_resize`` and ``DetachKeys``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty
from collections.abc import Callable, Iterator

from dockyard.errors import InvalidArgument, SystemFailure
from dockyard.runtime.state import proc_start_time

#: Docker's default detach sequence: ctrl-p ctrl-q.
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"

_WINSIZE = struct.Struct("HHHH")


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[bool]:
    """Put the terminal ``fd`` in raw mode for the block, and back as it was after;
    yields whether ``fd`` is a terminal (nothing is changed when it is not)."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def window_size(*fds: int) -> tuple[int, int] | None:
    """The (rows, columns) of the first of ``fds`` that is a terminal with a size."""
    for fd in fds:
        with contextlib.suppress(OSError):
            rows, cols, _, _ = _WINSIZE.unpack(
                fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * _WINSIZE.size))
            if rows and cols:
                return rows, cols
    return None


@contextlib.contextmanager
def on_resize(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` at each SIGWINCH during the block (and the old handler after)."""
    previous = signal.signal(signal.SIGWINCH, lambda *_: callback())
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


class DetachKeys:
    """Finds Docker's detach sequence (``--detach-keys``) in what the user types.

    Bytes that could begin the sequence are held back until it is complete (the user
    detached) or broken (they are passed on after all), as the docker CLI does.
    """

    def __init__(self, spec: str = DEFAULT_DETACH_KEYS) -> None:
        self.sequence = self.parse(spec)
        self._held = b""

    @staticmethod
    def parse(spec: str) -> bytes:
        """``ctrl-p,ctrl-q``, ``a,ctrl-@``...: comma-separated single characters or
        ``ctrl-`` and one of a-z @ [ \\ ] ^ _; "" is no sequence."""
        keys = bytearray()
        for key in filter(None, spec.split(",")):
            name = key.strip().lower()
            if len(key) == 1:
                keys.append(ord(key))
            elif name.startswith("ctrl-") and len(name) == 6 and \
                    (name[5].isalpha() or name[5] in "@[\\]^_"):
                keys.append(ord(name[5].upper()) & 0x1F)
            else:
                raise InvalidArgument(f"Unknown character: '{key}': use ctrl-X or a "
                                      "single character, separated by commas")
        return bytes(keys)

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """What to forward of ``data``, and whether the sequence was typed."""
        if not self.sequence:
            return data, False
        out = bytearray()
        for byte in data:
            self._held += bytes((byte,))
            if self._held == self.sequence:
                return bytes(out), True
            if not self.sequence.startswith(self._held):
                out += self._held
                self._held = b""
        return bytes(out), False


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
        size = window_size(sys.stdin.fileno(), sys.stdout.fileno())
        if size is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, _WINSIZE.pack(*size, 0, 0))

    def proxy(self, pid: int, *, stdin: bool = True) -> None:
        """Copy stdin to the master and the master to stdout until the process ends.

        Without ``stdin`` (``exec -t`` without ``-i``) only the output is copied, and
        our terminal stays as it is, so that ctrl-c still signals us.
        """
        in_fd = sys.stdin.fileno()
        stdout = sys.stdout.fileno()
        inputs = [self.master, in_fd] if stdin else [self.master]
        with raw_mode(in_fd) if stdin else contextlib.nullcontext(False), \
                on_resize(self._copy_size):
            self._copy_size()
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
                if in_fd in ready:
                    data = os.read(in_fd, 65536)
                    if data:
                        os.write(self.master, data)
                    else:
                        inputs.remove(in_fd)
                        # End of input: send the terminal's EOF character.
                        os.write(self.master, b"\x04")
                if not ready and proc_start_time(pid) is None:
                    return  # ended, and nothing is left to copy

    def close(self) -> None:
        """Close both socket ends and the master."""
        self.socket.close()
        self._peer.close()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
