"""Typed models of the OCI runtime specification 1.x documents, for Linux.

``config.json`` (``Spec``), the ``state`` document (``State``) and the ``features``
document (``Features``) are ``msgspec.Struct`` classes named like the Go types of
``runtime-spec/specs-go``. Attribute names are the snake_case of the JSON keys; where
the key's capitals do not come back from snake_case (``hostID``, ``blockIO``,
``disableOOMKiller``...), the field names its key explicitly.

Three rules make these documents behave the way runc treats them:

- a member that is optional in the specification defaults to ``None`` and is left out
  when encoding, so a document round-trips without gaining ``null`` members;
- unknown keys are ignored on decode, so a config written for a newer specification
  (or carrying ``windows`` / ``vm`` sections) still loads;
- integers are Python ints with the specification's range checked on decode, so
  ``-1`` (unlimited) and limits beyond 2**32 survive.

``load_spec`` / ``load_state`` / ``load_features`` decode and turn every problem into
one line of ``InvalidArgument`` naming the JSON path; ``validate_spec`` adds the
semantic checks that runc makes and that types cannot express. Nothing here does I/O.
"""

# No `from __future__ import annotations` here: msgspec would then have to evaluate
# every annotation string when it builds its first decoder, which is on the path of
# every container start.

import re
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from dockyard.errors import InvalidArgument
from dockyard.oci.document import Document, convert, decode, dump

__all__ = [
    "CAPABILITIES",
    "NAMESPACE_TYPES",
    "RLIMIT_TYPES",
    "SECCOMP_ACTIONS",
    "SECCOMP_ARCHES",
    "SECCOMP_FLAGS",
    "SECCOMP_OPERATORS",
    "VERSION",
    "Box",
    "CgroupFeatures",
    "EnabledFeature",
    "Features",
    "Hook",
    "Hooks",
    "Linux",
    "LinuxBlockIO",
    "LinuxCPU",
    "LinuxCPUAffinity",
    "LinuxCapabilities",
    "LinuxDevice",
    "LinuxDeviceCgroup",
    "LinuxFeatures",
    "LinuxHugepageLimit",
    "LinuxIDMapping",
    "LinuxIOPriority",
    "LinuxIntelRdt",
    "LinuxInterfacePriority",
    "LinuxMemory",
    "LinuxMemoryPolicy",
    "LinuxNamespace",
    "LinuxNetDevice",
    "LinuxNetwork",
    "LinuxPersonality",
    "LinuxPids",
    "LinuxRdma",
    "LinuxResources",
    "LinuxScheduler",
    "LinuxSeccomp",
    "LinuxSeccompArg",
    "LinuxSyscall",
    "LinuxThrottleDevice",
    "LinuxTimeOffset",
    "LinuxWeightDevice",
    "Mount",
    "MountExtensionsFeatures",
    "POSIXRlimit",
    "Process",
    "Root",
    "SeccompFeatures",
    "Spec",
    "State",
    "User",
    "convert",
    "dump",
    "load_features",
    "load_spec",
    "load_state",
    "validate_spec",
]

#: The version of the specification these models follow, written by dockyard.
VERSION = "1.2.0"

# Ranges of the specification's integer types; msgspec checks them on decode.
UInt16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
UInt64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec bounds stop at int64
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# --- config.json: process -------------------------------------------------------------


class Box(Document):
    """The size of the console (``process.consoleSize``), in characters."""

    height: UInt64
    width: UInt64


class User(Document):
    """The user the container process runs as. ``uid`` and ``gid`` are always written,
    as the Go types do, because a reader may not treat a missing one as 0."""

    uid: UInt32
    gid: UInt32
    umask: UInt32 | None = None
    additional_gids: list[UInt32] | None = None
    username: str | None = None


class LinuxCapabilities(Document):
    """The five capability sets of the process, as ``CAP_*`` names."""

    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


