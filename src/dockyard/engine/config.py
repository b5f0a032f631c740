"""Docker's container configuration: ``Config`` and ``HostConfig``, as the Engine API has them.

``ContainerConfig`` is what a container runs and how it is attached (the portable part,
Docker's ``container.Config``); ``HostConfig`` is how it is placed on this host: mounts,
limits, privileges, namespaces (Docker's ``container.HostConfig`` with its embedded
``Resources``). Both are ``msgspec.Struct`` models whose JSON keys are Docker's
PascalCase names, so the API server decodes a create request's body straight into them
and the CLI builds the same objects from flags (``dockyard.engine.options``).

Every member is optional and defaults to ``None`` (left out when encoding): Docker's
clients send ``null`` for members they leave unset, and the engine needs "not given"
apart from "given as zero" (``PidsLimit``, ``OomKillDisable``, ``StopTimeout``...).

Besides the models, the Docker semantics of a few string-typed members live here, so
that the options parser and the spec renderer share one reading of them:
``parse_bind`` (a ``Binds`` entry or ``-v`` value) and ``normalize_capability``.
Nothing here does I/O.
"""

# No `from __future__ import annotations`, for the reason given in dockyard.oci.runtime:
# msgspec would have to evaluate every annotation string when it builds a decoder.

import posixpath
from typing import Any, NamedTuple

import msgspec

from dockyard.errors import InvalidArgument
from dockyard.oci.document import Document, convert, decode
from dockyard.oci.image import HealthConfig
from dockyard.oci.runtime import CAPABILITIES

__all__ = [
    "ALL_CAPABILITIES",
    "PROPAGATIONS",
    "RESTART_POLICIES",
    "BindOptions",
    "BindSpec",
    "ContainerConfig",
    "DeviceMapping",
    "Driver",
    "EndpointIPAMConfig",
    "EndpointSettings",
    "HealthConfig",
    "HostConfig",
    "LogConfig",
    "Mount",
    "NetworkingConfig",
    "PortBinding",
    "RegistryOptions",
    "RestartPolicy",
    "TmpfsOptions",
    "Ulimit",
    "VolumeOptions",
    "convert_container_config",
    "convert_host_config",
    "load_container_config",
    "load_host_config",
    "normalize_capability",
    "parse_bind",
]

#: The word that stands for every capability in ``CapAdd`` / ``CapDrop``.
ALL_CAPABILITIES = "ALL"

#: Mount propagation modes a bind may ask for (Docker accepts these six).
PROPAGATIONS = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})

#: Restart policy names; "" is the same as "no".
RESTART_POLICIES = frozenset({"", "no", "always", "unless-stopped", "on-failure"})


class DockerDocument(Document, rename="pascal"):
    """Base of Docker's API models: PascalCase keys, unset members omitted."""


# --- Config ---------------------------------------------------------------------------


class ContainerConfig(DockerDocument):
    """Docker's ``Config``: what the container runs, with which environment, attached how.

    ``Cmd`` and ``Entrypoint`` given here replace the image's (see
    ``dockyard.engine.ocispec.command``); ``Env`` is merged over the image's.
    ``StopTimeout`` is in seconds; ``Healthcheck`` durations are in nanoseconds.
    """

    hostname: str | None = None
    domainname: str | None = None
    user: str | None = None
    attach_stdin: bool | None = None
    attach_stdout: bool | None = None
    attach_stderr: bool | None = None
    exposed_ports: dict[str, dict[str, Any]] | None = None
    tty: bool | None = None
    open_stdin: bool | None = None
    stdin_once: bool | None = None
    env: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: HealthConfig | None = None
    args_escaped: bool | None = None
    image: str | None = None
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str | None = None
    entrypoint: list[str] | None = None
    network_disabled: bool | None = None
    on_build: list[str] | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    stop_timeout: int | None = None
    shell: list[str] | None = None


# --- HostConfig -----------------------------------------------------------------------


class LogConfig(DockerDocument):
    """The log driver of the container and its options."""

    type: str | None = None
    config: dict[str, str] | None = None


class PortBinding(DockerDocument):
    """One host address and port a container port is published on."""

    host_ip: str | None = None
    host_port: str | None = None


class RestartPolicy(DockerDocument):
    """What the monitor does when the container exits."""

    name: str | None = None
    maximum_retry_count: int | None = None


class BindOptions(DockerDocument):
    """The options of a ``bind`` mount."""

    propagation: str | None = None
    non_recursive: bool | None = None
    create_mountpoint: bool | None = None
    read_only_non_recursive: bool | None = None
    read_only_force_recursive: bool | None = None


