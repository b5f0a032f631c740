"""A user's session with the container commands of ``dockyard``: run, ps, logs, stop, rm...

Each test has its own ``--root`` and ``--runroot`` with a bootstrapped busybox image,
and after it checks that nothing is left: no mount under its roots, no cgroup of its
containers, no process of its containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The OCI runtime of these tests' containers ($DOCKYARD_RUNTIME of every dockyard they
#: run): run-tests.sh runs the container suite again with DOCKYARD_TEST_RUNTIME=crun.
#: Empty: dockyard's own.
RUNTIME = os.environ.get("DOCKYARD_TEST_RUNTIME", "")


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(str(path) + "/")]


class User:
    """Runs ``dockyard`` with its own roots, as one person would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.base = [DOCKYARD, "--root", str(home / "root"), "--runroot", str(home / "run")]
        self.ids: set[str] = set()

    def __call__(self, *args: str, ok: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True,
                                timeout=timeout, check=False)
        if ok:
            assert result.returncode == 0, f"dockyard {' '.join(args)}:\n{result.stderr}"
        return result

    def all_ids(self) -> list[str]:
        return self("ps", "-a", "-q", "--no-trunc").stdout.split()

    def leftovers(self) -> list[str]:
        """What the containers of this user left on the host."""
        # First: it takes down the idle networks, with their DNS servers' processes.
        network = _network_leftovers(self.home / "root", self.home / "run", self.ids)
        left = [f"mount {m}" for m in _mounts_under(self.home)]
        for cid in self.ids:
            for cg in CGROUP_ROOT.glob(f"*/dockyard/{cid}"):
                left.append(f"cgroup {cg}")
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmd = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if str(self.home).encode() in cmd:
                    left.append(f"process {proc.name}: {cmd!r}")
        return left + network


def _network_leftovers(root: Path, runroot: Path, ids: set[str]) -> list[str]:
    """The bridges, veths and nftables tables of the root's networks still on the host
    (only this root's: tests run in parallel), removed as they are found."""
    from dockyard.engine.networks import NetworkService, firewall_table
    from dockyard.network import bridge, firewall

    networks: list[tuple[str, str]] = []
    if (root / "dockyard.db").exists():
        # An idle bridge lingers a moment for the next container: not a leftover.
        NetworkService(str(root), str(runroot)).retire_idle()
        with contextlib.closing(sqlite3.connect(root / "dockyard.db")) as db, \
                contextlib.suppress(sqlite3.OperationalError):  # no networks table yet
            networks = db.execute("SELECT id, bridge FROM networks").fetchall()
    links = {name for _, name in networks if name}
    links |= {bridge.host_ifname(cid, network) for cid in ids for network, _ in networks}
    left = [f"link {name}" for name in sorted(links) if os.path.exists(f"/sys/class/net/{name}")]
    for name in links:
        bridge.delete_bridge(name)  # deletes a veth as well
    tables = firewall.tables(firewall_table(str(root)))
    if tables:
        left += [f"nft table {table}" for table in tables]
        firewall.clear(table=firewall_table(str(root)))
    return left


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[User]:
    if RUNTIME:
        monkeypatch.setenv("DOCKYARD_RUNTIME", RUNTIME)
    person = User(tmp_path)
    person("image", "bootstrap", "busybox")
    yield person
    person.ids.update(person.all_ids())
    for cid in person.all_ids():
        person("rm", "-f", cid, ok=False)
    left = person.leftovers()
    for point in reversed(_mounts_under(tmp_path)):
        subprocess.run(["umount", "--lazy", point], check=False)
    assert not left, left


def test_run_rm_prints_and_leaves_nothing(user: User) -> None:
    result = user("run", "--rm", "busybox", "echo", "hello")
    assert result.stdout == "hello\n"
    assert user.all_ids() == []
    assert not (user.home / "run" / "containers").exists() or \
        not list((user.home / "run" / "containers").iterdir())


def test_streams_and_exit_codes(user: User) -> None:
    result = user("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
                  ok=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    missing = user("run", "--rm", "busybox", "nonexistent", ok=False)
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr
    assert user.all_ids() == []  # --rm removes a container that failed to start
    no_image = user("run", "--rm", "--pull", "never", "nosuch", ok=False)
    assert no_image.returncode == 125
    assert "No such image: nosuch" in no_image.stderr
    bad_flag = user("run", "-m", "64x", "busybox", ok=False)
    assert bad_flag.returncode == 125
    assert 'invalid argument "64x" for "-m, --memory" flag' in bad_flag.stderr


def test_detached_lifecycle(user: User) -> None:
    cid = user("run", "-d", "--name", "web", "busybox", "sh", "-c",
               "echo started; trap 'exit 7' TERM; while :; do sleep 0.1; done").stdout.strip()
    assert len(cid) == 64
    user.ids.add(cid)
    lines = user("ps").stdout.splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                "PORTS", "NAMES"]
    assert lines[1].startswith(cid[:12])
    assert " Up " in lines[1] and lines[1].endswith("web")
    assert '"sh -c \'echo started…"' in lines[1]
    deadline = time.monotonic() + 10
    while "started" not in user("logs", "web").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    conflict = user("run", "-d", "--name", "web", "busybox", "true", ok=False)
    assert conflict.returncode == 125
    assert (f'Conflict. The container name "/web" is already in use by container "{cid}". '
            "You have to remove (or rename) that container to be able to reuse that name."
            ) in conflict.stderr
    assert user("rm", "web", ok=False).returncode == 1
    assert user("stop", "web").stdout == "web\n"
    assert user("ps", "-q").stdout == ""
    exited = user("ps", "-a").stdout.splitlines()[1]
    assert "Exited (7) " in exited
    assert user("wait", "web").stdout == "7\n"
    state = json.loads(user("inspect", "web").stdout)[0]
    assert state["Id"] == cid and state["Name"] == "/web"
    assert state["State"]["Status"] == "exited" and state["State"]["ExitCode"] == 7
    assert state["State"]["Running"] is False and state["State"]["Pid"] == 0
    assert state["Config"]["Image"] == "busybox"
    assert state["Config"]["Hostname"] == cid[:12]
    assert state["Image"].startswith("sha256:")
    assert state["Path"] == "sh"
    assert user("rm", "web").stdout == "web\n"
    assert user.all_ids() == []


