"""The cgroup drivers on the real kernel, as root.

This host is hybrid: v1 controllers under /sys/fs/cgroup/<controller> and a cgroup2
mount at /sys/fs/cgroup/unified with (almost) no controllers. The v1 driver is driven
for real with limits that hold; the v2 driver is driven for real on the cgroup2 mount
for what needs no controller (processes, freezer, kill, device filter), and on a
temporary directory laid out like a v2 cgroup for the controller files it writes.

Test cgroups are named ``dockyard-test-<random>`` and taken relative to this process's
own cgroups, so that they sit below the cgroups this test run is accounted in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard.errors import InvalidArgument
from dockyard.linux.cgroups import Cgroup, detect_mode, open_cgroup
from dockyard.linux.cgroups.devices_bpf import DeviceRule
from dockyard.linux.cgroups.v1 import V1Cgroup
from dockyard.linux.cgroups.v2 import V2Cgroup
from dockyard.oci.runtime import (
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
)
from dockyard.runtime.resources import apply_resources, cgroup_files

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

BUSYBOX = "/usr/bin/busybox"
UNIFIED = "/sys/fs/cgroup/unified"
MiB = 1 << 20

Spawn = Callable[..., subprocess.Popen[str]]


def unique_name() -> str:
    return f"dockyard-test-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.fixture
def tracked() -> Iterator[list[tuple[Cgroup, list[subprocess.Popen[str]]]]]:
    """Cgroups and their children made by a test: killed, reaped and removed after it."""
    made: list[tuple[Cgroup, list[subprocess.Popen[str]]]] = []
    yield made
    for cg, children in made:
        try:
            for child in children:
                if child.poll() is None:
                    child.kill()
                child.wait()
                for pipe in (child.stdout, child.stderr):
                    if pipe is not None:
                        pipe.close()
            if cg.exists():
                if cg.is_frozen():  # frozen tasks would not die of SIGKILL
                    cg.thaw()
                cg.kill(signal.SIGKILL)
                wait_until(lambda cg=cg: not cg.pids())
        finally:
            cg.destroy()


def _spawner(cg: Cgroup, children: list[subprocess.Popen[str]]) -> Spawn:
    def spawn(*argv: str) -> subprocess.Popen[str]:
        # The child waits on stdin until it has been moved into the cgroup, so that
        # whatever it runs is accounted there from its first instruction.
        go_r, go_w = os.pipe()
        try:
            child = subprocess.Popen(
                [BUSYBOX, "sh", "-c", 'read _; exec "$@"', "sh", *argv],
                stdin=go_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            children.append(child)
            cg.add(child.pid)
            os.write(go_w, b"go\n")
        finally:
            os.close(go_r)
            os.close(go_w)
        return child

    return spawn


@pytest.fixture
def v1(tracked: list[tuple[Cgroup, list[subprocess.Popen[str]]]]) -> tuple[Cgroup, Spawn]:
    """A created v1 cgroup (chosen by open_cgroup on this hybrid host) and a spawner."""
    cg = open_cgroup(unique_name())
    children: list[subprocess.Popen[str]] = []
    tracked.append((cg, children))
    cg.create()
    return cg, _spawner(cg, children)


@pytest.fixture
def v2(tracked: list[tuple[Cgroup, list[subprocess.Popen[str]]]]) -> tuple[V2Cgroup, Spawn]:
    """A created cgroup in the cgroup2 mount of this hybrid host, and a spawner."""
    cg = V2Cgroup("/" + unique_name(), UNIFIED)
    children: list[subprocess.Popen[str]] = []
    tracked.append((cg, children))
    cg.create()
    return cg, _spawner(cg, children)


# ---- v1, the driver this host uses ---------------------------------------------------


def test_host_is_hybrid_and_open_cgroup_picks_v1() -> None:
    assert detect_mode() == "hybrid"
    cg = open_cgroup(unique_name())
    assert isinstance(cg, V1Cgroup)
    assert cg.version == "v1"
    assert not cg.exists()


def test_v1_memory_limit_is_set_and_a_child_is_in_every_hierarchy(v1: tuple[Cgroup, Spawn]):
    cg, spawn = v1
    paths = cg.paths()
    assert {"memory", "pids", "freezer", "devices", "cpuset", "unified"} <= paths.keys()
    assert all(os.path.isdir(d) for d in paths.values())

    cg.set({"memory.limit_in_bytes": str(64 * MiB)})
    assert cg.read("memory.limit_in_bytes") == str(64 * MiB)

    child = spawn("sleep", "30")
    assert cg.pids() == [child.pid]
    # /proc/PID/cgroup names the cgroup on every line, the 0:: (cgroup2) one included.
    name = os.path.basename(paths["pids"])
    with open(f"/proc/{child.pid}/cgroup") as f:
        lines = f.read().splitlines()
    assert all(line.endswith("/" + name) for line in lines), lines
    assert any(line.startswith("0::") for line in lines)


def test_v1_new_cpuset_gets_the_parents_cpus(v1: tuple[Cgroup, Spawn]):
    cg, _spawn = v1
    parent = os.path.dirname(cg.paths()["cpuset"])
    for name in ("cpuset.cpus", "cpuset.mems"):
        assert cg.read(name) == Path(parent, name).read_text().strip() != ""


def test_v1_memory_limit_oom_kills_a_process_allocating_past_it(v1: tuple[Cgroup, Spawn]):
    cg, spawn = v1
    apply_resources(cg, LinuxResources(memory=LinuxMemory(limit=48 * MiB)))
    # bytes * n writes every byte, so the pages are really charged to the cgroup.
    hog = spawn(sys.executable, "-c", "b = b'x' * (256 << 20); print('survived')")
    out, _err = hog.communicate(timeout=60)
    assert hog.returncode == -signal.SIGKILL
    assert "survived" not in out
    assert cg.oom_kill_count() >= 1


def test_v1_pids_max_stops_forks(v1: tuple[Cgroup, Spawn]):
    cg, spawn = v1
    apply_resources(cg, LinuxResources(pids=LinuxPids(limit=4)))
    assert cg.read("pids.max") == "4"
    # The shell gives up at the first fork the kernel refuses (EAGAIN).
    forker = spawn(
        BUSYBOX, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 30 >/dev/null 2>&1 & done"
    )
    _out, err = forker.communicate(timeout=10)
    assert "can't fork" in err
    assert len(cg.pids()) == 3  # the shell's first three sleeps; the shell itself is gone
    assert Path(cg.paths()["pids"], "pids.events").read_text().split()[1] != "0"


def test_v1_freeze_and_thaw(v1: tuple[Cgroup, Spawn]):
    cg, spawn = v1
    child = spawn("sleep", "30")
    assert not cg.is_frozen()
    cg.freeze()
    assert cg.is_frozen()
    # The v1 freezer shows its tasks in uninterruptible sleep.
    assert proc_state(child.pid) == "D"
    cg.thaw()
    assert not cg.is_frozen()
    assert proc_state(child.pid) in ("S", "R")


def test_v1_kill_ends_every_process_and_destroy_leaves_nothing(v1: tuple[Cgroup, Spawn]):
    cg, spawn = v1
    shell = spawn(BUSYBOX, "sh", "-c", "sleep 30 & sleep 30 & sleep 30 & wait")
    assert wait_until(lambda: len(cg.pids()) == 4)
    cg.kill(signal.SIGKILL)
    shell.wait(timeout=5)
    assert wait_until(lambda: not cg.pids())
    cg.destroy()
    assert not cg.exists()
    assert not any(os.path.exists(d) for d in cg.paths().values())
    cg.destroy()  # already gone: fine


def test_v1_devices_deny_all_then_allow(v1: tuple[Cgroup, Spawn]):
    cg, spawn = v1
    docker_like = [
        LinuxDeviceCgroup(allow=False, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),
    ]
    apply_resources(cg, LinuxResources(devices=docker_like))
    assert cg.read("devices.list") == "c 1:3 rwm"
    child = spawn(BUSYBOX, "sh", "-c", "cat /dev/null && echo null-ok; head -c1 /dev/zero | wc -c")
    out, err = child.communicate(timeout=10)
    assert out.split() == ["null-ok", "0"]
    assert "Operation not permitted" in err


def test_v1_write_errors_name_the_file_and_value(v1: tuple[Cgroup, Spawn]):
    cg, _spawn = v1
    with pytest.raises(InvalidArgument, match=r"cannot write 'lots' to .*memory.limit_in_bytes"):
        cg.set({"memory.limit_in_bytes": "lots"})
    with pytest.raises(InvalidArgument, match="net_prio"):
        cg.set({"net_prio.ifpriomap": "eth0 1"})


def test_v1_memory_and_swap_are_written_in_the_order_the_kernel_accepts(
    v1: tuple[Cgroup, Spawn],
):
    cg, _spawn = v1
    if not os.path.exists(os.path.join(cg.paths()["memory"], "memory.memsw.limit_in_bytes")):
        pytest.skip("no swap accounting")
    cg.set(cgroup_files(LinuxResources(memory=LinuxMemory(limit=32 * MiB, swap=32 * MiB)), "v1"))
    # Raising both: memsw must go first, else the new limit is above the old memsw.
    cg.set(cgroup_files(LinuxResources(memory=LinuxMemory(limit=96 * MiB, swap=128 * MiB)), "v1"))
    assert cg.read("memory.limit_in_bytes") == str(96 * MiB)
    assert cg.read("memory.memsw.limit_in_bytes") == str(128 * MiB)


def test_absolute_path_is_taken_from_the_hierarchy_roots(
    tracked: list[tuple[Cgroup, list[subprocess.Popen[str]]]],
):
    name = unique_name()
    cg = open_cgroup(f"/{name}/inner")
    tracked.append((cg, []))
    assert cg.paths()["memory"] == f"/sys/fs/cgroup/memory/{name}/inner"
    assert cg.paths()["unified"] == f"{UNIFIED}/{name}/inner"
    cg.create()
    assert cg.exists()
    cg.destroy()
    assert not cg.exists()
    # The parent made on the way is the caller's to remove, as with runc.
    open_cgroup(f"/{name}").destroy()
    assert not os.path.exists(f"/sys/fs/cgroup/memory/{name}")


# ---- v2, for real on the cgroup2 mount ------------------------------------------------


def test_v2_add_pids_freeze_thaw_kill_destroy(v2: tuple[V2Cgroup, Spawn]):
    cg, spawn = v2
    spinner = spawn(BUSYBOX, "sh", "-c", "while :; do :; done")
    child = spawn("sleep", "30")
    assert cg.pids() == sorted([spinner.pid, child.pid])
    with open(f"/proc/{child.pid}/cgroup") as f:
        assert f"0::/{os.path.basename(cg.paths()['unified'])}\n" in f.read()

    cg.freeze()
    assert cg.is_frozen()
    assert cg.read("cgroup.freeze") == "1"
    # A frozen spinner gets no CPU time.
    before = cpu_ticks(spinner.pid)
    time.sleep(0.3)
    assert cpu_ticks(spinner.pid) == before
    cg.thaw()
    assert not cg.is_frozen()
    assert wait_until(lambda: cpu_ticks(spinner.pid) > before)

    cg.kill(signal.SIGKILL)  # through cgroup.kill
    assert spinner.wait(timeout=5) == -signal.SIGKILL
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert wait_until(lambda: not cg.pids())
    cg.destroy()
    assert not cg.exists()


def test_v2_kill_with_another_signal_reaches_every_process(v2: tuple[V2Cgroup, Spawn]):
    cg, spawn = v2
    shell = spawn(BUSYBOX, "sh", "-c", "sleep 30 & sleep 30 & wait")
    assert wait_until(lambda: len(cg.pids()) == 3)
    cg.kill(signal.SIGTERM)
    assert shell.wait(timeout=5) == -signal.SIGTERM
    assert wait_until(lambda: not cg.pids())


def test_v2_relative_path_is_below_own_cgroup() -> None:
    with open("/proc/self/cgroup") as f:
        own = next(line[3:].strip() for line in f if line.startswith("0::"))
    cg = V2Cgroup("a/b", UNIFIED)
    assert cg.paths() == {"unified": os.path.join(UNIFIED + own, "a/b").replace("//", "/")}


def test_v2_device_filter_is_enforced_and_replaced(v2: tuple[V2Cgroup, Spawn]):
    cg, spawn = v2
    probe = "cat /dev/null && echo null-ok; head -c1 /dev/zero | wc -c"

    cg.set_devices_v2([DeviceRule(False, "a", -1, -1, "rwm"), DeviceRule(True, "c", 1, 3, "rw")])
    out, err = spawn(BUSYBOX, "sh", "-c", probe).communicate(timeout=10)
    assert out.split() == ["null-ok", "0"]
    assert "Operation not permitted" in err

    # The new program replaces the old one: were both attached, both would have to allow.
    cg.set_devices_v2([DeviceRule(True, "c", 1, 5, "r")])
    out, _err = spawn(BUSYBOX, "sh", "-c", probe).communicate(timeout=10)
    assert out.split() == ["1"]

    # Last matching rule wins: allow everything, then deny read of /dev/zero.
    cg.set_devices_v2([DeviceRule(True, "a", -1, -1, "rwm"), DeviceRule(False, "c", 1, 5, "r")])
    out, _err = spawn(BUSYBOX, "sh", "-c", probe).communicate(timeout=10)
    assert out.split() == ["null-ok", "0"]

    # A catch-all last cuts the program short (the verifier refuses dead code).
    cg.set_devices_v2([DeviceRule(False, "c", 1, 3, "r"), DeviceRule(True, "a", -1, -1, "rwm")])
    out, _err = spawn(BUSYBOX, "sh", "-c", probe).communicate(timeout=10)
    assert out.split() == ["null-ok", "1"]


def test_v2_bad_device_rule_is_refused(v2: tuple[V2Cgroup, Spawn]):
    cg, _spawn = v2
    with pytest.raises(InvalidArgument, match="access"):
        cg.set_devices_v2([DeviceRule(True, "c", 1, 3, "rx")])


# ---- v2 controller files, on a directory laid out like a v2 cgroup -----------------

V2_FILES = [
    "cgroup.procs",
    "cgroup.freeze",
    "cgroup.events",
    "cgroup.kill",
    "memory.max",
    "memory.low",
    "memory.swap.max",
    "memory.events",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.idle",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.weight",
    "io.max",
    "hugetlb.2MB.max",
]


def fake_v2(root: Path, controllers: str) -> Path:
    """Lay out root/parent/leaf as a v2 hierarchy offering ``controllers``."""
    for level in (root, root / "parent"):
        level.mkdir(exist_ok=True)
        (level / "cgroup.controllers").write_text(controllers + "\n")
        (level / "cgroup.subtree_control").write_text("\n")
    leaf = root / "parent" / "leaf"
    leaf.mkdir()
    for name in V2_FILES:
        (leaf / name).write_text("")
    return leaf


def test_v2_set_writes_what_cgroup_files_says(tmp_path: Path):
    leaf = fake_v2(tmp_path, "cpuset cpu io memory hugetlb pids")
    resources = LinuxResources(
        memory=LinuxMemory(limit=256 * MiB, reservation=128 * MiB, swap=512 * MiB),
        cpu=LinuxCPU(shares=512, quota=50000, period=100000, cpus="0", mems="0"),
        pids=LinuxPids(limit=100),
        hugepage_limits=[LinuxHugepageLimit(page_size="2MB", limit=4 * MiB)],
    )
    files = cgroup_files(resources, "v2")
    cg = V2Cgroup("/parent/leaf", str(tmp_path))
    cg.set(files)
    assert {name: (leaf / name).read_text() for name in files} == files
    assert files["memory.swap.max"] == str(256 * MiB)
    assert files["cpu.max"] == "50000 100000"


def test_v2_set_enables_the_controller_in_every_ancestor(tmp_path: Path):
    leaf = fake_v2(tmp_path, "memory pids")
    cg = V2Cgroup("/parent/leaf", str(tmp_path))
    cg.set({"memory.max": "max"})
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory"
    assert (tmp_path / "parent" / "cgroup.subtree_control").read_text() == "+memory"
    assert (leaf / "memory.max").read_text() == "max"
    with pytest.raises(InvalidArgument, match="'io' is not available"):
        cg.set({"io.weight": "default 100"})