class POSIXRlimit(Document):
    """One resource limit (``RLIMIT_*``) set with setrlimit(2)."""

    type: str
    hard: UInt64
    soft: UInt64


class LinuxScheduler(Document):
    """The scheduling policy and attributes set with sched_setattr(2)."""

    policy: str
    nice: Int32 | None = None
    priority: Int32 | None = None
    flags: list[str] | None = None
    runtime: UInt64 | None = None
    deadline: UInt64 | None = None
    period: UInt64 | None = None


class LinuxIOPriority(Document):
    """The I/O priority set with ioprio_set(2)."""

    class_: str = msgspec.field(name="class")
    priority: Int32 | None = None


class LinuxCPUAffinity(Document):
    """CPU affinity of ``exec``'d processes: before and after joining the cgroup."""

    initial: str | None = None
    final: str | None = None


class Process(Document):
    """The container process: what to run, as whom, and with which limits."""

    cwd: str
    user: User = msgspec.field(default_factory=lambda: User(uid=0, gid=0))
    args: list[str] | None = None
    command_line: str | None = None
    env: list[str] | None = None
    terminal: bool | None = None
    console_size: Box | None = None
    capabilities: LinuxCapabilities | None = None
    rlimits: list[POSIXRlimit] | None = None
    no_new_privileges: bool | None = None
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    scheduler: LinuxScheduler | None = None
    selinux_label: str | None = None
    io_priority: LinuxIOPriority | None = None
    exec_cpu_affinity: LinuxCPUAffinity | None = msgspec.field(default=None, name="execCPUAffinity")


# --- config.json: root, mounts, hooks --------------------------------------------------


class Root(Document):
    """The container's root filesystem, relative to the bundle or absolute."""

    path: str
    readonly: bool | None = None


class LinuxIDMapping(Document):
    """A range of ids mapped into a user namespace (or an id-mapped mount)."""

    container_id: UInt32 = msgspec.field(name="containerID")
    host_id: UInt32 = msgspec.field(name="hostID")
    size: UInt32


class Mount(Document):
    """One mount made in the container's mount namespace, in order."""

    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] | None = None
    uid_mappings: list[LinuxIDMapping] | None = None
    gid_mappings: list[LinuxIDMapping] | None = None


class Hook(Document):
    """A program the runtime runs at a point of the container's lifecycle."""

    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    timeout: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Hooks(Document):
    """The lifecycle hooks; ``prestart`` is deprecated in favour of the three below it."""

    prestart: list[Hook] | None = None
    create_runtime: list[Hook] | None = None
    create_container: list[Hook] | None = None
    start_container: list[Hook] | None = None
    poststart: list[Hook] | None = None
    poststop: list[Hook] | None = None


# --- config.json: linux resources -----------------------------------------------------


class LinuxDeviceCgroup(Document):
    """One rule of the device cgroup: allow or deny access to a device (class)."""

    allow: bool
    type: str | None = None
    major: Int64 | None = None
    minor: Int64 | None = None
    access: str | None = None


class LinuxMemory(Document):
    """Memory limits in bytes; -1 means unlimited."""

    limit: Int64 | None = None
    reservation: Int64 | None = None
    swap: Int64 | None = None
    kernel: Int64 | None = None
    kernel_tcp: Int64 | None = msgspec.field(default=None, name="kernelTCP")
    swappiness: UInt64 | None = None
    disable_oom_killer: bool | None = msgspec.field(default=None, name="disableOOMKiller")
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class LinuxCPU(Document):
    """CPU shares, CFS quota and period, real-time budget and cpuset."""

    shares: UInt64 | None = None
    quota: Int64 | None = None
    burst: UInt64 | None = None
    period: UInt64 | None = None
    realtime_runtime: Int64 | None = None
    realtime_period: UInt64 | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: Int64 | None = None


class LinuxPids(Document):
    """The maximum number of tasks in the cgroup; -1 or 0 mean unlimited."""

    limit: Int64


