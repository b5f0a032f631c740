"""Faults, through the real CLI: ``kill -9`` of ``dockyard run -d`` and of ``dockyard rm
-f`` at several moments, and fifty ``run -d`` then fifty ``rm -f`` at once.

Afterwards the state must be one a user can trust: every container ``ps -a`` lists
fully exists (``inspect`` shows it; one that does not run can be removed without
``-f``), ``rm -f`` removes any of them, and once they are gone nothing is left: no
mount under the test's roots, no cgroup or process of any container ever made there
(even one whose ID the killed command never printed), no state directory, no
anonymous volume.

The roots, the busybox image and the leftovers check are ``test_cli_containers``'s
(its ``user`` fixture).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import random
import signal
import subprocess
import time
from pathlib import Path

from interop.test_cli_containers import CGROUP_ROOT, User, _mounts_under, pytestmark, user

__all__ = ["pytestmark", "user"]  # root only; the fixture

# Seeded, so that a failure can be replayed. The moments spread over the whole command,
# whose length is measured first: it varies with the machine's load.
SEED = 4
ITERATIONS = 5
RUNNING = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done")


def _killed_after(user: User, delay: float, *args: str) -> None:
    """Start ``dockyard ARGS`` and SIGKILL it (it alone, as ``kill -9 PID``) after
    ``delay`` seconds, or let it finish if it is quicker."""
    process = subprocess.Popen([*user.base, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _moments(user: User, *args: str) -> list[float]:
    """``ITERATIONS`` delays spread over the time ``dockyard ARGS`` takes, jittered."""
    start = time.monotonic()
    user(*args)
    length = time.monotonic() - start
    chance = random.Random(SEED)
    return [length * (n + chance.random()) / ITERATIONS for n in range(ITERATIONS)]


def _known_ids(user: User) -> set[str]:
    """Every container ID the roots show, even of one the listing no longer has."""
    found = set(user.all_ids())
    for place in (user.home / "run" / "containers", user.home / "run" / "runtime"):
        if place.is_dir():
            found.update(p.name for p in place.iterdir() if len(p.name) == 64)
    return found


def _check_consistent(user: User, context: str) -> None:
    """Every listed container exists in full and a stopped one is removable without -f."""
    listed = user("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.State}}").stdout
    for line in filter(None, listed.splitlines()):
        cid, state = line.split()
        assert state in ("created", "running", "exited"), (context, line)
        shown = json.loads(user("inspect", cid).stdout)[0]
        assert shown["Id"] == cid and shown["State"]["Status"] == state, context
        if state != "running":
            user("rm", "-v", cid)


def _check_all_removable(user: User, ids: set[str], context: str) -> None:
    for cid in user.all_ids():
        user("rm", "-f", "-v", cid)
    assert user.all_ids() == [], context
    assert user("volume", "ls", "-q").stdout == "", context
    for place in (user.home / "run" / "containers", user.home / "run" / "runtime"):
        left = [p.name for p in place.iterdir()] if place.is_dir() else []
        assert [name for name in left if not name.startswith(".")] == [], (context, left)
    user.ids.update(ids)
    # An idle bridge lingers a moment for the next container, retired then by a
    # detached process of the command that left it (``NetworkService``): that process
    # ends by itself.
    deadline = time.monotonic() + 10
    while _commands_of(user) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert user.leftovers() == [], context


def _commands_of(user: User) -> list[int]:
    """The processes of ``dockyard`` commands on the user's roots (by their arguments)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if str(user.home).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


def test_kill_9_of_run_detached_at_any_moment(user: User) -> None:
    ids: set[str] = set()
    moments = _moments(user, "run", "-d", "--name", "timed", "busybox", "true")
    for n, delay in enumerate(moments):
        context = f"run -d killed after {delay:.3f} s (seed {SEED}, iteration {n})"
        _killed_after(user, delay, "run", "-d", "--name", f"c{n}", "-v", "/anon",
                      "busybox", *RUNNING)
        ids |= _known_ids(user)
        _check_consistent(user, context)
    # What survived still works: the names are free again or the containers run.
    for n in range(ITERATIONS):
        if f"c{n}" not in user("ps", "-a", "--format", "{{.Names}}").stdout.split():
            user("run", "-d", "--name", f"c{n}", "busybox", *RUNNING)
    ids |= _known_ids(user)
    _check_all_removable(user, ids, "after run -d was killed")