class Driver(DockerDocument):
    """A volume driver and its options."""

    name: str | None = None
    options: dict[str, str] | None = None


class VolumeOptions(DockerDocument):
    """The options of a ``volume`` mount."""

    no_copy: bool | None = None
    labels: dict[str, str] | None = None
    driver_config: Driver | None = None
    subpath: str | None = None


class TmpfsOptions(DockerDocument):
    """The options of a ``tmpfs`` mount: size in bytes, permission bits of its root."""

    size_bytes: int | None = None
    mode: int | None = None


class Mount(DockerDocument):
    """One ``--mount`` (``HostConfig.Mounts``): a bind, a volume or a tmpfs."""

    target: str | None = None
    source: str | None = None
    type: str | None = None
    read_only: bool | None = None
    consistency: str | None = None
    bind_options: BindOptions | None = None
    volume_options: VolumeOptions | None = None
    tmpfs_options: TmpfsOptions | None = None


class Ulimit(DockerDocument):
    """One resource limit, named without ``RLIMIT_`` in lower case (``nofile``); -1 is
    unlimited."""

    name: str
    soft: int
    hard: int


class DeviceMapping(DockerDocument):
    """A host device made available in the container, with its cgroup permissions
    (any of ``r``, ``w``, ``m``)."""

    path_on_host: str | None = None
    path_in_container: str | None = None
    cgroup_permissions: str | None = None


class HostConfig(DockerDocument):
    """Docker's ``HostConfig``: how the container sits on this host.

    Sizes are bytes, ``NanoCpus`` is CPUs times 10^9, ``MemorySwap`` is memory plus
    swap (-1: unlimited swap), ``Tmpfs`` maps a path to its mount options.
    """

    binds: list[str] | None = None
    container_id_file: str | None = msgspec.field(default=None, name="ContainerIDFile")
    log_config: LogConfig | None = None
    network_mode: str | None = None
    port_bindings: dict[str, list[PortBinding] | None] | None = None
    restart_policy: RestartPolicy | None = None
    auto_remove: bool | None = None
    volume_driver: str | None = None
    volumes_from: list[str] | None = None
    mounts: list[Mount] | None = None
    console_size: list[int] | None = None
    annotations: dict[str, str] | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    cgroupns_mode: str | None = None
    dns: list[str] | None = None
    dns_options: list[str] | None = None
    dns_search: list[str] | None = None
    extra_hosts: list[str] | None = None
    group_add: list[str] | None = None
    ipc_mode: str | None = None
    cgroup: str | None = None
    links: list[str] | None = None
    oom_score_adj: int | None = None
    pid_mode: str | None = None
    privileged: bool | None = None
    publish_all_ports: bool | None = None
    readonly_rootfs: bool | None = None
    security_opt: list[str] | None = None
    storage_opt: dict[str, str] | None = None
    tmpfs: dict[str, str] | None = None
    uts_mode: str | None = msgspec.field(default=None, name="UTSMode")
    userns_mode: str | None = None
    shm_size: int | None = None
    sysctls: dict[str, str] | None = None
    runtime: str | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    # Docker's Resources, embedded in HostConfig.
    cpu_shares: int | None = None
    memory: int | None = None
    cgroup_parent: str | None = None
    blkio_weight: int | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpu_realtime_period: int | None = None
    cpu_realtime_runtime: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    devices: list[DeviceMapping] | None = None
    device_cgroup_rules: list[str] | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    memory_swappiness: int | None = None
    nano_cpus: int | None = None
    oom_kill_disable: bool | None = None
    init: bool | None = None
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = None


# --- NetworkingConfig -----------------------------------------------------------------


class EndpointIPAMConfig(DockerDocument):
    """The addresses a container asks for on one network (``--ip``, ``--ip6``)."""

    ipv4_address: str | None = msgspec.field(default=None, name="IPv4Address")
    ipv6_address: str | None = msgspec.field(default=None, name="IPv6Address")


class EndpointSettings(DockerDocument):
    """How a container is attached to one network, as asked at create or connect."""

    ipam_config: EndpointIPAMConfig | None = msgspec.field(default=None, name="IPAMConfig")
    aliases: list[str] | None = None
    mac_address: str | None = None


class NetworkingConfig(DockerDocument):
    """Docker's ``NetworkingConfig`` of a create request: settings by network name."""

    endpoints_config: dict[str, EndpointSettings] | None = None


# --- decoding -------------------------------------------------------------------------


