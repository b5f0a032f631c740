"""The values of ``docker run`` / ``docker create`` flags, turned into Config and HostConfig.

The CLI collects the flags (argv is its business); ``RunFlags`` holds their values as
given, and ``to_config`` turns them into the ``ContainerConfig`` and ``HostConfig`` that
the API would have received from the docker CLI. Each value is parsed the way the docker
CLI parses it, and a bad one is refused with the docker CLI's wording, for example::

    invalid argument "64x" for "-m, --memory" flag: invalid size: '64x'

The single-value parsers (``parse_size``, ``parse_cpus``, ``parse_ulimit``,
``parse_restart``, ``parse_mount``, ``parse_device``...) are public: the API server and
``docker update`` need some of them alone. Reading ``--env-file`` / ``--label-file``
and a ``--security-opt seccomp=FILE`` profile is the only I/O here; like the docker
CLI, a profile file is sent inline, as ``seccomp=<compact JSON>``.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TypeVar

import msgspec

from dockyard.engine.config import (
    PROPAGATIONS,
    RESTART_POLICIES,
    BindOptions,
    ContainerConfig,
    DeviceMapping,
    Driver,
    EndpointIPAMConfig,
    EndpointSettings,
    HealthConfig,
    HostConfig,
    LogConfig,
    Mount,
    NetworkingConfig,
    PortBinding,
    RestartPolicy,
    TmpfsOptions,
    Ulimit,
    VolumeOptions,
    normalize_capability,
    parse_bind,
)
from dockyard.errors import InvalidArgument

__all__ = [
    "RunFlags",
    "check_restart_policy",
    "networking_config",
    "parse_add_host",
    "parse_cpus",
    "parse_device",
    "parse_duration",
    "parse_env_file",
    "parse_mount",
    "parse_restart",
    "parse_security_opts",
    "parse_size",
    "parse_sysctl",
    "parse_ulimit",
    "to_config",
]

_T = TypeVar("_T")


class RunFlags(msgspec.Struct):
    """The flags of ``docker run`` that shape a container, as the user typed them.

    Repeatable flags are lists in the order given; a flag left out is ``None`` (or an
    empty list). ``entrypoint=""`` is ``--entrypoint ""``: it resets the image's.
    A ``msgspec.Struct`` (each instance gets its own empty lists): the dataclass of these
    80 fields took ``run`` ~4 ms to build at import.
    """

    image: str = ""
    command: list[str] = []
    entrypoint: str | None = None
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None
    domainname: str | None = None
    tty: bool = False
    interactive: bool = False
    env: list[str] = []
    env_file: list[str] = []
    label: list[str] = []
    label_file: list[str] = []
    expose: list[str] = []
    stop_signal: str | None = None
    stop_timeout: int | None = None
    # Resources.
    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    shm_size: str | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None
    oom_kill_disable: bool = False
    oom_score_adj: int | None = None
    ulimit: list[str] = []
    # Filesystems and devices.
    volume: list[str] = []
    mount: list[str] = []
    tmpfs: list[str] = []
    device: list[str] = []
    device_cgroup_rule: list[str] = []
    read_only: bool = False
    volume_driver: str | None = None
    volumes_from: list[str] = []
    # Privileges.
    privileged: bool = False
    cap_add: list[str] = []
    cap_drop: list[str] = []
    security_opt: list[str] = []
    group_add: list[str] = []
    sysctl: list[str] = []
    init: bool = False
    # Namespaces and network.
    network: str | None = None
    add_host: list[str] = []
    dns: list[str] = []
    dns_option: list[str] = []
    dns_search: list[str] = []
    publish: list[str] = []
    publish_all: bool = False
    network_alias: list[str] = []
    ip: str | None = None
    ip6: str | None = None
    mac_address: str | None = None
    link: list[str] = []
    ipc: str | None = None
    pid: str | None = None
    uts: str | None = None
    userns: str | None = None
    cgroupns: str | None = None
    # Lifecycle.
    restart: str | None = None
    rm: bool = False
    runtime: str | None = None
    log_driver: str | None = None
    log_opt: list[str] = []
    # Health check.
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_start_period: str | None = None
    health_start_interval: str | None = None
    health_retries: int | None = None
    no_healthcheck: bool = False


# --- one value at a time ----------------------------------------------------------------


def _flag_error(value: str, flag: str, reason: str) -> InvalidArgument:
    """The docker CLI's (pflag's) wording for a value its flag cannot take."""
    return InvalidArgument(f'invalid argument "{value}" for "{flag}" flag: {reason}')


def _for_flag(parse: Callable[[str], _T], value: str, flag: str) -> _T:
    """``parse(value)``, its error reworded as a refusal of ``flag``'s value."""
    try:
        return parse(value)
    except InvalidArgument as exc:
        raise _flag_error(value, flag, str(exc)) from None