def test_wait_start_and_logs_options(user: User) -> None:
    cid = user("create", "--name", "job", "busybox", "sh", "-c",
               "echo one; echo two; echo three >&2; exit 4").stdout.strip()
    user.ids.add(cid)
    assert "Created" in user("ps", "-a").stdout
    assert user("start", "job").stdout == "job\n"
    assert user("wait", "job").stdout == "4\n"
    logs = user("logs", "job")
    assert (logs.stdout, logs.stderr) == ("one\ntwo\n", "three\n")
    assert user("logs", "--tail", "1", "job").stderr == "three\n"
    stamped = user("logs", "-t", "job").stdout.splitlines()
    assert stamped[0].endswith("Z one")
    again = user("start", "-a", "job", ok=False)
    assert again.returncode == 4
    assert user("logs", "job").stdout == "one\ntwo\none\ntwo\n"
    fmt = user("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout
    assert fmt == "job exited\n"
    assert user("container", "rm", "job").stdout == "job\n"


def test_inspect_falls_back_to_images(user: User) -> None:
    image = json.loads(user("inspect", "busybox").stdout)[0]
    assert image["Id"].startswith("sha256:") and "RepoTags" in image
    missing = user("inspect", "nothing", ok=False)
    assert missing.returncode == 1 and "No such object: nothing" in missing.stderr
    # Docker's names have two characters at least.
    assert user("run", "--name", "c", "busybox", "true", ok=False).returncode == 125
    user("run", "--name", "cc", "-e", "A=1", "-l", "k=v", "busybox", "true")
    info = json.loads(user("container", "inspect", "cc").stdout)[0]
    assert "A=1" in info["Config"]["Env"]
    assert info["Config"]["Labels"] == {"k": "v"}
    assert info["State"]["StartedAt"] != "0001-01-01T00:00:00Z"
    assert user("image", "inspect", "-f", "{{.Os}}", "busybox").stdout == "linux\n"


def test_memory_limit_oom_kills(user: User) -> None:
    result = user("run", "--name", "hog", "-m", "32m", "busybox", "tail", "/dev/zero",
                  ok=False)
    assert result.returncode == 137
    assert user("inspect", "-f", "{{.State.OOMKilled}}", "hog").stdout == "true\n"


def test_flags_reach_the_container(user: User, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("from host\n")
    out = user("run", "--rm", "-h", "box", "-w", "/tmp", "-u", "nobody", "--read-only",
               "--tmpfs", "/run", "-v", f"{shared}:/data:ro", "--cap-drop", "ALL",
               "--pids-limit", "50", "busybox", "sh", "-c",
               "hostname; pwd; id -u; cat /data/f; touch /x 2>/dev/null || echo ro; "
               "ip link | grep -c UP").stdout.splitlines()
    assert out == ["box", "/tmp", "65534", "from host", "ro", "2"]  # lo, and eth0


def test_monitor_killed_reports_exit_255_and_leaks_nothing(user: User) -> None:
    cid = user("run", "-d", "busybox", "sleep", "100").stdout.strip()
    user.ids.add(cid)
    pid_file = user.home / "run" / "containers" / cid / "monitor" / "monitor.pid"
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "Exited (255)" not in user("ps", "-a").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _mounts_under(user.home) == []
    user("rm", cid)


def test_an_image_a_container_uses_is_not_removed(user: User) -> None:
    cid = user("create", "--name", "keeper", "busybox", "true").stdout.strip()
    user.ids.add(cid)
    refused = user("rmi", "busybox", ok=False)
    assert refused.returncode == 1 and "Error:" in refused.stderr
    assert user("images", "-q").stdout.strip()
    user("image", "prune", "-a", "-f")
    assert user("images", "-q").stdout.strip(), "prune -a removed an image in use"
    user("rm", "keeper")
    user("rmi", "busybox")


def test_the_vfs_driver_leaves_no_mount(user: User) -> None:
    # vfs snapshots are bind mounts from the same filesystem, which os.path.ismount
    # does not see: the leftovers check of the fixture would.
    user.base += ["--storage-driver", "vfs"]
    user("image", "bootstrap", "busybox")
    assert user("run", "--rm", "busybox", "echo", "hi").stdout == "hi\n"
    cid = user("run", "-d", "busybox", "sleep", "60").stdout.strip()
    user.ids.add(cid)
    user("rm", "-f", cid)
