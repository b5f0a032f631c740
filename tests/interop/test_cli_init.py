"""``run --init`` (tini bound at /sbin/docker-init, as Docker's docker-init),
``--privileged`` on a host whose root lacks capabilities, and the first output of
``run -it`` (written before the CLI attaches), through the CLI.

The roots, the busybox image and the leftovers check are those of
``test_cli_containers`` (its ``user`` fixture).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from dockyard.linux import capabilities as linux_caps
from interop.test_cli_containers import User, user
from interop.test_cli_tty import Session, sessions

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["sessions", "user"]  # the fixtures, imported for the tests below

# An orphan (the inner shell's background sleep) is adopted by PID 1, which is `sleep 60`
# without an init: nobody reaps it when it ends, and it stays a zombie.
ZOMBIE_MAKER = ["sh", "-c", "sh -c 'sleep 0.2 &'; exec sleep 60"]


def _zombies(user: User, cid: str) -> list[str]:
    # Seen from inside: a zombie has left its cgroup, so `top` would not list it.
    lines = user("exec", cid, "ps", "-o", "stat,args").stdout.splitlines()[1:]
    return [line for line in lines if line.split()[0].startswith("Z")]


def test_init_reaps_zombies_and_runs_the_command(user: User) -> None:
    cid = user("run", "-d", "--init", "busybox", *ZOMBIE_MAKER).stdout.strip()
    user.ids.add(cid)
    time.sleep(0.8)
    assert _zombies(user, cid) == []
    ps = user("exec", cid, "ps", "-o", "pid,args").stdout
    assert "1 /sbin/docker-init -- sh -c" in ps
    info = json.loads(user("inspect", cid).stdout)[0]
    assert info["HostConfig"]["Init"] is True
    # Read-only bind of the host's tini.
    out = user("exec", cid, "sh", "-c", "echo x > /sbin/docker-init", ok=False)
    assert out.returncode != 0 and "Read-only file system" in out.stderr


def test_without_init_the_zombie_stays(user: User) -> None:
    cid = user("run", "-d", "busybox", *ZOMBIE_MAKER).stdout.strip()
    user.ids.add(cid)
    time.sleep(0.8)
    assert len(_zombies(user, cid)) == 1


def test_init_forwards_stop_to_a_shell_that_ignores_sigterm_as_pid1(user: User) -> None:
    # A shell as PID 1 has no handler for SIGTERM, so the kernel drops it: without an
    # init, stop waits its timeout. Under tini, the shell is no PID 1 and dies of it.
    cid = user("run", "-d", "--init", "busybox", "sh", "-c",
               "while :; do sleep 0.1; done").stdout.strip()
    user.ids.add(cid)
    began = time.monotonic()
    user("stop", "-t", "10", cid)
    assert time.monotonic() - began < 3
    # tini exits with 128 + the signal its child died of.
    assert json.loads(user("inspect", cid).stdout)[0]["State"]["ExitCode"] == 143
    assert user("run", "--rm", "--init", "busybox", "sh", "-c", "exit 7",
                ok=False).returncode == 7


def _bounding_names() -> set[str]:
    mask = linux_caps.current()["CapBnd"]
    return {name for name, number in linux_caps.NUMBERS.items() if mask >> number & 1}


def _container_caps(status: str) -> set[str]:
    line = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    mask = int(line.split()[1], 16)
    return {name for name, number in linux_caps.NUMBERS.items() if mask >> number & 1}


def test_privileged_run_and_exec_get_every_capability_the_host_root_holds(
        user: User) -> None:
    held = _bounding_names()
    result = user("run", "--rm", "--privileged", "busybox", "cat", "/proc/self/status")
    assert _container_caps(result.stdout) == held
    cid = user("run", "-d", "busybox", "sleep", "60").stdout.strip()
    user.ids.add(cid)
    plain = _container_caps(user("exec", cid, "cat", "/proc/self/status").stdout)
    assert "CAP_SYS_ADMIN" not in plain
    privileged = user("exec", "--privileged", cid, "cat", "/proc/self/status").stdout
    assert _container_caps(privileged) == held
    everything = user("run", "--rm", "--cap-add", "ALL", "busybox", "cat",
                      "/proc/self/status")
    assert _container_caps(everything.stdout) == held


def test_run_it_shows_what_the_container_wrote_before_the_cli_attached(
        user: User, sessions: list[Session]) -> None:
    # The output comes at once, well before the CLI's attach; the container then waits
    # for a line, so it is still running when the CLI attaches.
    session = Session(user, "run", "-it", "--rm", "busybox", "sh", "-c",
                      "echo early-bird; read line; echo got-$line")
    sessions.append(session)
    session.expect(b"early-bird")
    session.send(b"x\r")
    session.expect(b"got-x")
    assert session.wait() == 0