class LinuxWeightDevice(Document):
    """A per-device block I/O weight."""

    major: Int64
    minor: Int64
    weight: UInt16 | None = None
    leaf_weight: UInt16 | None = None


class LinuxThrottleDevice(Document):
    """A per-device block I/O rate limit (bytes or operations per second)."""

    major: Int64
    minor: Int64
    rate: UInt64 | None = None


class LinuxBlockIO(Document):
    """Block I/O weights and throttles."""

    weight: UInt16 | None = None
    leaf_weight: UInt16 | None = None
    weight_device: list[LinuxWeightDevice] | None = None
    throttle_read_bps_device: list[LinuxThrottleDevice] | None = None
    throttle_write_bps_device: list[LinuxThrottleDevice] | None = None
    throttle_read_iops_device: list[LinuxThrottleDevice] | None = msgspec.field(
        default=None, name="throttleReadIOPSDevice"
    )
    throttle_write_iops_device: list[LinuxThrottleDevice] | None = msgspec.field(
        default=None, name="throttleWriteIOPSDevice"
    )


class LinuxHugepageLimit(Document):
    """The hugetlb limit for one page size (``2MB``, ``1GB``...)."""

    page_size: str
    limit: UInt64


class LinuxInterfacePriority(Document):
    """The net_prio priority of one network interface."""

    name: str
    priority: UInt32


class LinuxNetwork(Document):
    """net_cls class id and net_prio priorities."""

    class_id: UInt32 | None = msgspec.field(default=None, name="classID")
    priorities: list[LinuxInterfacePriority] | None = None


class LinuxRdma(Document):
    """RDMA limits of one device."""

    hca_handles: UInt32 | None = None
    hca_objects: UInt32 | None = None


class LinuxResources(Document):
    """The cgroup limits of the container."""

    devices: list[LinuxDeviceCgroup] | None = None
    memory: LinuxMemory | None = None
    cpu: LinuxCPU | None = None
    pids: LinuxPids | None = None
    block_io: LinuxBlockIO | None = msgspec.field(default=None, name="blockIO")
    hugepage_limits: list[LinuxHugepageLimit] | None = None
    network: LinuxNetwork | None = None
    rdma: dict[str, LinuxRdma] | None = None
    unified: dict[str, str] | None = None


# --- config.json: the rest of linux ---------------------------------------------------


class LinuxNamespace(Document):
    """A namespace to create, or to join when ``path`` is given."""

    type: str
    path: str | None = None


class LinuxDevice(Document):
    """A device node to create in the container's ``/dev``."""

    type: str
    path: str
    major: Int64 | None = None
    minor: Int64 | None = None
    file_mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)] | None = None
    uid: UInt32 | None = None
    gid: UInt32 | None = None


class LinuxSeccompArg(Document):
    """A comparison of one syscall argument."""

    index: UInt32
    value: UInt64
    op: str
    value_two: UInt64 | None = None


class LinuxSyscall(Document):
    """A seccomp rule: what happens when one of ``names`` is called (with ``args``)."""

    names: list[str]
    action: str
    errno_ret: UInt32 | None = None
    args: list[LinuxSeccompArg] | None = None


class LinuxSeccomp(Document):
    """The seccomp filter of the container process."""

    default_action: str
    default_errno_ret: UInt32 | None = None
    architectures: list[str] | None = None
    flags: list[str] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[LinuxSyscall] | None = None


class LinuxIntelRdt(Document):
    """Intel RDT (resctrl) class of service and schemata."""

    clos_id: str | None = msgspec.field(default=None, name="closID")
    schemata: list[str] | None = None
    l3_cache_schema: str | None = None
    mem_bw_schema: str | None = None
    enable_monitoring: bool | None = None


class LinuxMemoryPolicy(Document):
    """The NUMA memory policy set with set_mempolicy(2)."""

    mode: str | None = None
    nodes: str | None = None
    flags: list[str] | None = None


