"""The default OCI runtime spec: what ``runc spec`` writes, with Docker's defaults.

``default_spec`` is the skeleton a bundle's ``config.json`` starts from (and what
``dockyard-runtime spec`` prints): ``sh`` on a terminal, Docker's default capability
set, masked and read-only ``/proc`` and ``/sys`` paths, a deny-all device cgroup and
Docker's default seccomp profile.

That profile is kept in Docker's own format (``data/seccomp-default.json``), in which a
rule may apply only with some capabilities, on some architectures or from some kernel
version on. ``seccomp_from_profile`` resolves those conditions for one container the
way moby's profile loader does, giving the plain OCI ``linux.seccomp``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from typing import Any

from dockyard.errors import InvalidArgument
from dockyard.oci.runtime import (
    VERSION,
    Linux,
    LinuxCapabilities,
    LinuxDeviceCgroup,
    LinuxIDMapping,
    LinuxNamespace,
    LinuxResources,
    LinuxSeccomp,
    Mount,
    POSIXRlimit,
    Process,
    Root,
    Spec,
    User,
    convert,
)

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_READONLY_PATHS",
    "default_seccomp_profile",
    "default_spec",
    "seccomp_from_profile",
]

#: Docker's default capability set (moby ``oci/caps/defaults.go``).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

#: Paths Docker hides from the container: they leak host information or control
#: host hardware.
DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

#: Paths Docker makes read-only: writing them would change the host's kernel.
DEFAULT_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_DEFAULT_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
)

# Architecture names, as `uname -m` and Go spell them, to the names of libseccomp that
# Docker profiles use in their `arches` conditions.
_LIBSECCOMP_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "386": "x86",
    "x86": "x86",
    "x32": "x32",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "arm": "arm",
    "loongarch64": "loong64",
    "loong64": "loong64",
}

# libseccomp names whose SCMP_ARCH_ constant is not simply the name in capitals.
_SCMP_ARCH_EXCEPTIONS = {
    "amd64": "SCMP_ARCH_X86_64",
    "arm64": "SCMP_ARCH_AARCH64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
}

_KERNEL_VERSION = re.compile(r"^(\d+)\.(\d+)")


def default_seccomp_profile() -> dict[str, Any]:
    """Docker's default seccomp profile, in Docker's format (a fresh copy each call)."""
    # A plain file beside this module: importlib.resources would cost `run` ~5 ms of
    # imports (pathlib, zipfile) for the same bytes.
    with open(os.path.join(os.path.dirname(__file__), "data", "seccomp-default.json"),
              "rb") as f:
        profile: dict[str, Any] = json.loads(f.read())
    return profile


def _kernel_version(release: str) -> tuple[int, int]:
    match = _KERNEL_VERSION.match(release)
    if match is None:
        raise InvalidArgument(f"invalid kernel version {release!r}: expected MAJOR.MINOR")
    return int(match[1]), int(match[2])


def _applies(
    rule: dict[str, Any], capabilities: Collection[str], arch: str, kernel: tuple[int, int]
) -> bool:
    """Whether a profile rule's ``excludes`` and ``includes`` let it into the filter.

    As in moby: the rule is dropped if the architecture is excluded, if any excluded
    capability is held, or if the kernel is at least the excluded version; it is kept
    only if the architecture is among the included ones, every included capability is
    held and the kernel is at least the included version (each when given).
    """
    excludes = rule.get("excludes") or {}
    if arch in (excludes.get("arches") or ()):
        return False
    if any(cap in capabilities for cap in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and kernel >= _kernel_version(excludes["minKernel"]):
        return False
    includes = rule.get("includes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not all(cap in capabilities for cap in includes.get("caps") or ()):
        return False
    return not (includes.get("minKernel") and kernel < _kernel_version(includes["minKernel"]))


def seccomp_from_profile(
    profile: dict[str, Any],
    capabilities: Collection[str],
    arch: str | None = None,
    *,
    kernel: str | None = None,
) -> LinuxSeccomp:
    """Turn a Docker-format seccomp profile into the OCI ``linux.seccomp`` of a container.

    ``capabilities`` is the container's bounding set, which the rules' ``caps``
    conditions test. ``arch`` is the container's architecture as ``uname -m`` or Go
    name it (``x86_64``, ``amd64``, ``aarch64``...), by default this host's; through
    the profile's ``archMap`` it also selects the architectures the filter covers
    (``x86_64`` brings ``x86`` and ``x32``, whose syscall numbers differ, so the filter
    must list them or their calls would hit the default action). ``kernel`` is the
    release tested by ``minKernel`` conditions, by default this host's.
    Raises ``InvalidArgument`` for a profile that is not well-formed.
    """
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument(
            "invalid seccomp profile: both 'architectures' and 'archMap' are given, use one"
        )
    machine = arch or os.uname().machine
    name = _LIBSECCOMP_ARCH.get(machine, machine)
    scmp_arch = _SCMP_ARCH_EXCEPTIONS.get(name, f"SCMP_ARCH_{name.upper()}")
    release = _kernel_version(kernel or os.uname().release)
    caps = frozenset(capabilities)

    architectures = profile.get("architectures")
    for entry in profile.get("archMap") or ():
        if entry.get("architecture") == scmp_arch:
            architectures = [scmp_arch, *(entry.get("subArchitectures") or ())]
            break

    syscalls = []
    for rule in profile.get("syscalls") or ():
        if not _applies(rule, caps, name, release):
            continue
        if rule.get("name"):
            if rule.get("names"):
                raise InvalidArgument(
                    "invalid seccomp profile: a rule gives both 'name' and 'names', use one"
                )
            rule = {**rule, "names": [rule["name"]]}
        syscalls.append(rule)
    # The Docker-only keys (archMap, includes, excludes, comment) are unknown to the OCI
    # models, which ignore unknown keys.
    document = {**profile, "architectures": architectures, "syscalls": syscalls or None}
    return convert(document, LinuxSeccomp, "seccomp profile")


def _mount(destination: str, type_: str, source: str, *options: str) -> Mount:
    return Mount(destination=destination, type=type_, source=source, options=list(options) or None)


def default_spec(rootless: bool = False) -> Spec:
    """The ``config.json`` of a new bundle with Docker's security defaults.

    It runs ``sh`` on a terminal as root in ``rootfs`` (read-only), with Docker's default
    capabilities and seccomp profile. With ``rootless``, it is changed like
    ``runc spec --rootless``: a user namespace mapping the caller's uid and gid to root,
    no network namespace (an unprivileged user cannot wire one to the host), ``/sys``
    bind-mounted (sysfs cannot be mounted outside the network namespace's owner), no
    ``gid=`` mount options (the gid may not be mapped) and no cgroup resources (the
    caller may not own a cgroup to apply them in).
    """
    capabilities = list(DEFAULT_CAPABILITIES)
    mounts = [
        _mount("/proc", "proc", "proc"),
        _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            *("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
        ),
        _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
        _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
    ]
    linux = Linux(
        namespaces=[
            LinuxNamespace(type=kind)
            for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")
        ],
        resources=LinuxResources(devices=[LinuxDeviceCgroup(allow=False, access="rwm")]),
        masked_paths=list(DEFAULT_MASKED_PATHS),
        readonly_paths=list(DEFAULT_READONLY_PATHS),
        seccomp=seccomp_from_profile(default_seccomp_profile(), capabilities),
    )
    if rootless:
        _make_rootless(linux, mounts)
    return Spec(
        oci_version=VERSION,
        process=Process(
            terminal=True,
            user=User(uid=0, gid=0),
            args=["sh"],
            env=list(_DEFAULT_ENV),
            cwd="/",
            capabilities=LinuxCapabilities(
                bounding=capabilities, effective=capabilities, permitted=capabilities
            ),
            rlimits=[POSIXRlimit(type="RLIMIT_NOFILE", hard=1024, soft=1024)],
            no_new_privileges=True,
        ),
        root=Root(path="rootfs", readonly=True),
        hostname="dockyard",
        mounts=mounts,
        linux=linux,
    )


def _make_rootless(linux: Linux, mounts: list[Mount]) -> None:
    linux.namespaces = [
        namespace
        for namespace in linux.namespaces or ()
        if namespace.type not in ("network", "user")
    ] + [LinuxNamespace(type="user")]
    linux.uid_mappings = [LinuxIDMapping(container_id=0, host_id=os.geteuid(), size=1)]
    linux.gid_mappings = [LinuxIDMapping(container_id=0, host_id=os.getegid(), size=1)]
    linux.resources = None
    for mount in mounts:
        if mount.destination == "/sys":
            mount.type, mount.source = "none", "/sys"
            mount.options = ["rbind", *(mount.options or ())]
        elif mount.options:
            mount.options = [option for option in mount.options if not option.startswith("gid=")]