def load_container_config(data: bytes | str) -> ContainerConfig:
    """Decode a ``Config`` from JSON; a bad member is one line of ``InvalidArgument``."""
    return decode(data, ContainerConfig, "container config")


def load_host_config(data: bytes | str) -> HostConfig:
    """Decode a ``HostConfig`` from JSON; a bad member is one line of ``InvalidArgument``."""
    return decode(data, HostConfig, "host config")


def convert_container_config(obj: Any) -> ContainerConfig:
    """Build a ``Config`` from already-parsed JSON (a create request's body)."""
    return convert(obj, ContainerConfig, "container config")


def convert_host_config(obj: Any) -> HostConfig:
    """Build a ``HostConfig`` from already-parsed JSON."""
    return convert(obj, HostConfig, "host config")


# --- the semantics of string members --------------------------------------------------

_CAPABILITY_SET = frozenset(CAPABILITIES)


def normalize_capability(name: str) -> str:
    """``net_admin`` / ``NET_ADMIN`` / ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``all`` ->
    ``ALL``. An unknown name is refused with Docker's wording."""
    upper = name.strip().upper()
    if upper == ALL_CAPABILITIES:
        return upper
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in _CAPABILITY_SET:
        raise InvalidArgument(f'unknown capability: "{upper}"')
    return upper


class RegistryOptions(NamedTuple):
    """How the image service reaches registries (here, beside the containers' options,
    so that a command that makes a service pays no import of the image service).

    ``insecure``: hosts (``host[:port]``) spoken to over plain HTTP, besides loopback
    ones, which always are. ``auth_file``: Docker's ``config.json`` holding the
    credentials of ``dockyard login`` (default ``~/.docker/config.json``).
    ``max_downloads``: blobs fetched at once by one pull (Docker's default is 3).
    """

    insecure: frozenset[str] = frozenset()
    auth_file: str | None = None
    max_downloads: int = 3


class BindSpec(NamedTuple):
    """A ``Binds`` entry (or ``-v`` value) read the way Docker's Linux parser reads it.

    ``type`` is ``bind`` when ``source`` is an absolute host path, ``volume`` when it is
    a volume name, or when there is no source at all (an anonymous volume).
    """

    type: str
    source: str
    target: str
    read_only: bool
    propagation: str | None
    nocopy: bool
    mode: str


# The mode words of `-v SRC:DST:MODE`, by kind: at most one word of each kind.
_MODE_KINDS: tuple[frozenset[str], ...] = (
    frozenset({"rw", "ro"}),
    frozenset({"z", "Z"}),
    PROPAGATIONS,
    frozenset({"nocopy"}),
    frozenset({"consistent", "cached", "delegated"}),
)


def _valid_mode(mode: str) -> bool:
    if not mode:
        return True
    counts = [0] * len(_MODE_KINDS)
    for word in mode.split(","):
        for index, kind in enumerate(_MODE_KINDS):
            if word in kind:
                counts[index] += 1
                break
        else:
            return False
    return max(counts) <= 1


def parse_bind(raw: str) -> BindSpec:
    """Read ``[SOURCE:]TARGET[:MODE]`` like Docker, with its error messages.

    ``MODE`` is comma-separated words: ``ro``/``rw``, a propagation, ``nocopy``, and
    ``z``/``Z`` (SELinux relabelling, accepted and ignored: SELinux is not supported).
    """
    parts = raw.split(":")
    if not parts[0]:
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    mode = ""
    if len(parts) == 1:
        source, target = "", parts[0]
    elif len(parts) == 2:
        if _valid_mode(parts[1]):
            # A target and a mode without a source names no volume: `/foo:rw`.
            raise InvalidArgument(f"invalid volume specification: '{raw}'")
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    if not _valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    kind = "bind" if source.startswith("/") else "volume"
    if not target.startswith("/"):
        raise InvalidArgument(
            f'invalid mount config for type "{kind}": invalid mount path: '
            f"'{target}' mount path must be absolute"
        )
    target = posixpath.normpath(target)
    if target == "/":
        raise InvalidArgument("invalid specification: destination can't be '/'")
    words = mode.split(",") if mode else []
    propagation = next((word for word in words if word in PROPAGATIONS), None)
    if propagation is not None and kind != "bind":
        raise InvalidArgument(
            'invalid mount config for type "volume": field BindOptions must not be specified'
        )
    return BindSpec(
        type=kind,
        source=posixpath.normpath(source) if kind == "bind" else source,
        target=target,
        read_only="ro" in words,
        propagation=propagation,
        nocopy="nocopy" in words,
        mode=mode,
    )