class LinuxPersonality(Document):
    """The execution domain set with personality(2)."""

    domain: str | None = None
    flags: list[str] | None = None


class LinuxTimeOffset(Document):
    """The offset of one clock in a time namespace."""

    secs: Int64 | None = None
    nanosecs: UInt32 | None = None


class LinuxNetDevice(Document):
    """A host network device moved into the container, under ``name`` if given."""

    name: str | None = None


class Linux(Document):
    """The Linux-specific part of the configuration."""

    namespaces: list[LinuxNamespace] | None = None
    uid_mappings: list[LinuxIDMapping] | None = None
    gid_mappings: list[LinuxIDMapping] | None = None
    time_offsets: dict[str, LinuxTimeOffset] | None = None
    devices: list[LinuxDevice] | None = None
    net_devices: dict[str, LinuxNetDevice] | None = None
    cgroups_path: str | None = None
    resources: LinuxResources | None = None
    rootfs_propagation: str | None = None
    seccomp: LinuxSeccomp | None = None
    sysctl: dict[str, str] | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    mount_label: str | None = None
    intel_rdt: LinuxIntelRdt | None = None
    memory_policy: LinuxMemoryPolicy | None = None
    personality: LinuxPersonality | None = None


class Spec(Document):
    """A bundle's ``config.json``."""

    oci_version: str
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] | None = None
    hooks: Hooks | None = None
    annotations: dict[str, str] | None = None
    linux: Linux | None = None


# --- state and features ---------------------------------------------------------------


class State(Document):
    """What ``<runtime> state ID`` prints, and what hooks read on stdin."""

    oci_version: str
    id: str
    status: str
    bundle: str
    pid: Annotated[int, msgspec.Meta(ge=0)] | None = None
    annotations: dict[str, str] | None = None


class EnabledFeature(Document):
    """A feature that is only on or off (apparmor, selinux, intelRdt, idmap...)."""

    enabled: bool | None = None


class CgroupFeatures(Document):
    """Which cgroup drivers the runtime supports."""

    v1: bool | None = None
    v2: bool | None = None
    systemd: bool | None = None
    systemd_user: bool | None = None
    rdma: bool | None = None


class SeccompFeatures(Document):
    """What the runtime's seccomp support knows."""

    enabled: bool | None = None
    actions: list[str] | None = None
    operators: list[str] | None = None
    archs: list[str] | None = None
    known_flags: list[str] | None = None
    supported_flags: list[str] | None = None


class MountExtensionsFeatures(Document):
    """Mount extensions beyond mount(2): id-mapped mounts."""

    idmap: EnabledFeature | None = None


class LinuxFeatures(Document):
    """The Linux part of the ``features`` document."""

    namespaces: list[str] | None = None
    capabilities: list[str] | None = None
    cgroup: CgroupFeatures | None = None
    seccomp: SeccompFeatures | None = None
    apparmor: EnabledFeature | None = None
    selinux: EnabledFeature | None = None
    intel_rdt: EnabledFeature | None = None
    mount_extensions: MountExtensionsFeatures | None = None
    net_devices: EnabledFeature | None = None


class Features(Document):
    """What ``<runtime> features`` prints: what the runtime implements."""

    oci_version_min: str
    oci_version_max: str
    hooks: list[str] | None = None
    mount_options: list[str] | None = None
    annotations: dict[str, str] | None = None
    potentially_unsafe_config_annotations: list[str] | None = None
    linux: LinuxFeatures | None = None


# --- the vocabularies validate_spec checks against ------------------------------------

NAMESPACE_TYPES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})

#: Every capability Linux defines up to 6.x, in the kernel's numbering order.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

RLIMIT_TYPES = frozenset(
    "RLIMIT_" + name
    for name in (
        "AS", "CORE", "CPU", "DATA", "FSIZE", "LOCKS", "MEMLOCK", "MSGQUEUE", "NICE",
        "NOFILE", "NPROC", "RSS", "RTPRIO", "RTTIME", "SIGPENDING", "STACK",
    )
)  # fmt: skip

