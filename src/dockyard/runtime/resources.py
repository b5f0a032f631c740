"""OCI ``linux.resources`` to cgroup control files, for cgroup v1 and v2.

The drivers in ``dockyard.linux.cgroups`` write whatever files they are given; the
decisions live here: which file stands for which OCI field on each version, how values
convert between the two (the formulas are runc's, so that a bundle gets the same limits
under dockyard, runc and crun), and what is refused.

    cgroup_files(resources, "v1" | "v2")   {file: value} for everything but devices
    device_writes_v1(devices)              ordered devices.allow / devices.deny writes
    device_rules(devices)                  the rules of the v2 eBPF device filter
    apply_resources(cgroup, resources)     all of the above, on a driver
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dockyard.errors import InvalidArgument
from dockyard.linux.cgroups.devices_bpf import DeviceRule
from dockyard.linux.cgroups.v2 import V2Cgroup

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dockyard.linux.cgroups import Cgroup
    from dockyard.oci.runtime import (
        LinuxBlockIO,
        LinuxCPU,
        LinuxDeviceCgroup,
        LinuxMemory,
        LinuxResources,
        LinuxThrottleDevice,
    )

# v1 cpu.shares range, as the kernel clamps it (MIN_SHARES, MAX_SHARES).
_MIN_SHARES, _MAX_SHARES = 2, 262144


def _max(value: int) -> str:
    # v1 files take -1 for "no limit"; v2 files take the word "max".
    return "max" if value == -1 else str(value)


def cpu_weight(shares: int) -> int:
    """Convert v1 ``cpu.shares`` [2, 262144] to v2 ``cpu.weight`` [1, 10000] (runc's map)."""
    shares = min(max(shares, _MIN_SHARES), _MAX_SHARES)
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(weight: int) -> int:
    """Convert v1 ``blkio.weight`` [10, 1000] to v2 ``io.weight`` [1, 10000] (runc's map)."""
    return 1 + ((min(max(weight, 10), 1000) - 10) * 9999) // 990


def swap_max(swap: int | None, limit: int | None) -> str | None:
    """Return v2 ``memory.swap.max`` for OCI ``swap`` (memory+swap, as v1 has it).

    v2 limits swap alone, so the value is ``swap - limit``; -1 means unlimited, and an
    unset swap with an unlimited memory is unlimited too (as on v1). None: leave unset.
    """
    if swap is None or swap == 0:
        return "max" if limit == -1 else None
    if swap == -1:
        return "max"
    if limit is None or limit <= 0:
        raise InvalidArgument("memory swap limit needs a memory limit: set memory.limit too")
    if swap < limit:
        raise InvalidArgument(
            f"memory+swap limit {swap} is below the memory limit {limit}: raise memory.swap"
        )
    return str(swap - limit)


def _memory(mem: LinuxMemory, version: str) -> dict[str, str]:
    # Kernel memory (kernel, kernel_tcp) is ignored: v2 accounts it with the rest and
    # recent kernels refuse v1 memory.kmem.limit_in_bytes.
    files: dict[str, str] = {}
    if version == "v1":
        # memory.limit_in_bytes before memsw: the v1 driver swaps them when needed.
        if mem.limit is not None:
            files["memory.limit_in_bytes"] = str(mem.limit)
        if mem.swap is not None and mem.swap != 0:
            files["memory.memsw.limit_in_bytes"] = str(mem.swap)
        if mem.reservation is not None:
            files["memory.soft_limit_in_bytes"] = str(mem.reservation)
        if mem.swappiness is not None:
            if mem.swappiness > 100:
                raise InvalidArgument(f"memory swappiness {mem.swappiness} is above 100")
            files["memory.swappiness"] = str(mem.swappiness)
        if mem.disable_oom_killer:
            files["memory.oom_control"] = "1"
        return files
    # v2 has no swappiness and no way to disable the OOM killer: both are ignored, as
    # runc and crun do.
    swap = swap_max(mem.swap, mem.limit)
    if swap is not None:
        files["memory.swap.max"] = swap
    if mem.limit is not None:
        files["memory.max"] = _max(mem.limit)
    if mem.reservation is not None:
        files["memory.low"] = _max(mem.reservation)
    return files


def _cpu(cpu: LinuxCPU, version: str) -> dict[str, str]:
    files: dict[str, str] = {}
    if version == "v1":
        if cpu.shares:
            files["cpu.shares"] = str(cpu.shares)
        # The period first: the kernel checks a quota against the period in place.
        if cpu.period:
            files["cpu.cfs_period_us"] = str(cpu.period)
        if cpu.quota is not None and cpu.quota != 0:
            files["cpu.cfs_quota_us"] = str(cpu.quota)
        if cpu.burst is not None:
            files["cpu.cfs_burst_us"] = str(cpu.burst)
        if cpu.realtime_period:
            files["cpu.rt_period_us"] = str(cpu.realtime_period)
        if cpu.realtime_runtime is not None and cpu.realtime_runtime != 0:
            files["cpu.rt_runtime_us"] = str(cpu.realtime_runtime)
    else:
        if cpu.shares:
            files["cpu.weight"] = str(cpu_weight(cpu.shares))
        if cpu.quota or cpu.period:
            # cpu.max is "$QUOTA $PERIOD"; a quota of -1 (or none) is "max".
            value = str(cpu.quota) if cpu.quota and cpu.quota > 0 else "max"
            files["cpu.max"] = f"{value} {cpu.period}" if cpu.period else value
        if cpu.burst is not None:
            files["cpu.max.burst"] = str(cpu.burst)
        if cpu.realtime_period or cpu.realtime_runtime:
            raise InvalidArgument(
                "realtime CPU limits (cpu.realtimeRuntime, cpu.realtimePeriod) need cgroup v1"
            )
    if cpu.idle is not None:
        files["cpu.idle"] = str(cpu.idle)
    if cpu.cpus:
        files["cpuset.cpus"] = cpu.cpus
    if cpu.mems:
        files["cpuset.mems"] = cpu.mems
    return files


def _throttle(devices: list[LinuxThrottleDevice] | None, fmt: str) -> list[str]:
    # One line per device; the drivers write a multi-line value a line at a time.
    return [fmt.format(d.major, d.minor, d.rate) for d in devices or [] if d.rate is not None]


def _block_io(bio: LinuxBlockIO, version: str) -> dict[str, str]:
    files: dict[str, str] = {}
    weights = bio.weight_device or []
    if version == "v1":
        if bio.weight:
            files["blkio.weight"] = str(bio.weight)
        if bio.leaf_weight:
            files["blkio.leaf_weight"] = str(bio.leaf_weight)
        throttles = {
            "blkio.weight_device": [
                f"{d.major}:{d.minor} {d.weight}" for d in weights if d.weight is not None
            ],
            "blkio.leaf_weight_device": [
                f"{d.major}:{d.minor} {d.leaf_weight}" for d in weights if d.leaf_weight is not None
            ],
            "blkio.throttle.read_bps_device": _throttle(bio.throttle_read_bps_device, "{}:{} {}"),
            "blkio.throttle.write_bps_device": _throttle(bio.throttle_write_bps_device, "{}:{} {}"),
            "blkio.throttle.read_iops_device": _throttle(bio.throttle_read_iops_device, "{}:{} {}"),
            "blkio.throttle.write_iops_device": _throttle(
                bio.throttle_write_iops_device, "{}:{} {}"
            ),
        }
    else:
        # v2 has no leaf weights; each io.max line sets one key of one device, and the
        # kernel keeps the device's other keys as they were.
        throttles = {
            "io.weight": ([f"default {io_weight(bio.weight)}"] if bio.weight else [])
            + [
                f"{d.major}:{d.minor} {io_weight(d.weight)}"
                for d in weights
                if d.weight is not None
            ],
            "io.max": _throttle(bio.throttle_read_bps_device, "{}:{} rbps={}")
            + _throttle(bio.throttle_write_bps_device, "{}:{} wbps={}")
            + _throttle(bio.throttle_read_iops_device, "{}:{} riops={}")
            + _throttle(bio.throttle_write_iops_device, "{}:{} wiops={}"),
        }
    files.update({name: "\n".join(lines) for name, lines in throttles.items() if lines})
    return files


def cgroup_files(resources: LinuxResources, version: str) -> dict[str, str]:
    """Return the control files and values that apply ``resources`` on cgroup ``version``.

    Devices are not included (see ``device_writes_v1`` and ``device_rules``). A value of
    several lines is one write per line. Raises InvalidArgument for what the version
    cannot express (realtime CPU on v2, ``unified`` on v1) or inconsistent limits.
    """
    if version not in ("v1", "v2"):
        raise InvalidArgument(f"unknown cgroup version {version!r}: use v1 or v2")
    files: dict[str, str] = {}
    if resources.memory is not None:
        files.update(_memory(resources.memory, version))
    if resources.cpu is not None:
        files.update(_cpu(resources.cpu, version))
    if resources.pids is not None:
        # 0 and -1 both mean no limit (runtime-spec: "0 or -1 for unlimited").
        limit = resources.pids.limit
        files["pids.max"] = str(limit) if limit > 0 else "max"
    if resources.block_io is not None:
        files.update(_block_io(resources.block_io, version))
    suffix = "limit_in_bytes" if version == "v1" else "max"
    for hp in resources.hugepage_limits or []:
        files[f"hugetlb.{hp.page_size}.{suffix}"] = str(hp.limit)
    if resources.unified:
        if version == "v1":
            raise InvalidArgument("linux.resources.unified needs cgroup v2; this host runs v1")
        # Raw v2 files: written last, so they override the fields above.
        files.update(resources.unified)
    return files


def device_rules(devices: Sequence[LinuxDeviceCgroup]) -> list[DeviceRule]:
    """Return OCI device rules with their defaults filled in (any type, any number, rwm)."""
    return [
        DeviceRule(
            allow=d.allow,
            type=d.type or "a",
            major=-1 if d.major is None else d.major,
            minor=-1 if d.minor is None else d.minor,
            access=d.access or "rwm",
        )
        for d in devices
    ]


def device_writes_v1(devices: Sequence[LinuxDeviceCgroup]) -> list[tuple[str, str]]:
    """Return the v1 ``devices.allow`` / ``devices.deny`` writes for ``devices``, in order.

    v1 keeps a default (allow or deny all) and a list of exceptions: writing ``a`` to
    ``devices.deny`` sets the default to deny and clears the list, so a spec that starts
    by denying everything (Docker's does) is a deny-all write followed by the allows.
    The order matters, which is why this is a list and not a mapping.
    """
    writes = []
    for rule in device_rules(devices):
        name = "devices.allow" if rule.allow else "devices.deny"
        if rule.type == "a":
            # The kernel reads only the first letter of an "a" line: it sets the default
            # and clears the exceptions whatever numbers and access follow.
            writes.append((name, "a"))
            continue
        major = "*" if rule.major == -1 else str(rule.major)
        minor = "*" if rule.minor == -1 else str(rule.minor)
        writes.append((name, f"{rule.type} {major}:{minor} {rule.access}"))
    return writes


def apply_resources(cgroup: Cgroup, resources: LinuxResources) -> None:
    """Apply ``resources`` to ``cgroup``: devices first, then the other control files."""
    if resources.devices:
        if isinstance(cgroup, V2Cgroup):
            cgroup.set_devices_v2(device_rules(resources.devices))
        else:
            cgroup.set(device_writes_v1(resources.devices))
    cgroup.set(cgroup_files(resources, cgroup.version))