# go-units RAMInBytes: a decimal number, an optional binary unit, an optional "b".
_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(value: str) -> int:
    """A size in bytes, in binary units like docker's ``-m``: ``64m`` is 64 MiB,
    ``1g``, ``512k``, ``1.5GB``, ``100`` (bytes)."""
    match = _SIZE.match(value)
    if match is None:
        raise InvalidArgument(f"invalid size: '{value}'")
    try:
        number = float(match[1])
    except ValueError:  # "1.2.3" matches the pattern, as in go-units, but is no number
        raise InvalidArgument(f"invalid size: '{value}'") from None
    return int(number * _UNITS.get((match[2] or "").lower(), 1))


def _swap_size(value: str) -> int:
    # --memory-swap alone also takes -1: unlimited swap.
    return -1 if value == "-1" else parse_size(value)


def parse_cpus(value: str) -> int:
    """``--cpus``: a number of CPUs (``0.5``, ``2``, ``3/2``) as NanoCpus (CPUs x 10^9)."""
    try:
        cpus = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise InvalidArgument(f"failed to parse {value} as a rational number") from None
    nano = cpus * 1_000_000_000
    if nano.denominator != 1:
        raise InvalidArgument("value is too precise")
    return int(nano)


# The names --ulimit takes: the RLIMIT_ resources, in lower case, without the prefix.
_ULIMIT_NAMES = frozenset(
    {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
     "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"}
)  # fmt: skip