SECCOMP_ACTIONS = frozenset(
    "SCMP_ACT_" + name
    for name in (
        "KILL", "KILL_PROCESS", "KILL_THREAD", "TRAP", "ERRNO", "TRACE", "ALLOW", "LOG",
        "NOTIFY",
    )
)  # fmt: skip

SECCOMP_OPERATORS = frozenset(
    "SCMP_CMP_" + name for name in ("NE", "LT", "LE", "EQ", "GE", "GT", "MASKED_EQ")
)

SECCOMP_ARCHES = frozenset(
    "SCMP_ARCH_" + name
    for name in (
        "X86", "X86_64", "X32", "ARM", "AARCH64", "LOONGARCH64", "M68K", "MIPS", "MIPS64",
        "MIPS64N32", "MIPSEL", "MIPSEL64", "MIPSEL64N32", "PPC", "PPC64", "PPC64LE", "S390",
        "S390X", "SH", "SHEB", "PARISC", "PARISC64", "RISCV64",
    )
)  # fmt: skip

SECCOMP_FLAGS = frozenset(
    {
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    }
)

# The schema lists the four plain modes; runc also takes their recursive forms.
_ROOTFS_PROPAGATIONS = frozenset(
    prefix + mode for prefix in ("", "r") for mode in ("private", "shared", "slave", "unbindable")
)
_CAPABILITY_SET = frozenset(CAPABILITIES)
_VERSION_1 = re.compile(r"^1\.\d+\.\d+(?:[-+].*)?$")


# --- (de)serialisation ----------------------------------------------------------------

def load_spec(data: bytes | str) -> Spec:
    """Decode a ``config.json``; any malformed or ill-typed member raises
    ``InvalidArgument`` naming its JSON path. Semantics are ``validate_spec``'s job."""
    return decode(data, Spec, "config.json")


def load_state(data: bytes | str) -> State:
    """Decode a runtime's ``state`` output (extra keys, such as runc's ``rootfs``,
    are ignored)."""
    return decode(data, State, "container state")


def load_features(data: bytes | str) -> Features:
    """Decode a runtime's ``features`` output."""
    return decode(data, Features, "runtime features")


# --- validation -----------------------------------------------------------------------


def _invalid(path: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"invalid config.json: {problem} at {path}")


def _members(struct: Document) -> Iterator[tuple[str, Any]]:
    """The (JSON key, value) pairs of a model's members."""
    for field in msgspec.structs.fields(struct):
        yield field.encode_name, getattr(struct, field.name)


def validate_spec(spec: Spec) -> None:
    """Check what runc checks before creating a container and the types cannot say.

    Raises ``InvalidArgument`` with one line for the first problem found: an unsupported
    ``ociVersion``, a missing root path, an empty ``process.args``, a relative
    ``process.cwd``, hook path or mount destination, an unknown or duplicated namespace
    type, id mappings without a user namespace (or the reverse), and unknown rlimit,
    capability, seccomp action / operator / architecture / flag names.
    """
    if not _VERSION_1.match(spec.oci_version):
        raise _invalid(
            "$.ociVersion", f"unsupported ociVersion {spec.oci_version!r}, expected 1.x.y"
        )
    if spec.root is None or not spec.root.path:
        raise _invalid("$.root.path", "the root filesystem path is missing")
    if spec.process is not None:
        _validate_process(spec.process)
    for stage, hooks in _members(spec.hooks or Hooks()):
        for index, hook in enumerate(hooks or ()):
            if not hook.path.startswith("/"):
                raise _invalid(
                    f"$.hooks.{stage}[{index}].path", f"hook path {hook.path!r} is not absolute"
                )
    for index, mount in enumerate(spec.mounts or ()):
        if not mount.destination.startswith("/"):
            raise _invalid(
                f"$.mounts[{index}].destination",
                f"mount destination {mount.destination!r} is not absolute",
            )
    if spec.linux is not None:
        _validate_linux(spec.linux)


