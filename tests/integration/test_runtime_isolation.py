"""What a container is isolated from, through ``dockyard-runtime run``, as root.

Its own PID 1, hostname, mounts, user and groups, capabilities, rlimits, cgroup
limits that hold (memory, pids), a user namespace with mapped ids, a network
namespace joined by path, sysctls, a read-only root, and ``--no-pivot``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(180),
]

MiB = 1 << 20
DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def output_of(dy: Any, script: str, *flags: str, **overrides: Any) -> str:
    """Run ``sh -c SCRIPT`` in a new container; it must succeed; its stdout."""
    result = dy.sh(script, *flags, **overrides)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr}{result.stdout}"
    return str(result.stdout)


def status_fields(text: str) -> dict[str, str]:
    """The fields of a /proc/PID/status text."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


# -- processes, hostname, mounts ----------------------------------------------------


def test_the_process_is_pid_1_and_sees_only_its_own(dy: Any) -> None:
    out = output_of(dy, "echo $$; sleep 30 & ls /proc | grep -E '^[0-9]+$' | sort -n | xargs")
    pid, procs = out.splitlines()
    assert pid == "1"
    # sh, the background sleep, and the pipeline's processes; nothing of the host.
    numbers = [int(p) for p in procs.split()]
    assert numbers[0] == 1
    assert max(numbers) < 20, numbers


def test_ps_inside_shows_only_the_container(dy: Any) -> None:
    # Wait for the background job to have become sleep before listing.
    out = output_of(dy, "sleep 30 & until tr '\\0' ' ' < /proc/$!/cmdline | grep -q '^sleep 30'; "
                        "do :; done; "
                        "ps -o pid,args; true")
    rows = [line.split(maxsplit=1) for line in out.splitlines()[1:]]
    # busybox shows the applets it runs itself as {name}.
    assert sorted(args.split()[0].strip("{}") for _, args in rows) == ["ps", "sh", "sleep"]
    assert rows[0][0] == "1" and rows[0][1].startswith("sh -c")


def test_own_hostname(dy: Any) -> None:
    assert output_of(dy, "hostname; cat /proc/sys/kernel/hostname",
                     hostname="box-1") == "box-1\nbox-1\n"
    assert os.uname().nodename != "box-1"


def test_only_its_own_mounts(dy: Any) -> None:
    out = output_of(dy, "test -e /work && echo work-visible; "
                        "cut -d' ' -f5 /proc/self/mountinfo")
    assert "work-visible" not in out
    points = out.split()
    assert "/" in points
    allowed = ("/proc", "/dev", "/sys")
    strangers = [p for p in points if p != "/" and not p.startswith(allowed)]
    assert strangers == [], f"host mounts visible in the container: {strangers}"


# -- user, capabilities, rlimits ----------------------------------------------------


def test_user_and_groups_from_process_user(dy: Any) -> None:
    out = output_of(dy, "id -u; id -g; id -G; grep -E '^(Uid|Gid|Groups):' /proc/self/status",
                    process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}})
    lines = out.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert sorted(lines[2].split()) == ["10", "1000", "20"]
    status = status_fields("\n".join(lines[3:]))
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert status["Groups"].split() == ["10", "20"]


def test_capabilities_are_dockers_defaults(dy: Any) -> None:
    status = status_fields(output_of(dy, "grep ^Cap /proc/self/status"))
    assert status["CapBnd"] == DOCKER_DEFAULT_CAPS
    assert status["CapPrm"] == DOCKER_DEFAULT_CAPS
    assert status["CapEff"] == DOCKER_DEFAULT_CAPS
    assert status["CapInh"] == "0000000000000000"
    assert status["CapAmb"] == "0000000000000000"


def test_no_new_privileges_is_set(dy: Any) -> None:
    status = status_fields(output_of(dy, "cat /proc/self/status"))
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def test_rlimits(dy: Any) -> None:
    assert output_of(dy, "ulimit -n; ulimit -Hn") == "1024\n1024\n"


def test_rlimits_from_the_spec(dy: Any) -> None:
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
               {"type": "RLIMIT_NPROC", "soft": 77, "hard": 77}]
    out = output_of(dy, "ulimit -n; ulimit -Hn; ulimit -u", process={"rlimits": rlimits})
    assert out == "512\n2048\n77\n"


# -- cgroup limits ------------------------------------------------------------------


def test_memory_limit_is_visible_inside(dy: Any) -> None:
    out = output_of(dy, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                        "/sys/fs/cgroup/pids/pids.max",
                    linux={"resources": {"memory": {"limit": 32 * MiB}, "pids": {"limit": 20}}})
    assert out.split() == [str(32 * MiB), "20"]


def test_memory_limit_holds(dy: Any) -> None:
    # tail keeps a line that never ends in memory: 100 MiB of it cannot fit in 32.
    result = dy.sh("head -c 100m /dev/zero | tail; echo tail=$?",
                   linux={"resources": {"memory": {"limit": 32 * MiB}}})
    assert result.returncode in (0, 137), result
    assert "tail=0" not in result.stdout
    if result.returncode == 0:
        assert "tail=137" in result.stdout  # tail, not the shell, was OOM-killed