def _int64(text: str) -> int:
    # Go's strconv.ParseInt wording.
    if not re.fullmatch(r"[+-]?\d+", text):
        raise InvalidArgument(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return int(text)


def parse_ulimit(value: str) -> Ulimit:
    """``--ulimit NAME=SOFT[:HARD]`` (HARD defaults to SOFT; -1 is unlimited)."""
    name, sep, limits = value.partition("=")
    if not sep:
        raise InvalidArgument(f"invalid ulimit argument: {value}")
    if name not in _ULIMIT_NAMES:
        raise InvalidArgument(f"invalid ulimit type: {name}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise InvalidArgument(
            f"too many limit value arguments - {limits}, can only have up to two, `soft[:hard]`"
        )
    soft = _int64(parts[0])
    hard = _int64(parts[1]) if len(parts) == 2 else soft
    if hard != -1:
        if soft == -1:
            raise InvalidArgument(
                "ulimit soft limit must be less than or equal to hard limit: "
                f"soft: -1 (unlimited), hard: {hard}"
            )
        if soft > hard:
            raise InvalidArgument(
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )
    return Ulimit(name=name, soft=soft, hard=hard)


def check_restart_policy(policy: RestartPolicy) -> None:
    """Refuse a policy the engine cannot apply, with the daemon's wording."""
    name = policy.name or ""
    if name not in RESTART_POLICIES:
        raise InvalidArgument(
            f"invalid restart policy: unknown policy '{name}'; use one of "
            "'no', 'always', 'on-failure', or 'unless-stopped'"
        )
    count = policy.maximum_retry_count or 0
    if count < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    if count and name != "on-failure":
        raise InvalidArgument(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        )


def parse_restart(value: str) -> RestartPolicy:
    """``--restart no|always|unless-stopped|on-failure[:MAX_RETRIES]``."""
    if not value:
        return RestartPolicy()
    name, sep, count = value.partition(":")
    if sep and not name:
        raise InvalidArgument("invalid restart policy format: no policy provided before colon")
    policy = RestartPolicy(name=name)
    if count:
        if not re.fullmatch(r"[+-]?\d+", count):
            raise InvalidArgument(
                "invalid restart policy format: maximum retry count must be an integer"
            )
        policy.maximum_retry_count = int(count)
    check_restart_policy(policy)
    return policy


def _parse_bool(key: str, value: str) -> bool:
    # Go's strconv.ParseBool, as the docker CLI's --mount uses it.
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise InvalidArgument(f"invalid value for {key}: {value}")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidArgument(f"invalid field '{text}' must be a key=value pair")
    return key, value


def parse_mount(value: str) -> Mount:
    """``--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,...]``.

    The value is CSV, so a field may be quoted. The type defaults to ``volume``.
    """
    fields = next(csv.reader([value]), [])
    mount = Mount(type="volume")
    bind, volume, tmpfs = BindOptions(), VolumeOptions(), TmpfsOptions()
    for entry in fields:
        key, sep, val = entry.partition("=")
        lowered = key.lower()
        if not sep and lowered not in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
            raise InvalidArgument(f"invalid field '{entry}' must be a key=value pair")
        if lowered == "type":
            mount.type = val.lower()
        elif lowered in ("source", "src"):
            mount.source = val
        elif lowered in ("target", "dst", "destination"):
            mount.target = val
        elif lowered in ("readonly", "ro"):
            mount.read_only = _parse_bool(key, val) if sep else True
        elif lowered == "consistency":
            mount.consistency = val.lower()
        elif lowered == "bind-propagation":
            if val.lower() not in PROPAGATIONS:
                raise InvalidArgument(f"invalid propagation mode: {val}")
            bind.propagation = val.lower()
        elif lowered == "bind-nonrecursive":
            bind.non_recursive = _parse_bool(key, val) if sep else True
        elif lowered == "volume-nocopy":
            volume.no_copy = _parse_bool(key, val) if sep else True
        elif lowered == "volume-driver":
            driver = volume.driver_config or Driver()
            driver.name = val
            volume.driver_config = driver
        elif lowered == "volume-subpath":
            volume.subpath = val
        elif lowered in ("volume-label", "volume-opt"):
            k, v = _key_value(val)
            if lowered == "volume-label":
                volume.labels = {**(volume.labels or {}), k: v}
            else:
                driver = volume.driver_config or Driver()
                driver.options = {**(driver.options or {}), k: v}
                volume.driver_config = driver
        elif lowered == "tmpfs-size":
            try:
                tmpfs.size_bytes = parse_size(val)
            except InvalidArgument:
                raise InvalidArgument(f"invalid value for {key}: {val}") from None
        elif lowered == "tmpfs-mode":
            if not re.fullmatch(r"[0-7]+", val):
                raise InvalidArgument(f"invalid value for {key}: {val}")
            tmpfs.mode = int(val, 8)
        else:
            raise InvalidArgument(f"unexpected key '{key}' in '{entry}'")
    if not mount.target:
        raise InvalidArgument("target is required")
    # Options of one type given to another are an error, not silently dropped.
    for prefix, options, kind in (("bind", bind, "bind"), ("volume", volume, "volume"),
                                  ("tmpfs", tmpfs, "tmpfs")):
        if options == type(options)():
            continue
        if mount.type != kind:
            raise InvalidArgument(f"cannot mix '{prefix}-*' options with mount type '{mount.type}'")
        setattr(mount, f"{kind}_options", options)
    if mount.type not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"invalid mount config: mount type unknown: '{mount.type}'")
    if mount.type == "bind" and not mount.source:
        raise InvalidArgument(
            'invalid mount config for type "bind": field Source must not be empty'
        )
    if mount.type == "tmpfs" and mount.source:
        raise InvalidArgument(
            'invalid mount config for type "tmpfs": field Source must not be specified'
        )
    if not mount.target.startswith("/"):
        raise InvalidArgument(
            f'invalid mount config for type "{mount.type}": invalid mount path: '
            f"'{mount.target}' mount path must be absolute"
        )
    return mount