def _validate_process(process: Process) -> None:
    if not process.args:
        raise _invalid("$.process.args", "process.args is empty: give the command to run")
    if not process.cwd.startswith("/"):
        raise _invalid("$.process.cwd", f"cwd {process.cwd!r} is not an absolute path")
    seen: set[str] = set()
    for index, rlimit in enumerate(process.rlimits or ()):
        path = f"$.process.rlimits[{index}].type"
        if rlimit.type not in RLIMIT_TYPES:
            raise _invalid(path, f"unknown rlimit type {rlimit.type!r}")
        if rlimit.type in seen:
            raise _invalid(path, f"duplicate rlimit type {rlimit.type!r}")
        seen.add(rlimit.type)
    for cap_set, names in _members(process.capabilities or LinuxCapabilities()):
        for index, name in enumerate(names or ()):
            if name not in _CAPABILITY_SET:
                raise _invalid(
                    f"$.process.capabilities.{cap_set}[{index}]",
                    f"unknown capability {name!r}",
                )


def _validate_linux(linux: Linux) -> None:
    types: set[str] = set()
    user_ns: LinuxNamespace | None = None
    for index, namespace in enumerate(linux.namespaces or ()):
        path = f"$.linux.namespaces[{index}].type"
        if namespace.type not in NAMESPACE_TYPES:
            raise _invalid(path, f"unknown namespace type {namespace.type!r}")
        if namespace.type in types:
            raise _invalid(path, f"duplicate namespace type {namespace.type!r}")
        types.add(namespace.type)
        if namespace.type == "user":
            user_ns = namespace
    id_mappings = (("uidMappings", linux.uid_mappings), ("gidMappings", linux.gid_mappings))
    if user_ns is None:
        for key, mappings in id_mappings:
            if mappings:
                raise _invalid(
                    f"$.linux.{key}", "id mappings need a user namespace in linux.namespaces"
                )
    elif user_ns.path is None:
        # A new user namespace without mappings would leave every id unmapped
        # (nobody); joining an existing one (path) inherits its mappings.
        for key, mappings in id_mappings:
            if not mappings:
                raise _invalid(f"$.linux.{key}", "a new user namespace needs id mappings")
    propagation = linux.rootfs_propagation
    if propagation is not None and propagation not in _ROOTFS_PROPAGATIONS:
        raise _invalid(
            "$.linux.rootfsPropagation",
            f"unknown rootfs propagation {propagation!r}",
        )
    if linux.seccomp is not None:
        _validate_seccomp(linux.seccomp)


def _validate_seccomp(seccomp: LinuxSeccomp) -> None:
    def check(value: str, allowed: frozenset[str], what: str, path: str) -> None:
        if value not in allowed:
            raise _invalid(path, f"unknown seccomp {what} {value!r}")

    check(seccomp.default_action, SECCOMP_ACTIONS, "action", "$.linux.seccomp.defaultAction")
    for index, arch in enumerate(seccomp.architectures or ()):
        check(arch, SECCOMP_ARCHES, "architecture", f"$.linux.seccomp.architectures[{index}]")
    for index, flag in enumerate(seccomp.flags or ()):
        check(flag, SECCOMP_FLAGS, "flag", f"$.linux.seccomp.flags[{index}]")
    for index, syscall in enumerate(seccomp.syscalls or ()):
        path = f"$.linux.seccomp.syscalls[{index}]"
        check(syscall.action, SECCOMP_ACTIONS, "action", f"{path}.action")
        if not syscall.names:
            raise _invalid(f"{path}.names", "a seccomp rule needs at least one syscall name")
        for arg_index, arg in enumerate(syscall.args or ()):
            check(arg.op, SECCOMP_OPERATORS, "operator", f"{path}.args[{arg_index}].op")
