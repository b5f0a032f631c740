"""``dockyard run -it``, ``attach`` and ``exec`` driven through a real pty, as a person
at a terminal would: what they type, what they read, the window size, the detach keys.

The CLI runs on the slave side of a pty made with ``os.openpty``; the test holds the
master. The roots, the busybox image and the leftovers check are those of
``test_cli_containers`` (its ``user`` fixture).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

CTRL_P, CTRL_Q = b"\x10", b"\x11"


class Session:
    """``dockyard ARGS`` on a new pty: type into it, read from it, resize it."""

    def __init__(self, person: User, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, signal_cli=False)
        self.process = subprocess.Popen([*person.base, *args], stdin=slave, stdout=slave,
                                        stderr=slave, start_new_session=True)
        os.close(slave)
        self.output = b""

    def resize(self, rows: int, cols: int, *, signal_cli: bool = True) -> None:
        """Set the terminal's size, and tell the CLI as the kernel would (SIGWINCH)."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if signal_cli:
            self.process.send_signal(signal.SIGWINCH)

    def send(self, text: bytes) -> None:
        os.write(self.master, text)

    def sync(self, attempts: int = 20) -> None:
        """Wait until the shell on the terminal reads what is typed.

        A shell starting its line editor drops what was typed before (and the
        window-size change the CLI makes when it attaches redraws its prompt), as on
        a real terminal; "sy''nc" in the command line keeps its echo from matching.
        """
        for _ in range(attempts):
            self.send(b"echo sy''nc\r")
            with contextlib.suppress(AssertionError):
                self.expect(b"sync", timeout=1)
                return
        raise AssertionError(f"the shell never answered: {self.output!r}")

    def expect(self, wanted: bytes, timeout: float = 15) -> bytes:
        """Read until ``wanted`` appears after what earlier calls consumed; the text up
        to and with it."""
        deadline = time.monotonic() + timeout
        while wanted not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"{wanted!r} not seen in {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the CLI exited and closed the slave
                    data = b""
                assert data, f"the CLI ended before {wanted!r}: {self.output!r}"
                self.output += data
        cut = self.output.index(wanted) + len(wanted)
        seen, self.output = self.output[:cut], self.output[cut:]
        return seen

    def wait(self, timeout: float = 30) -> int:
        """The CLI's exit code; what it wrote meanwhile is kept in ``output``."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"the CLI still runs: {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                with contextlib.suppress(OSError):  # EIO once the CLI closed the slave
                    self.output += os.read(self.master, 65536)
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    """Sessions a test opens, closed (their CLI killed) even when it fails."""
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.close()


def _open(sessions: list[Session], person: User, *args: str, **size: int) -> Session:
    session = Session(person, *args, **size)
    sessions.append(session)
    return session


def test_run_it_shell(user: User, sessions: list[Session]) -> None:
    shell = _open(sessions, user, "run", "-it", "--rm", "busybox", "sh")
    shell.sync()
    shell.send(b"tty; echo $((6*7)); exit 3\r")
    shell.expect(b"exit 3")  # the line as the container's terminal echoed it
    out = shell.expect(b"42")
    assert b"/dev/pts/" in out or b"/dev/console" in out
    assert shell.wait() == 3
    assert user.all_ids() == []


def test_window_size_is_followed(user: User, sessions: list[Session]) -> None:
    shell = _open(sessions, user, "run", "-it", "--rm", "busybox", "sh", rows=30, cols=100)
    shell.sync()
    shell.send(b"stty size\r")
    shell.expect(b"stty size")
    shell.expect(b"30 100")
    shell.resize(41, 132)
    time.sleep(0.2)  # the resize frame is on its way; the next line comes after it
    shell.send(b"stty size; exit\r")
    shell.expect(b"exit")
    shell.expect(b"41 132")
    assert shell.wait() == 0


def test_run_t_without_i_only_shows_output(user: User, sessions: list[Session]) -> None:
    job = _open(sessions, user, "run", "-t", "--rm", "busybox", "sh", "-c",
                "tty; echo done")
    assert b"/dev/" in job.expect(b"done")
    assert job.wait() == 0


def test_detach_keys_leave_it_running_and_attach_comes_back(
        user: User, sessions: list[Session]) -> None:
    shell = _open(sessions, user, "run", "-it", "--name", "keep", "busybox", "sh")
    shell.sync()
    shell.send(CTRL_P + CTRL_Q)
    assert shell.wait() == 0
    assert b"sync" not in shell.output
    user.ids.add(user("inspect", "-f", "{{.Id}}", "keep").stdout.strip())
    assert " Up " in user("ps").stdout
    again = _open(sessions, user, "attach", "keep")
    again.sync()
    again.send(b"echo back; exit 4\r")
    again.expect(b"exit 4")
    again.expect(b"back")
    assert again.wait() == 4
    assert "Exited (4)" in user("ps", "-a").stdout
    other = _open(sessions, user, "run", "-it", "--name", "keys", "--detach-keys",
                  "ctrl-a", "busybox", "sh")
    other.sync()
    other.send(CTRL_P + CTRL_Q + b"\x01")
    assert other.wait() == 0
    assert user("inspect", "-f", "{{.State.Running}}", "keys").stdout == "true\n"


def test_exec(user: User, sessions: list[Session]) -> None:
    cid = user("run", "-d", "--name", "box", "busybox", "sleep", "1000").stdout.strip()
    user.ids.add(cid)
    info = json.loads(user("inspect", "box").stdout)[0]
    assert user("exec", "box", "hostname").stdout.strip() == info["Config"]["Hostname"]
    assert user("exec", "-u", "nobody", "box", "id", "-u").stdout == "65534\n"
    env = user("exec", "-e", "GREETING=hi", "-w", "/tmp", "box", "sh", "-c",
               'echo "$GREETING $PWD"; exit 6', ok=False)
    assert (env.returncode, env.stdout) == (6, "hi /tmp\n")
    fed = subprocess.run([*user.base, "exec", "-i", "box", "cat"], input="fed\n",
                         capture_output=True, text=True, timeout=60, check=False)
    assert fed.stdout == "fed\n"
    missing = user("exec", "box", "nosuch", ok=False)
    assert missing.returncode == 127
    assert 'exec: "nosuch": executable file not found in $PATH' in missing.stderr
    assert user("exec", "-d", "box", "sleep", "1000").stdout == ""
    assert "sleep 1000" in user("exec", "box", "ps").stdout

    shell = _open(sessions, user, "exec", "-it", "box", "sh")
    shell.sync()
    shell.send(b"tty; echo $((6*7)); exit 2\r")
    shell.expect(b"exit 2")
    out = shell.expect(b"42")
    assert b"/dev/pts/" in out
    assert shell.wait() == 2

    user("stop", "-t", "0", "box")
    stopped = user("exec", "box", "true", ok=False)
    assert stopped.returncode == 1
    assert stopped.stderr == f"Error response from daemon: container {cid} is not running\n"
    refused = user("attach", "box", ok=False)
    assert refused.returncode == 1
    assert "You cannot attach to a stopped container, start it first" in refused.stderr


def test_detach_keys_parsing_and_matching() -> None:
    from dockyard.errors import InvalidArgument
    from dockyard.runtime.terminal import DetachKeys

    assert DetachKeys.parse("ctrl-p,ctrl-q") == CTRL_P + CTRL_Q
    assert DetachKeys.parse("a,ctrl-@,ctrl-[") == b"a\x00\x1b"
    assert DetachKeys.parse("") == b""
    with pytest.raises(InvalidArgument):
        DetachKeys.parse("ctrl-pq")
    keys = DetachKeys()
    # A ctrl-p on its own is held back, then passed on once the sequence breaks.
    assert keys.feed(b"ab" + CTRL_P) == (b"ab", False)
    assert keys.feed(b"c") == (CTRL_P + b"c", False)
    assert keys.feed(b"x" + CTRL_P + CTRL_Q + b"after") == (b"x", True)
    assert DetachKeys("").feed(CTRL_P + CTRL_Q) == (CTRL_P + CTRL_Q, False)