def _valid_device_mode(mode: str) -> bool:
    return 0 < len(mode) <= 3 and set(mode) <= set("rwm") and len(set(mode)) == len(mode)


def parse_device(value: str) -> DeviceMapping:
    """``--device HOST[:CONTAINER][:PERMISSIONS]``; permissions default to ``rwm``."""
    parts = value.split(":")
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"bad format for path: {value}")
    host, target, permissions = parts[0], "", "rwm"
    if len(parts) == 3:
        target, permissions = parts[1], parts[2]
        if not _valid_device_mode(permissions):
            raise InvalidArgument(f"bad mode specified: {permissions}")
    elif len(parts) == 2:
        if _valid_device_mode(parts[1]):
            permissions = parts[1]
        else:
            target = parts[1]
    target = target or host
    for path in (host, target):
        if not path.startswith("/"):
            raise InvalidArgument(f"{path} is not an absolute path")
    return DeviceMapping(
        path_on_host=host,
        path_in_container=posixpath.normpath(target),
        cgroup_permissions=permissions,
    )


# A device cgroup rule: "c 13:* rwm", "b *:* m".
_DEVICE_RULE = re.compile(r"^([abc]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def _check_device_rule(value: str) -> str:
    if not _DEVICE_RULE.match(value):
        raise InvalidArgument(f"invalid device cgroup format '{value}'")
    return value


def parse_add_host(value: str) -> str:
    """``--add-host NAME:IP`` (or ``NAME=IP``), as ``HostConfig.ExtraHosts`` keeps it.
    ``host-gateway`` stands for the host's address on the container's network."""
    # NAME=IP is unambiguous with IPv6 addresses; NAME:IP splits at the first colon.
    name, sep, address = value.partition("=")
    if not sep:
        name, sep, address = value.partition(":")
    if not sep or not name or not address:
        raise InvalidArgument(f'bad format for add-host: "{value}"')
    if address != "host-gateway":
        try:
            ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            raise InvalidArgument(f'invalid IP address in add-host: "{address}"') from None
    return f"{name}:{address}"


# Sysctls that are namespaced (moby opts.ValidateSysctl): anything else would change the
# host, so docker refuses it.
_IPC_SYSCTLS = frozenset(
    {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
     "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
)  # fmt: skip


def parse_sysctl(value: str) -> tuple[str, str]:
    """``--sysctl KEY=VALUE`` for a namespaced sysctl (IPC, ``fs.mqueue.*``, ``net.*``)."""
    key, sep, setting = value.partition("=")
    allowed = key in _IPC_SYSCTLS or key.startswith(("fs.mqueue.", "net."))
    if not sep or not allowed:
        raise InvalidArgument(f"sysctl '{value}' is not allowed")
    return key, setting


def parse_security_opts(values: Iterable[str]) -> list[str]:
    """``--security-opt`` values as the daemon receives them.

    ``no-new-privileges``, ``seccomp=unconfined|builtin|FILE``, ``label=...``,
    ``apparmor=...``, ``systempaths=unconfined``; a ``seccomp`` profile file is read
    and sent inline (compact JSON), as the docker CLI does.
    """
    result = []
    for option in values:
        key, sep, value = option.partition("=")
        if not sep and key != "no-new-privileges":
            key, sep, value = option.partition(":")  # the old "label:disable" form
        if (not sep or not value) and key != "no-new-privileges":
            raise InvalidArgument(f'Invalid --security-opt: "{option}"')
        if key == "seccomp" and value not in ("unconfined", "builtin", "default"):
            option = "seccomp=" + _read_seccomp_profile(value)
        elif key not in ("no-new-privileges", "seccomp", "label", "apparmor", "systempaths"):
            raise InvalidArgument(f'invalid --security-opt 2: "{option}"')
        result.append(option)
    return result


def _read_seccomp_profile(path: str) -> str:
    try:
        with open(path, "rb") as file:
            profile = json.load(file)
    except OSError as exc:
        raise InvalidArgument(
            f"opening seccomp profile ({path}) failed: {exc.strerror or exc}"
        ) from None
    except ValueError as exc:
        raise InvalidArgument(
            f"compacting json for seccomp profile ({path}) failed: {exc}"
        ) from None
    return json.dumps(profile, separators=(",", ":"))


# Go's time.ParseDuration: a sequence of decimal numbers, each with its unit.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                  "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(value: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``, ``0``) in nanoseconds."""
    text = value.lstrip("+-")
    sign = -1 if value.startswith("-") else 1
    if text == "0":
        return 0
    total, position = Fraction(0), 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += Fraction(match[1]) * _DURATION_UNIT[match[2]]
        position = match.end()
    if not text or position != len(text):
        raise InvalidArgument(f'time: invalid duration "{value}"')
    return sign * int(total)


def parse_env_file(path: str) -> list[str]:
    """The ``KEY=VALUE`` lines of an ``--env-file`` (or ``--label-file``).

    Blank lines and ``#`` comments are skipped; a line with a name only takes the
    variable's value from this process's environment, and is dropped when unset.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise InvalidArgument(f"open {path}: {(exc.strerror or str(exc)).lower()}") from None
    entries = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            line = raw.decode().lstrip()
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"env file {path} contains invalid utf8 bytes at line {number}"
            ) from None
        if not line or line.startswith("#"):
            continue
        name, sep, _ = line.partition("=")
        if not name:
            raise InvalidArgument(f"no variable name on line '{line}'")
        if re.search(r"\s", name):
            raise InvalidArgument(f"variable '{name}' contains whitespaces")
        if sep:
            entries.append(line)
        elif name in os.environ:
            entries.append(f"{name}={os.environ[name]}")
    return entries


def env_value(entry: str) -> str:
    # `-e NAME` passes this process's NAME on; an unset NAME stays a bare name, which
    # the engine reads as "unset NAME".
    if "=" not in entry and entry in os.environ:
        return f"{entry}={os.environ[entry]}"
    return entry


def _labels(entries: Iterable[str]) -> dict[str, str]:
    labels = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        labels[key] = value
    return labels


def _healthcheck(flags: RunFlags) -> HealthConfig | None:
    timing = {
        "interval": ("--health-interval", flags.health_interval),
        "timeout": ("--health-timeout", flags.health_timeout),
        "start_period": ("--health-start-period", flags.health_start_period),
        "start_interval": ("--health-start-interval", flags.health_start_interval),
    }
    given = any(value is not None for _, value in timing.values())
    if flags.no_healthcheck:
        if flags.health_cmd or given or flags.health_retries:
            raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
        return HealthConfig(test=["NONE"])
    if not (flags.health_cmd or given or flags.health_retries):
        return None
    health = HealthConfig(test=["CMD-SHELL", flags.health_cmd] if flags.health_cmd else None)
    for attribute, (flag, value) in timing.items():
        if value is None:
            continue
        nanoseconds = _for_flag(parse_duration, value, flag)
        if nanoseconds < 0:
            raise InvalidArgument(f"{flag} cannot be negative")
        setattr(health, attribute, nanoseconds)
    if flags.health_retries is not None:
        if flags.health_retries < 0:
            raise InvalidArgument("--health-retries cannot be negative")
        health.retries = flags.health_retries
    return health


def _opt_size(value: str | None, flag: str, parse: Callable[[str], int] = parse_size) -> int | None:
    return None if value is None else _for_flag(parse, value, flag)


def _mapping(pairs: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    result = dict(pairs)
    return result or None


# --- all of them ------------------------------------------------------------------------


def to_config(flags: RunFlags) -> tuple[ContainerConfig, HostConfig]:
    """The ``Config`` and ``HostConfig`` the docker CLI would send for these flags.

    Only what the flags say is set; the image's defaults are merged later, when the
    container's spec is rendered (``dockyard.engine.ocispec.render``).
    """
    if flags.workdir is not None and not flags.workdir.startswith("/"):
        raise InvalidArgument(
            f"the working directory '{flags.workdir}' is invalid, it needs to be an absolute path"
        )
    env = [entry for path in flags.env_file for entry in parse_env_file(path)]
    env += [env_value(entry) for entry in flags.env]
    labels = [entry for path in flags.label_file for entry in parse_env_file(path)]
    labels += flags.label

    # -v: a bind or a named volume goes to Binds, a lone path is an anonymous volume.
    binds, volumes = [], {}
    for raw in flags.volume:
        bind = parse_bind(raw)
        if bind.source:
            binds.append(raw)
        else:
            volumes[bind.target] = {}

    restart = parse_restart(flags.restart) if flags.restart else None
    if flags.rm and restart is not None and restart.name not in ("", "no"):
        raise InvalidArgument("Conflicting options: --restart and --rm")

    ulimits: dict[str, Ulimit] = {}
    for value in flags.ulimit:
        ulimit = _for_flag(parse_ulimit, value, "--ulimit")
        ulimits[ulimit.name] = ulimit  # a later --ulimit of the same name wins

    entrypoint = None if flags.entrypoint is None else [flags.entrypoint]
    port_bindings = _port_bindings(flags.publish)
    exposed = {_port_key(port): {} for port in flags.expose}
    exposed.update({key: {} for key in port_bindings})
    config = ContainerConfig(
        hostname=flags.hostname or None,
        domainname=flags.domainname or None,
        user=flags.user or None,
        attach_stdin=flags.interactive or None,
        tty=flags.tty or None,
        open_stdin=flags.interactive or None,
        stdin_once=flags.interactive or None,
        env=env or None,
        cmd=list(flags.command) or None,
        healthcheck=_healthcheck(flags),
        image=flags.image or None,
        volumes=volumes or None,
        working_dir=flags.workdir or None,
        entrypoint=entrypoint,
        exposed_ports=exposed or None,
        labels=_labels(labels) or None,
        stop_signal=flags.stop_signal or None,
        stop_timeout=flags.stop_timeout,
    )
    host = HostConfig(
        binds=binds or None,
        log_config=LogConfig(type=flags.log_driver, config=_labels(flags.log_opt) or None)
        if flags.log_driver or flags.log_opt
        else None,
        network_mode=flags.network or None,
        port_bindings=port_bindings or None,
        publish_all_ports=flags.publish_all or None,
        links=[_link(value) for value in flags.link] or None,
        restart_policy=restart,
        auto_remove=flags.rm or None,
        volume_driver=flags.volume_driver or None,
        volumes_from=list(flags.volumes_from) or None,
        mounts=[_for_flag(parse_mount, value, "--mount") for value in flags.mount] or None,
        cap_add=[normalize_capability(name) for name in flags.cap_add] or None,
        cap_drop=[normalize_capability(name) for name in flags.cap_drop] or None,
        cgroupns_mode=flags.cgroupns or None,
        dns=list(flags.dns) or None,
        dns_options=list(flags.dns_option) or None,
        dns_search=list(flags.dns_search) or None,
        extra_hosts=[_for_flag(parse_add_host, v, "--add-host") for v in flags.add_host] or None,
        group_add=list(flags.group_add) or None,
        ipc_mode=flags.ipc or None,
        oom_score_adj=flags.oom_score_adj,
        pid_mode=flags.pid or None,
        privileged=flags.privileged or None,
        readonly_rootfs=flags.read_only or None,
        security_opt=parse_security_opts(flags.security_opt) or None,
        tmpfs=_mapping(_tmpfs_entry(value) for value in flags.tmpfs),
        uts_mode=flags.uts or None,
        userns_mode=flags.userns or None,
        shm_size=_opt_size(flags.shm_size, "--shm-size"),
        sysctls=_mapping(_for_flag(parse_sysctl, v, "--sysctl") for v in flags.sysctl),
        runtime=flags.runtime or None,
        cpu_shares=flags.cpu_shares,
        memory=_opt_size(flags.memory, "-m, --memory"),
        blkio_weight=flags.blkio_weight,
        cpu_period=flags.cpu_period,
        cpu_quota=flags.cpu_quota,
        cpuset_cpus=flags.cpuset_cpus or None,
        cpuset_mems=flags.cpuset_mems or None,
        devices=[_for_flag(parse_device, value, "--device") for value in flags.device] or None,
        device_cgroup_rules=[
            _for_flag(_check_device_rule, value, "--device-cgroup-rule")
            for value in flags.device_cgroup_rule
        ]
        or None,
        memory_reservation=_opt_size(flags.memory_reservation, "--memory-reservation"),
        memory_swap=_opt_size(flags.memory_swap, "--memory-swap", _swap_size),
        nano_cpus=None if flags.cpus is None else _for_flag(parse_cpus, flags.cpus, "--cpus"),
        oom_kill_disable=flags.oom_kill_disable or None,
        init=flags.init or None,
        pids_limit=flags.pids_limit,
        ulimits=list(ulimits.values()) or None,
    )
    return config, host


def networking_config(flags: RunFlags) -> NetworkingConfig | None:
    """The ``NetworkingConfig`` the docker CLI sends for ``--network-alias``, ``--ip``,
    ``--ip6`` and ``--mac-address``: settings of the container's network."""
    for value, what in ((flags.ip, "IPv4"), (flags.ip6, "IPv6")):
        if value is not None:
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                address = None
            if address is None or f"IPv{address.version}" != what:
                raise InvalidArgument(f"invalid {what} address: {value}")
    if flags.mac_address is not None and not re.fullmatch(
            r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", flags.mac_address):
        raise InvalidArgument(f"{flags.mac_address} is not a valid mac address")
    if not (flags.network_alias or flags.ip or flags.ip6 or flags.mac_address):
        return None
    addresses = EndpointIPAMConfig(ipv4_address=flags.ip or None,
                                   ipv6_address=flags.ip6 or None)
    settings = EndpointSettings(
        ipam_config=addresses if flags.ip or flags.ip6 else None,
        aliases=list(flags.network_alias) or None, mac_address=flags.mac_address or None)
    return NetworkingConfig(endpoints_config={flags.network or "default": settings})


def _port_bindings(values: Iterable[str]) -> dict[str, list[PortBinding]]:
    """``-p`` values as ``HostConfig.PortBindings``."""
    from dockyard.network.ports import parse_publish

    bindings: dict[str, list[PortBinding]] = {}
    for value in values:
        for binding in _for_flag(parse_publish, value, "-p, --publish"):
            host_port = str(binding.host_port or "")
            if binding.host_port_end:
                host_port += f"-{binding.host_port_end}"
            bindings.setdefault(f"{binding.container_port}/{binding.proto}", []).append(
                PortBinding(host_ip=binding.host_ip, host_port=host_port))
    return bindings


def _link(value: str) -> str:
    """``--link NAME[:ALIAS]`` as ``HostConfig.Links`` keeps it (the alias defaults to
    the name)."""
    name, _, alias = value.partition(":")
    if not name:
        raise InvalidArgument(f"invalid link format: {value}")
    return f"{name.removeprefix('/')}:{alias or name.removeprefix('/')}"


def _tmpfs_entry(value: str) -> tuple[str, str]:
    """``--tmpfs PATH[:OPTIONS]`` as a ``HostConfig.Tmpfs`` item."""
    path, _, options = value.partition(":")
    if not path.startswith("/"):
        raise InvalidArgument(
            f'invalid mount config for type "tmpfs": invalid mount path: '
            f"'{path}' mount path must be absolute"
        )
    return posixpath.normpath(path), options


def _port_key(port: str) -> str:
    """``--expose 80`` / ``80/udp`` as an ``ExposedPorts`` key (``80/tcp``)."""
    number, _, protocol = port.partition("/")
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise _flag_error(port, "--expose", f"invalid port: {number}")
    return f"{number}/{protocol or 'tcp'}"

