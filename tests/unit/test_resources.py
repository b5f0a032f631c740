"""OCI linux.resources to cgroup v1 and v2 files: the conversions, as runc makes them."""

from __future__ import annotations

import pytest

from dockyard.errors import InvalidArgument
from dockyard.linux.cgroups.devices_bpf import DeviceRule
from dockyard.oci.runtime import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
    LinuxThrottleDevice,
    LinuxWeightDevice,
)
from dockyard.runtime.resources import (
    cgroup_files,
    cpu_weight,
    device_rules,
    device_writes_v1,
    io_weight,
    swap_max,
)

MiB = 1 << 20

FULL = LinuxResources(
    memory=LinuxMemory(
        limit=256 * MiB,
        reservation=128 * MiB,
        swap=512 * MiB,
        kernel=64 * MiB,
        swappiness=10,
        disable_oom_killer=True,
    ),
    cpu=LinuxCPU(shares=1024, quota=50000, period=100000, cpus="0-1", mems="0"),
    pids=LinuxPids(limit=100),
    block_io=LinuxBlockIO(
        weight=500,
        weight_device=[LinuxWeightDevice(major=8, minor=0, weight=300)],
        throttle_read_bps_device=[
            LinuxThrottleDevice(major=8, minor=0, rate=1 << 20),
            LinuxThrottleDevice(major=8, minor=16, rate=2 << 20),
        ],
        throttle_write_iops_device=[LinuxThrottleDevice(major=8, minor=0, rate=100)],
    ),
    hugepage_limits=[LinuxHugepageLimit(page_size="2MB", limit=8 * MiB)],
)


def test_full_resources_on_v1() -> None:
    assert cgroup_files(FULL, "v1") == {
        "memory.limit_in_bytes": str(256 * MiB),
        "memory.memsw.limit_in_bytes": str(512 * MiB),
        "memory.soft_limit_in_bytes": str(128 * MiB),
        "memory.swappiness": "10",
        "memory.oom_control": "1",
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "50000",
        "cpuset.cpus": "0-1",
        "cpuset.mems": "0",
        "pids.max": "100",
        "blkio.weight": "500",
        "blkio.weight_device": "8:0 300",
        "blkio.throttle.read_bps_device": f"8:0 {1 << 20}\n8:16 {2 << 20}",
        "blkio.throttle.write_iops_device": "8:0 100",
        "hugetlb.2MB.limit_in_bytes": str(8 * MiB),
    }


def test_full_resources_on_v2() -> None:
    assert cgroup_files(FULL, "v2") == {
        "memory.swap.max": str(256 * MiB),  # memory+swap minus memory
        "memory.max": str(256 * MiB),
        "memory.low": str(128 * MiB),
        "cpu.weight": "39",
        "cpu.max": "50000 100000",
        "cpuset.cpus": "0-1",
        "cpuset.mems": "0",
        "pids.max": "100",
        "io.weight": f"default {io_weight(500)}\n8:0 {io_weight(300)}",
        "io.max": f"8:0 rbps={1 << 20}\n8:16 rbps={2 << 20}\n8:0 wiops=100",
        "hugetlb.2MB.max": str(8 * MiB),
    }


def test_unlimited_values() -> None:
    res = LinuxResources(
        memory=LinuxMemory(limit=-1),
        cpu=LinuxCPU(quota=-1, period=100000),
        pids=LinuxPids(limit=-1),
    )
    assert cgroup_files(res, "v1") == {
        "memory.limit_in_bytes": "-1",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "pids.max": "max",
    }
    # An unlimited memory with swap unset is an unlimited swap too, as on v1.
    assert cgroup_files(res, "v2") == {
        "memory.swap.max": "max",
        "memory.max": "max",
        "cpu.max": "max 100000",
        "pids.max": "max",
    }
    assert cgroup_files(LinuxResources(pids=LinuxPids(limit=0)), "v2") == {"pids.max": "max"}


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (1, 1)])
def test_cpu_weight(shares: int, weight: int) -> None:
    assert cpu_weight(shares) == weight


@pytest.mark.parametrize(("blkio", "io"), [(10, 1), (500, 4950), (1000, 10000)])
def test_io_weight(blkio: int, io: int) -> None:
    assert io_weight(blkio) == io


@pytest.mark.parametrize(
    ("swap", "limit", "expected"),
    [
        (None, 100, None),
        (0, 100, None),
        (-1, 100, "max"),
        (None, -1, "max"),
        (300, 100, "200"),
        (100, 100, "0"),
    ],
)
def test_swap_max(swap: int | None, limit: int | None, expected: str | None) -> None:
    assert swap_max(swap, limit) == expected


@pytest.mark.parametrize(("swap", "limit"), [(50, 100), (200, None), (200, -1)])
def test_swap_max_refuses_inconsistent_limits(swap: int, limit: int | None) -> None:
    with pytest.raises(InvalidArgument, match="memory"):
        swap_max(swap, limit)


def test_what_a_version_cannot_express_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="realtime"):
        cgroup_files(LinuxResources(cpu=LinuxCPU(realtime_runtime=1000)), "v2")
    with pytest.raises(InvalidArgument, match="unified"):
        cgroup_files(LinuxResources(unified={"memory.high": "1G"}), "v1")
    with pytest.raises(InvalidArgument, match="swappiness"):
        cgroup_files(LinuxResources(memory=LinuxMemory(swappiness=101)), "v1")
    with pytest.raises(InvalidArgument, match="version"):
        cgroup_files(LinuxResources(), "v3")


def test_realtime_on_v1() -> None:
    res = LinuxResources(cpu=LinuxCPU(realtime_period=1000000, realtime_runtime=950000))
    assert cgroup_files(res, "v1") == {
        "cpu.rt_period_us": "1000000",
        "cpu.rt_runtime_us": "950000",
    }


def test_unified_files_override_on_v2() -> None:
    res = LinuxResources(
        memory=LinuxMemory(limit=MiB), unified={"memory.max": "2M", "memory.high": "1M"}
    )
    assert cgroup_files(res, "v2") == {"memory.max": "2M", "memory.high": "1M"}


DOCKER_DEVICES = [
    LinuxDeviceCgroup(allow=False, access="rwm"),
    LinuxDeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),
    LinuxDeviceCgroup(allow=True, type="c", major=136, access="rwm"),
    LinuxDeviceCgroup(allow=False, type="c", major=1, minor=3, access="w"),
]


def test_device_writes_v1_keep_the_order() -> None:
    assert device_writes_v1(DOCKER_DEVICES) == [
        ("devices.deny", "a"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "c 136:* rwm"),
        ("devices.deny", "c 1:3 w"),
    ]


def test_device_rules_fill_in_defaults() -> None:
    assert device_rules(DOCKER_DEVICES) == [
        DeviceRule(False, "a", -1, -1, "rwm"),
        DeviceRule(True, "c", 1, 3, "rwm"),
        DeviceRule(True, "c", 136, -1, "rwm"),
        DeviceRule(False, "c", 1, 3, "w"),
    ]