def test_kill_9_of_run_detached_once_its_monitor_runs(user: User) -> None:
    """The narrowest moments: the monitor is starting the container, the start is not
    recorded yet. Afterwards the container runs and `ps` says so, or it does not run
    and holds nothing (no rootfs mounted) until it is started again."""
    ids: set[str] = set()
    containers = user.home / "run" / "containers"
    for n in range(3):
        before = set(containers.glob("*/monitor/monitor.pid"))
        process = subprocess.Popen([*user.base, "run", "-d", "--name", f"m{n}", "busybox",
                                    *RUNNING], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not set(containers.glob("*/monitor/monitor.pid")) - before:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        process.kill()
        process.wait()
        time.sleep(1)  # the monitor's fate, whichever it is, is settled by then
        ids |= _known_ids(user)
        context = f"run -d killed once its monitor ran (iteration {n})"
        cid, state = user("ps", "-a", "--no-trunc", "--filter", f"name=m{n}",
                          "--format", "{{.ID}} {{.State}}").stdout.split()
        cgroup = next(CGROUP_ROOT.glob(f"pids/dockyard/{cid}/cgroup.procs"), None)
        processes = cgroup.read_text().split() if cgroup else []
        assert (state == "running") == bool(processes), (context, state, processes)
        if state != "running":
            assert not _mounts_under(containers / cid), context
            user("start", f"m{n}")
        user("stop", "-t", "5", f"m{n}")
        _check_consistent(user, context)
    _check_all_removable(user, ids, "after run -d was killed once its monitor ran")


def test_kill_9_of_rm_force_at_any_moment(user: User) -> None:
    user("run", "-d", "--name", "timed", "busybox", *RUNNING)
    ids: set[str] = set(user.all_ids())
    for n, delay in enumerate(_moments(user, "rm", "-f", "timed")):
        cid = user("run", "-d", "-v", "/anon", "busybox", *RUNNING).stdout.strip()
        ids.add(cid)
        context = f"rm -f killed after {delay:.3f} s (seed {SEED}, iteration {n})"
        _killed_after(user, delay, "rm", "-f", "-v", cid)
        ids |= _known_ids(user)
        _check_consistent(user, context)
        # Killed before it removed the row, the container is still there, running or
        # not, and `rm -f` removes it.
        left = user("ps", "-a", "-q", "--no-trunc").stdout
        assert left in ("", f"{cid}\n"), context
        if left:
            user("rm", "-f", "-v", cid)
    _check_all_removable(user, ids, "after rm -f was killed")


def test_fifty_at_once(user: User) -> None:
    names = [f"p{i}" for i in range(50)]

    def run(name: str) -> subprocess.CompletedProcess[str]:
        return user("run", "-d", "--name", name, "busybox", "sleep", "600", ok=False)

    def remove(name: str) -> subprocess.CompletedProcess[str]:
        return user("rm", "-f", name, ok=False)

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        runs = list(pool.map(run, names))
        ids = [r.stdout.strip() for r in runs]
        user.ids.update(ids)
        assert [(r.returncode, r.stderr) for r in runs] == [(0, "")] * len(names)
        assert len(set(ids)) == len(names) and all(len(i) == 64 for i in ids)
        listed = user("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.split("\n")
        assert sorted(filter(None, listed)) == \
            sorted(f"{i} {n}" for i, n in zip(ids, names, strict=True))
        removals = list(pool.map(remove, names))
    assert [(r.returncode, r.stdout) for r in removals] == [(0, f"{n}\n") for n in names]
    assert user.all_ids() == []
    assert user.leftovers() == []


def test_interrupted_create_leaves_no_anonymous_volume(user: User) -> None:
    """A `create` killed while it makes the container's volumes: the next command finds
    no half-made container, and no volume nobody will ever remove."""
    ids: set[str] = set()
    for delay in _moments(user, "create", "--name", "timed", "-v", "/a", "-v", "/b", "busybox"):
        _killed_after(user, delay, "create", "-v", "/a", "-v", "/b", "busybox")
        ids |= _known_ids(user)
        _check_consistent(user, f"create killed after {delay:.3f} s")
    _check_all_removable(user, ids, "after create was killed")