def test_memory_limit_holds_for_tmpfs_writes(dy: Any) -> None:
    # Pages of a tmpfs count towards the memory cgroup of the writer.
    mounts = [m for m in dy.spec(["true"])["mounts"] if m["destination"] != "/dev/shm"]
    mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "nodev", "mode=1777", "size=256m"]})
    result = dy.sh("dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>&1; echo dd=$?; "
                   "du -m /dev/shm/fill",
                   mounts=mounts, linux={"resources": {"memory": {"limit": 32 * MiB}}})
    if result.returncode == 0:
        assert "dd=0" not in result.stdout, result
        size = int(result.stdout.split()[-2])
        assert size <= 32, result
    else:
        assert result.returncode == 137, result


def test_pids_limit_stops_a_fork_loop(dy: Any) -> None:
    # The loop runs in a subshell, which the failed fork ends; the outer shell then
    # counts the processes with a glob, which needs no fork.
    result = dy.sh("(for i in $(seq 100); do sleep 30 & done) 2>&1; "
                   "set -- /proc/[0-9]*; echo running=$#",
                   linux={"resources": {"pids": {"limit": 20}}})
    assert result.returncode == 0, result
    assert "can't fork" in result.stdout + result.stderr
    running = int(result.stdout.split("running=")[1].split()[0])
    assert running <= 20


# -- namespaces ---------------------------------------------------------------------


def test_user_namespace_maps_root_to_an_unprivileged_host_user(
        dy: Any, request: pytest.FixtureRequest) -> None:
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    namespaces = dy.spec(["true"])["linux"]["namespaces"] + [{"type": "user"}]
    # The container's root is host uid 100000: the bundle must be reachable by it,
    # which the test's own 0700 temporary directory is not.
    shared = Path(tempfile.mkdtemp(prefix="dockyard-userns-", dir="/var/tmp"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    cid = dy.start(["sh", "-c", "id > /dev/shm/id; exec sleep 300"], parent=shared, linux={
        "namespaces": namespaces, "uidMappings": mapping, "gidMappings": mapping})
    pid = dy.state(cid)["pid"]
    inside = dy.wait_for(lambda: _read(f"/proc/{pid}/root/dev/shm/id"), what="id")
    assert inside.startswith("uid=0(root) gid=0(root)"), inside
    assert dy.host_status(pid, "Uid").split() == ["100000"] * 4
    assert dy.host_status(pid, "Gid").split() == ["100000"] * 4
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
    # Root of the user namespace is no one on the host: it cannot touch host files.
    result = dy("exec", cid, "sh", "-c", "echo x > /proc/sys/kernel/hostname")
    assert result.returncode != 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace made with ``ip netns add``, with a veth pair in it."""
    name = f"dy-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "dyprobe0", "type", "veth",
                        "peer", "name", "dyprobe1"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_joins_a_network_namespace_by_path(dy: Any, netns: str) -> None:
    path = f"/run/netns/{netns}"
    namespaces = [ns for ns in dy.spec(["true"])["linux"]["namespaces"]
                  if ns["type"] != "network"] + [{"type": "network", "path": path}]
    out = output_of(dy, "readlink /proc/self/ns/net; ip -o link show | cut -d: -f2",
                    linux={"namespaces": namespaces})
    link, *names = out.splitlines()
    assert link == f"net:[{os.stat(path).st_ino}]"
    assert "dyprobe0" in [n.strip().split("@")[0] for n in names]


def test_a_new_network_namespace_has_only_loopback(dy: Any) -> None:
    out = output_of(dy, "ip -o link show | cut -d: -f2")
    assert [n.strip() for n in out.splitlines()] == ["lo"]


def test_sysctl_in_a_new_network_namespace(dy: Any) -> None:
    host = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    out = output_of(dy, "cat /proc/sys/net/ipv4/ip_forward",
                    linux={"sysctl": {"net.ipv4.ip_forward": "1"}})
    assert out == "1\n"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host


# -- the root filesystem ------------------------------------------------------------


def test_read_only_root_refuses_writes(dy: Any) -> None:
    result = dy.sh("touch /newfile", root={"path": "rootfs", "readonly": True})
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    # The container's own tmpfs mounts stay writable.
    assert output_of(dy, "echo ok > /dev/shm/f && cat /dev/shm/f",
                     root={"path": "rootfs", "readonly": True}) == "ok\n"


def test_writable_root(dy: Any) -> None:
    bundle_out = output_of(dy, "echo written > /newfile && cat /newfile",
                           root={"path": "rootfs", "readonly": False})
    assert bundle_out == "written\n"


def test_no_pivot(dy: Any) -> None:
    out = output_of(dy, "echo $$; hostname; test -e /work || echo no-work", "--no-pivot",
                    hostname="nopivot")
    assert out == "1\nnopivot\nno-work\n"


def test_cwd_and_env(dy: Any) -> None:
    out = output_of(dy, "pwd; echo $FOO",
                    process={"cwd": "/tmp", "env": ["PATH=/bin:/usr/bin", "FOO=bar"]})
    assert out == "/tmp\nbar\n"


def test_time_namespace_offsets_move_the_containers_clocks(dy: Any) -> None:
    day = 86400
    out = dy.sh("cut -d' ' -f1 /proc/uptime", linux={
        "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network",
                                             "time")],
        "timeOffsets": {"boottime": {"secs": day, "nanosecs": 0}}})
    assert out.returncode == 0, out.stderr
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    assert float(out.stdout) >= host_uptime + day - 5
