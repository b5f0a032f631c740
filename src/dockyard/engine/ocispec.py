"""A container's configuration rendered as its OCI runtime spec (``config.json``).

``render`` takes what Docker's daemon has when it starts a container (the ``Config``
and ``HostConfig`` the user gave, the image's configuration, the rootfs, the paths the
other services prepared) and returns the ``dockyard.oci.runtime.Spec`` that
``dockyard-runtime`` (or runc, crun) runs. It follows moby's ``daemon/oci_linux.go``:

- command: the user's ``Entrypoint`` / ``Cmd`` merged over the image's exactly as the
  daemon merges them (``command``), ``--init`` put in front when asked;
- environment: ``PATH``, ``HOSTNAME`` (and ``TERM`` with a tty) first, then the
  user's and the image's variables; a bare ``NAME`` unsets ``NAME``; ``HOME`` from
  the user's passwd entry unless set (runc does the same);
- user: ``name``, ``uid``, ``name:group``, ``uid:gid``... resolved against the
  rootfs's ``/etc/passwd`` and ``/etc/group``, opened inside the rootfs
  (``openat2(RESOLVE_IN_ROOT)``: a hostile image's symlinks stay inside it), plus the
  supplementary groups of ``/etc/group`` and ``GroupAdd``;
- security: Docker's default capabilities with ``CapAdd`` / ``CapDrop`` (``ALL``),
  the default seccomp profile or the user's, masked and read-only ``/proc`` paths,
  ``no-new-privileges``; ``Privileged`` lifts all of it and gives every host device;
- mounts: Docker's defaults (``/dev/shm`` of ``ShmSize``), then ``Binds``, ``Mounts``,
  ``Tmpfs``, the volumes the caller resolved and ``/etc/hosts``, ``/etc/resolv.conf``,
  ``/etc/hostname``, parents before children; a user mount replaces a default one;
- resources, rlimits, devices, sysctls, namespaces (host ones for ``--network host``,
  ``--ipc host``, ``--uts host``, ``--pid host``, ``--cgroupns host``);
- annotations: the labels, ``HostConfig.Annotations``, and the stop signal and stop
  timeout for the monitor (``STOP_SIGNAL_ANNOTATION``, ``STOP_TIMEOUT_ANNOTATION``).

What needs another service is the caller's: named and anonymous volumes
(``volume_requests`` says which, ``render`` takes them as ``(source, target, options)``),
the network namespace, the cgroup path, the init binary and the network files.
"""

from __future__ import annotations

import json
import os
import posixpath
import resource
import stat
from collections.abc import Collection, Iterator, Sequence
from typing import NamedTuple

from dockyard.engine.config import (
    ALL_CAPABILITIES,
    BindSpec,
    ContainerConfig,
    HostConfig,
    normalize_capability,
    parse_bind,
)
from dockyard.errors import InvalidArgument
from dockyard.linux import capabilities as linux_caps
from dockyard.linux import syscalls as sc
from dockyard.oci.image import HealthConfig, ImageConfig
from dockyard.oci.runtime import (
    CAPABILITIES,
    RLIMIT_TYPES,
    Box,
    LinuxBlockIO,
    LinuxCapabilities,
    LinuxCPU,
    LinuxDevice,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxNamespace,
    LinuxPids,
    LinuxResources,
    LinuxSeccomp,
    Mount,
    POSIXRlimit,
    Spec,
    User,
    validate_spec,
)
from dockyard.runtime.spec import (
    DEFAULT_CAPABILITIES,
    default_seccomp_profile,
    default_spec,
    seccomp_from_profile,
)

__all__ = [
    "DEFAULT_NOFILE",
    "DEFAULT_PATH",
    "DEFAULT_SHM_SIZE",
    "INIT_PATH",
    "STOP_SIGNAL_ANNOTATION",
    "STOP_TIMEOUT_ANNOTATION",
    "ResolvedUser",
    "Volume",
    "VolumeRequest",
    "capabilities",
    "command",
    "environment",
    "merge_image_config",
    "render",
    "resolve_user",
    "volume_requests",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Docker's default ``--shm-size``: 64 MiB.
DEFAULT_SHM_SIZE = 64 << 20
#: The open-files limit dockerd's containers get (dockerd runs with LimitNOFILE=1048576).
DEFAULT_NOFILE = 1 << 20
#: Where ``--init``'s binary is bound in the container, as Docker does.
INIT_PATH = "/sbin/docker-init"
#: The host binaries ``--init`` binds at INIT_PATH, the first found on the PATH: Docker's
#: own, then Debian's static tini (static, so that it runs in any image).
INIT_BINARIES = ("docker-init", "tini-static")
#: The image-spec's key for the signal that stops the container (read by the monitor).
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"
#: Seconds the monitor waits after the stop signal before SIGKILL, when the user set it.
STOP_TIMEOUT_ANNOTATION = "io.dockyard.stopTimeout"

# /etc/passwd and /etc/group larger than this are not a real image's: refuse to read on.
_MAX_DB_SIZE = 16 << 20
_MAX_ID = 2**31 - 1
_CFS_PERIOD = 100_000  # microseconds: the kernel's default, which Docker uses for --cpus
_RLIM_INFINITY = 2**64 - 1
_MIN_MEMORY = 6 << 20


class Volume(NamedTuple):
    """A volume the caller resolved to a host directory, mounted at ``target``."""

    source: str
    target: str
    options: Sequence[str] = ()


class VolumeRequest(NamedTuple):
    """A volume the container needs: ``name`` empty for an anonymous one."""

    name: str
    target: str
    read_only: bool
    no_copy: bool


class ResolvedUser(NamedTuple):
    """The process's ids and home directory, from the rootfs's passwd and group files."""

    uid: int
    gid: int
    additional_gids: list[int]
    home: str


# --- Config merged with the image -------------------------------------------------------


def merge_image_config(config: ContainerConfig, image: ImageConfig | None) -> ContainerConfig:
    """The user's ``Config`` with the image's defaults filled in, as moby's ``merge``.

    A user ``Entrypoint`` (even ``[""]``) drops both the image's Entrypoint and Cmd; an
    empty list (``[]``, not ``None``) keeps the image's Cmd but not its Entrypoint.
    """
    defaults = image.config if image is not None else None
    if defaults is None:
        return config
    merged = ContainerConfig(**{name: getattr(config, name) for name in config.__struct_fields__})
    merged.user = config.user or defaults.user
    merged.working_dir = config.working_dir or defaults.working_dir
    merged.stop_signal = config.stop_signal or defaults.stop_signal
    ports = {**(defaults.exposed_ports or {}), **(config.exposed_ports or {})}
    merged.exposed_ports = ports or None
    merged.volumes = {**(defaults.volumes or {}), **(config.volumes or {})} or None
    merged.labels = {**(defaults.labels or {}), **(config.labels or {})} or None
    merged.healthcheck = _merge_healthcheck(config.healthcheck, defaults.healthcheck)
    merged.shell = config.shell or defaults.shell
    # Docker keeps the user's variables first, then the image's it does not override.
    user_env = config.env or []
    given = {entry.partition("=")[0] for entry in user_env}
    image_env = [entry for entry in defaults.env or () if entry.partition("=")[0] not in given]
    merged.env = [*user_env, *image_env] or None
    if not config.entrypoint:
        if not config.cmd:
            merged.cmd = defaults.cmd
            merged.args_escaped = defaults.args_escaped
        if config.entrypoint is None:
            merged.entrypoint = defaults.entrypoint
    return merged


def _merge_healthcheck(mine: HealthConfig | None, image: HealthConfig | None
                       ) -> HealthConfig | None:
    """moby's merge: each of the user's members that is unset (or 0) is the image's."""
    if mine is None or image is None:
        return mine or image
    return HealthConfig(**{name: getattr(mine, name) or getattr(image, name)
                           for name in HealthConfig.__struct_fields__})


def command(config: ContainerConfig) -> list[str]:
    """The process's argv of a merged config: Entrypoint then Cmd (``[""]`` resets)."""
    entrypoint = config.entrypoint or []
    if entrypoint == [""]:
        entrypoint = []
    args = [*entrypoint, *(config.cmd or [])]
    if not args:
        raise InvalidArgument("no command specified: give one after the image name")
    return args


def environment(config: ContainerConfig, hostname: str, home: str) -> list[str]:
    """The process environment: Docker's defaults, then the merged ``Env``, then HOME."""
    env = {"PATH": f"PATH={DEFAULT_PATH}", "HOSTNAME": f"HOSTNAME={hostname}"}
    if config.tty:
        env["TERM"] = "TERM=xterm"
    unset = set()
    for entry in config.env or ():
        name, sep, _ = entry.partition("=")
        if sep:
            env[name] = entry
            unset.discard(name)
        else:
            unset.add(name)  # a bare NAME removes NAME, as Docker does
    for name in unset:
        env.pop(name, None)
    env.setdefault("HOME", f"HOME={home}")
    return list(env.values())


# --- user and groups, read inside the rootfs --------------------------------------------


def _read_in_root(rootfs: str, path: str) -> str | None:
    """A text file of the rootfs, its path resolved as if the rootfs were ``/``."""
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # O_NONBLOCK: an image could make /etc/passwd a FIFO and hang the engine.
        fd = sc.openat2(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC,
                        resolve=sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    except FileNotFoundError:
        return None
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{path} in the image is not a regular file")
        data = file.read(_MAX_DB_SIZE + 1)
    if len(data) > _MAX_DB_SIZE:
        raise InvalidArgument(f"{path} in the image is larger than {_MAX_DB_SIZE} bytes")
    return data.decode(errors="replace")


def _entries(text: str | None, fields: int) -> Iterator[list[str]]:
    """The colon-separated lines of a passwd / group file, padded to ``fields``."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = line.split(":")
            yield parts + [""] * (fields - len(parts))


def _numeric_id(text: str) -> int | None:
    if not text.isdigit():
        return None
    number = int(text)
    if number > _MAX_ID:
        raise InvalidArgument(f"uids and gids must be in range 0-{_MAX_ID}")
    return number


def resolve_user(rootfs: str, user: str, group_add: Sequence[str] = ()) -> ResolvedUser:
    """``user`` (``name``, ``uid``, ``name:group``, ``uid:gid``...) as ids, the way runc's
    ``GetExecUser`` reads the rootfs's ``/etc/passwd`` and ``/etc/group``.

    A numeric user or group missing from the files is used as is; a missing name is an
    error. Without an explicit group, the groups listing the user are its supplementary
    groups; ``group_add`` (names or gids) are added to them.
    """
    user_part, _, group_part = user.partition(":")
    passwd = _read_in_root(rootfs, "/etc/passwd")
    uid_arg = _numeric_id(user_part)

    def matches(entry: list[str]) -> bool:
        if not user_part:  # no user: root, whose entry gives the home directory
            return entry[2] == "0"
        if uid_arg is not None:  # a number is always a uid, never a name
            return entry[2] == str(uid_arg)
        return entry[0] == user_part

    uid, gid, home, name = 0, 0, "/", ""
    for entry in _entries(passwd, 7):
        if matches(entry) and entry[2].isdigit() and entry[3].isdigit():
            uid, gid, home, name = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
            break
    else:
        if uid_arg is not None:
            uid = uid_arg
        elif user_part:
            raise InvalidArgument(
                f"unable to find user {user_part}: no matching entries in passwd file"
            )
    group_text = _read_in_root(rootfs, "/etc/group") if (group_part or name or group_add) else None
    groups = [(entry[0], entry[2], entry[3].split(",")) for entry in _entries(group_text, 4)
              if entry[2].isdigit()]
    supplementary: list[int] = []
    if group_part:
        gid_arg = _numeric_id(group_part)
        found = [int(g) for n, g, _ in groups
                 if (g == str(gid_arg) if gid_arg is not None else n == group_part)]
        if found:
            gid = found[0]
        elif gid_arg is not None:
            gid = gid_arg
        else:
            raise InvalidArgument(
                f"unable to find group {group_part}: no matching entries in group file"
            )
    elif name:
        supplementary = [int(g) for _, g, members in groups if name in members]
    for wanted in group_add:
        number = _numeric_id(wanted)
        found = [int(g) for n, g, _ in groups if n == wanted or g == wanted]
        if found:
            supplementary.append(found[0])
        elif number is not None:
            supplementary.append(number)
        else:
            raise InvalidArgument(
                f"unable to find group {wanted}: no matching entries in group file"
            )
    return ResolvedUser(uid, gid, list(dict.fromkeys(supplementary)), home)


# --- capabilities and security options --------------------------------------------------


def capabilities(host: HostConfig) -> list[str]:
    """The bounding set: Docker's defaults with ``CapDrop`` removed, then ``CapAdd``.

    ``--cap-add ALL`` is every capability but the dropped ones; ``--cap-drop ALL`` is
    only the added ones; ``Privileged`` is every capability. "Every" is every one the
    engine's own bounding set holds, as podman grants it: no process can give a
    capability it lacks (a root confined without CAP_SYS_RESOURCE would otherwise fail
    every privileged create).
    """
    if host.privileged:
        return held_capabilities()
    drop = [normalize_capability(name) for name in host.cap_drop or ()]
    add = [normalize_capability(name) for name in host.cap_add or ()]
    if ALL_CAPABILITIES in add:
        return [cap for cap in held_capabilities() if cap not in drop]
    base = [] if ALL_CAPABILITIES in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    return list(dict.fromkeys([*base, *(cap for cap in add if cap != ALL_CAPABILITIES)]))


def find_init() -> str | None:
    """The host path of the binary ``--init`` runs (see INIT_BINARIES), if there is one."""
    import shutil

    for name in INIT_BINARIES:
        if path := shutil.which(name):
            return os.path.realpath(path)
    return None


def held_capabilities() -> list[str]:
    """The capabilities of the calling process's bounding set, in the OCI order."""
    bounding = linux_caps.current()["CapBnd"]
    return [cap for cap in CAPABILITIES
            if cap in linux_caps.NUMBERS and bounding >> linux_caps.NUMBERS[cap] & 1]


class _Security(NamedTuple):
    no_new_privileges: bool
    seccomp: str  # "default", "unconfined" or a profile's JSON
    system_paths_unconfined: bool


def _security(host: HostConfig) -> _Security:
    nnp, seccomp, unconfined_paths = False, "default", False
    for option in host.security_opt or ():
        key, sep, value = option.partition("=")
        if not sep and key != "no-new-privileges":
            key, sep, value = option.partition(":")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise InvalidArgument(f'invalid --security-opt 2: "{option}"')
            nnp = value != "false"
        elif key == "seccomp":
            seccomp = "default" if value == "builtin" else value
        elif key == "systempaths" and value == "unconfined":
            unconfined_paths = True
        elif key == "label":
            pass  # SELinux labels: dockyard's hosts run without SELinux, as Docker there
        elif key == "apparmor" and value != "unconfined":
            raise InvalidArgument(
                f"apparmor profile {value!r} is not supported: use apparmor=unconfined"
            )
        elif key != "apparmor":
            raise InvalidArgument(f'invalid --security-opt 2: "{option}"')
    return _Security(nnp, seccomp, unconfined_paths)


def _seccomp(security: _Security, privileged: bool, caps: list[str]) -> LinuxSeccomp | None:
    if privileged or security.seccomp == "unconfined":
        return None
    if security.seccomp == "default":
        return seccomp_from_profile(default_seccomp_profile(), caps)
    try:
        profile = json.loads(security.seccomp)
    except ValueError as exc:
        raise InvalidArgument(f"decoding seccomp profile failed: {exc}") from None
    if not isinstance(profile, dict):
        raise InvalidArgument("decoding seccomp profile failed: not a JSON object")
    return seccomp_from_profile(profile, caps)


# --- mounts -----------------------------------------------------------------------------

# Mount flags that undo each other: the later one wins when options are merged.
_OPPOSITES = [("ro", "rw"), ("exec", "noexec"), ("suid", "nosuid"), ("dev", "nodev"),
              ("atime", "noatime"), ("diratime", "nodiratime"), ("relatime", "norelatime"),
              ("strictatime", "nostrictatime"), ("sync", "async")]
_OPTION_GROUP = {flag: pair[0] for pair in _OPPOSITES for flag in pair}
_OPTION_GROUP.update((p, "propagation") for p in ("private", "rprivate", "shared", "rshared",
                                                   "slave", "rslave"))
# Docker's tmpfs options before the user's (moby's MergeTmpfsOptions).
_TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev", "rprivate")


def _merge_options(options: Sequence[str]) -> list[str]:
    """Mount options with each later option replacing an earlier one of its kind."""
    merged: dict[str, str] = {}
    for option in options:
        if option:
            kind = _OPTION_GROUP.get(option, option.partition("=")[0])
            merged.pop(kind, None)
            merged[kind] = option
    return list(merged.values())


def _bind(source: str, target: str, read_only: bool, propagation: str | None,
          recursive: bool = True) -> Mount:
    options = ["rbind" if recursive else "bind", propagation or "rprivate"]
    if read_only:
        options.append("ro")
    return Mount(destination=target, type="bind", source=source, options=options)


def _tmpfs(target: str, options: Sequence[str]) -> Mount:
    return Mount(destination=target, type="tmpfs", source="tmpfs",
                 options=_merge_options([*_TMPFS_DEFAULTS, *options]))


def _host_bind(spec: BindSpec) -> Mount:
    # Docker creates a missing -v host directory (but not a missing --mount source).
    os.makedirs(spec.source, 0o755, exist_ok=True)
    return _bind(spec.source, spec.target, spec.read_only, spec.propagation)


def _user_mounts(host: HostConfig, volumes: Sequence[Volume]) -> list[Mount]:
    """The user's mounts, volumes included, checked for duplicates, parents first."""
    mounts = []
    for raw in host.binds or ():
        spec = parse_bind(raw)
        if spec.type == "bind":
            mounts.append(_host_bind(spec))
    for mount in host.mounts or ():
        target = posixpath.normpath(mount.target or "")
        if not target.startswith("/"):
            raise InvalidArgument(f"invalid mount config: mount path '{mount.target}' "
                                  "must be absolute")
        if mount.type == "bind":
            source = mount.source or ""
            if not os.path.exists(source):
                raise InvalidArgument(
                    f'invalid mount config for type "bind": bind source path does not exist: '
                    f"{source}"
                )
            options = mount.bind_options
            mounts.append(_bind(source, target, bool(mount.read_only),
                                options.propagation if options else None,
                                recursive=not (options and options.non_recursive)))
        elif mount.type == "tmpfs":
            tmpfs = mount.tmpfs_options
            data = []
            if tmpfs and tmpfs.size_bytes:
                data.append(f"size={tmpfs.size_bytes}")
            if tmpfs and tmpfs.mode is not None:
                data.append(f"mode={tmpfs.mode:o}")
            if mount.read_only:
                data.append("ro")
            mounts.append(_tmpfs(target, data))
        elif mount.type != "volume":  # volumes come resolved, in `volumes`
            raise InvalidArgument(f"mount type {mount.type!r} is not supported")
    for target, data in (host.tmpfs or {}).items():
        mounts.append(_tmpfs(posixpath.normpath(target), data.split(",") if data else []))
    for volume in volumes:
        options = list(volume.options)
        if not {"bind", "rbind"} & set(options):
            options = ["rbind", "rprivate", *options]
        mounts.append(Mount(destination=posixpath.normpath(volume.target), type="bind",
                            source=volume.source, options=options))
    seen: set[str] = set()
    for mount in mounts:
        if mount.destination in seen:
            raise InvalidArgument(f"Duplicate mount point: {mount.destination}")
        seen.add(mount.destination)
    # Parents before children, or a parent mounted later would hide its children.
    return sorted(mounts, key=lambda m: m.destination.rstrip("/").count("/"))


def volume_requests(config: ContainerConfig, host: HostConfig,
                    image: ImageConfig | None = None,
                    inherited: Collection[str] = ()) -> list[VolumeRequest]:
    """The named and anonymous volumes the caller must resolve before ``render``.

    They are ``Binds`` naming a volume, ``Mounts`` of type ``volume`` and the
    ``Volumes`` of the config and the image, less the targets another mount covers
    (``inherited``: those of ``--volumes-from``, which the caller resolves).
    """
    requests: dict[str, VolumeRequest] = {}
    covered: set[str] = set(inherited)
    for raw in host.binds or ():
        spec = parse_bind(raw)
        if spec.type == "volume":
            requests[spec.target] = VolumeRequest(spec.source, spec.target, spec.read_only,
                                                  spec.nocopy)
        covered.add(spec.target)
    for mount in host.mounts or ():
        target = posixpath.normpath(mount.target or "/")
        if mount.type == "volume":
            options = mount.volume_options
            requests[target] = VolumeRequest(mount.source or "", target, bool(mount.read_only),
                                             bool(options and options.no_copy))
        covered.add(target)
    covered.update(posixpath.normpath(path) for path in host.tmpfs or {})
    merged = merge_image_config(config, image)
    for path in merged.volumes or {}:
        target = posixpath.normpath(path)
        if target not in covered and target not in requests:
            requests[target] = VolumeRequest("", target, False, False)
    return list(requests.values())


# --- devices ----------------------------------------------------------------------------

# Host /dev entries a privileged container does not get: they are the container's own.
_SKIP_DEV_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def _device(host_path: str, container_path: str, st: os.stat_result) -> LinuxDevice:
    return LinuxDevice(type="c" if stat.S_ISCHR(st.st_mode) else "b", path=container_path,
                       major=os.major(st.st_rdev), minor=os.minor(st.st_rdev),
                       file_mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)


def _devices_under(host_dir: str, container_dir: str) -> Iterator[LinuxDevice]:
    """Every device node below a host directory, mapped below ``container_dir``."""
    for entry in sorted(os.scandir(host_dir), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DEV_DIRS:
                yield from _devices_under(entry.path, posixpath.join(container_dir, entry.name))
            continue
        st = entry.stat(follow_symlinks=False)  # symlinks are no devices, as in Docker
        if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and entry.path != "/dev/console":
            yield _device(entry.path, posixpath.join(container_dir, entry.name), st)


def _user_devices(host: HostConfig) -> tuple[list[LinuxDevice], list[LinuxDeviceCgroup]]:
    devices: list[LinuxDevice] = []
    rules: list[LinuxDeviceCgroup] = []
    for mapping in host.devices or ():
        source = mapping.path_on_host or ""
        target = mapping.path_in_container or source
        access = mapping.cgroup_permissions or "rwm"
        try:
            st = os.stat(source)
        except OSError as exc:
            raise InvalidArgument(
                "error gathering device information while adding custom device "
                f'"{source}": {(exc.strerror or str(exc)).lower()}'
            ) from None
        if stat.S_ISDIR(st.st_mode):
            found = list(_devices_under(source, target))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found = [_device(source, target, st)]
        else:
            raise InvalidArgument(
                "error gathering device information while adding custom device "
                f'"{source}": not a device node'
            )
        devices += found
        rules += [LinuxDeviceCgroup(allow=True, type=d.type, major=d.major, minor=d.minor,
                                    access=access) for d in found]
    for rule in host.device_cgroup_rules or ():
        kind, numbers, access = [*rule.split(), "", "", ""][:3]
        major, _, minor = numbers.partition(":")
        if kind not in ("a", "b", "c") or not access or not set(access) <= set("rwm"):
            raise InvalidArgument(f"invalid device cgroup format '{rule}'")
        rules.append(LinuxDeviceCgroup(
            allow=True, type=kind, access=access,
            major=None if major == "*" else _parse_int(major, rule),
            minor=None if minor == "*" else _parse_int(minor, rule)))
    return devices, rules


def _parse_int(text: str, rule: str) -> int:
    if not text.isdigit():
        raise InvalidArgument(f"invalid device cgroup format '{rule}'")
    return int(text)


# --- resources and limits ---------------------------------------------------------------


def render_resources(host: HostConfig) -> LinuxResources:
    """The cgroup limits, with the daemon's checks of ``Resources``."""
    memory = host.memory or 0
    swap = host.memory_swap or 0
    reservation = host.memory_reservation or 0
    if 0 < memory < _MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if memory == 0 and swap > 0:
        raise InvalidArgument(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    if memory and 0 < swap < memory:
        raise InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if memory and reservation > memory:
        raise InvalidArgument(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )
    swappiness = host.memory_swappiness
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise InvalidArgument(
            f"Invalid value: {swappiness}, valid memory swappiness range is 0-100"
        )
    mem = LinuxMemory(
        limit=memory or None,
        reservation=reservation or None,
        # Docker's default swap is as much again as the memory: -m 64m is 128m memory+swap.
        swap=swap or (2 * memory if memory else None),
        swappiness=swappiness if swappiness is not None and swappiness >= 0 else None,
        disable_oom_killer=host.oom_kill_disable or None,
    )
    nano = host.nano_cpus or 0
    if nano and host.cpu_period:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano and host.cpu_quota:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    cpus = os.cpu_count() or 1
    if nano < 0 or nano > cpus * 1_000_000_000:
        raise InvalidArgument(
            f"Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
        )
    cpu = LinuxCPU(
        shares=host.cpu_shares or None,
        quota=nano * _CFS_PERIOD // 1_000_000_000 if nano else host.cpu_quota or None,
        period=_CFS_PERIOD if nano else host.cpu_period or None,
        cpus=host.cpuset_cpus or None,
        mems=host.cpuset_mems or None,
    )
    weight = host.blkio_weight or 0
    if weight and not 10 <= weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    return LinuxResources(
        memory=mem if mem != LinuxMemory() else None,
        cpu=cpu if cpu != LinuxCPU() else None,
        pids=LinuxPids(limit=host.pids_limit) if host.pids_limit and host.pids_limit > 0 else None,
        block_io=LinuxBlockIO(weight=weight) if weight else None,
    )


def _rlimits(host: HostConfig) -> list[POSIXRlimit]:
    """Docker's default open-files limit (capped to this host's hard limit: a container
    cannot be given more than its runtime may set), then the user's ``Ulimits``."""
    host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = DEFAULT_NOFILE if host_hard == resource.RLIM_INFINITY else min(DEFAULT_NOFILE,
                                                                             host_hard)
    limits = {"RLIMIT_NOFILE": POSIXRlimit(type="RLIMIT_NOFILE", soft=nofile, hard=nofile)}
    for ulimit in host.ulimits or ():
        kind = "RLIMIT_" + ulimit.name.upper()
        if kind not in RLIMIT_TYPES:
            raise InvalidArgument(f"invalid ulimit type: {ulimit.name}")
        soft, hard = (_RLIM_INFINITY if v == -1 else v for v in (ulimit.soft, ulimit.hard))
        if soft > hard:
            raise InvalidArgument(
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )
        limits[kind] = POSIXRlimit(type=kind, soft=soft, hard=hard)
    return list(limits.values())


# --- namespaces -------------------------------------------------------------------------


def _namespaces(host: HostConfig, netns_path: str | None) -> list[LinuxNamespace]:
    def mode(value: str | None, what: str, allowed: tuple[str, ...]) -> str:
        value = value or ""
        if value not in ("host", *allowed):
            raise InvalidArgument(f"{what} mode {value!r} is not supported yet")
        return value

    namespaces = [LinuxNamespace(type="mount")]
    if mode(host.pid_mode, "pid", ("", "private")) != "host":
        namespaces.append(LinuxNamespace(type="pid"))
    if mode(host.ipc_mode, "ipc", ("", "private", "shareable", "none")) != "host":
        namespaces.append(LinuxNamespace(type="ipc"))
    if mode(host.uts_mode, "uts", ("",)) != "host":
        namespaces.append(LinuxNamespace(type="uts"))
    if mode(host.cgroupns_mode, "cgroupns", ("", "private")) != "host":
        namespaces.append(LinuxNamespace(type="cgroup"))
    if (host.userns_mode or "host") != "host":
        raise InvalidArgument(f"userns mode {host.userns_mode!r} is not supported yet")
    if host.network_mode != "host":
        # Another container's netns ("container:ID") or a prepared one comes as a path.
        namespaces.append(LinuxNamespace(type="network", path=netns_path))
    return namespaces


# --- render -----------------------------------------------------------------------------


def render(
    config: ContainerConfig,
    host: HostConfig,
    image: ImageConfig | None,
    *,
    rootfs: str,
    container_id: str,
    volumes: Sequence[Volume | tuple[str, str, Sequence[str]]] = (),
    hosts_file: str | None = None,
    resolv_conf: str | None = None,
    hostname_file: str | None = None,
    cgroups_path: str | None = None,
    netns_path: str | None = None,
    init_path: str | None = None,
) -> Spec:
    """The OCI runtime spec of a container, as Docker's daemon would write it.

    ``rootfs`` is the container's root directory (its passwd and group files are read
    to resolve the user). ``volumes`` are the named and anonymous volumes, resolved by
    the caller (see ``volume_requests``) as host directories; their options are mount
    options (``ro``...), ``rbind,rprivate`` unless they say otherwise. ``hosts_file``,
    ``resolv_conf`` and ``hostname_file`` are bound on ``/etc/hosts``,
    ``/etc/resolv.conf`` and ``/etc/hostname`` unless a user mount takes the place.
    ``netns_path`` is a network namespace to join (none: a new, empty one;
    ``NetworkMode=host``: the host's). ``--init`` needs ``init_path``, the host path
    of an init (tini, docker-init): it is bound at ``INIT_PATH`` and runs the command;
    without it ``Init`` is refused as not supported yet.
    Raises ``InvalidArgument`` with one line for anything Docker would refuse.
    """
    merged = merge_image_config(config, image)
    args = command(merged)
    if host.init:
        if init_path is None:
            raise InvalidArgument("--init needs an init binary on the PATH: install tini "
                                  "(" + " or ".join(INIT_BINARIES) + ")")
        args = [INIT_PATH, "--", *args]
    cwd = merged.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(
            f"the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )
    host_uts = host.uts_mode == "host"
    hostname = os.uname().nodename if host_uts else merged.hostname or container_id[:12]
    user = resolve_user(rootfs, merged.user or "", host.group_add or ())
    caps = capabilities(host)
    security = _security(host)
    privileged = bool(host.privileged)

    spec = default_spec()
    process = spec.process
    assert process is not None and spec.linux is not None  # default_spec sets both
    process.args = args
    process.cwd = posixpath.normpath(cwd)
    process.env = environment(merged, hostname, user.home)
    process.terminal = bool(merged.tty)
    if host.console_size and any(host.console_size):
        process.console_size = Box(height=host.console_size[0], width=host.console_size[1])
    process.user = User(uid=user.uid, gid=user.gid, additional_gids=user.additional_gids or None)
    process.capabilities = LinuxCapabilities(bounding=caps, effective=caps, permitted=caps)
    process.no_new_privileges = security.no_new_privileges or None
    process.rlimits = _rlimits(host)
    process.oom_score_adj = host.oom_score_adj

    spec.root.path = rootfs  # type: ignore[union-attr]  # default_spec sets the root
    spec.root.readonly = bool(host.readonly_rootfs) or None  # type: ignore[union-attr]
    spec.hostname = None if host_uts else hostname
    spec.domainname = None if host_uts else merged.domainname or None
    spec.mounts = _mounts(spec.mounts or [], host, volumes, privileged, init_path,
                          {"/etc/resolv.conf": resolv_conf, "/etc/hostname": hostname_file,
                           "/etc/hosts": hosts_file})

    linux = spec.linux
    linux.namespaces = _namespaces(host, netns_path)
    linux.cgroups_path = cgroups_path
    resources = render_resources(host)
    if privileged:
        linux.devices = list(_devices_under("/dev", "/dev"))
        resources.devices = [LinuxDeviceCgroup(allow=True, access="rwm")]
    else:
        linux.devices, rules = _user_devices(host)
        resources.devices = [LinuxDeviceCgroup(allow=False, access="rwm"), *rules]
        linux.devices = linux.devices or None
    linux.resources = resources
    linux.seccomp = _seccomp(security, privileged, caps)
    if privileged or security.system_paths_unconfined:
        linux.masked_paths = linux.readonly_paths = None
    if host.masked_paths is not None:
        linux.masked_paths = host.masked_paths or None
    if host.readonly_paths is not None:
        linux.readonly_paths = host.readonly_paths or None
    linux.sysctl = _sysctls(host)
    linux.rootfs_propagation = _rootfs_propagation(spec.mounts)
    spec.annotations = _annotations(merged, host)
    validate_spec(spec)
    return spec


def _mounts(defaults: list[Mount], host: HostConfig, volumes: Sequence[Volume | tuple[str, str,
            Sequence[str]]], privileged: bool, init_path: str | None,
            network_files: dict[str, str | None]) -> list[Mount]:
    user = _user_mounts(host, [Volume(*volume) for volume in volumes])
    taken = {mount.destination for mount in user}
    ipc = host.ipc_mode or ""
    result = []
    for mount in defaults:
        # A user's /dev replaces the default /dev and everything mounted under it.
        under_dev = "/dev" in taken and mount.destination.startswith("/dev/")
        if mount.destination in taken or under_dev:
            continue
        if mount.destination == "/dev/shm":
            if ipc == "none":
                continue
            if ipc == "host":
                mount = _bind("/dev/shm", "/dev/shm", False, None)
            else:
                size = host.shm_size or DEFAULT_SHM_SIZE
                mount.options = _merge_options([*(mount.options or ()), f"size={size}"])
        if privileged and mount.destination in ("/sys", "/sys/fs/cgroup"):
            mount.options = [o for o in mount.options or () if o != "ro"] or None
        result.append(mount)
    result += user
    read_only = bool(host.readonly_rootfs)
    for target, source in network_files.items():
        if source is not None and target not in taken:
            result.append(_bind(source, target, read_only, None))
    if host.init and init_path is not None:
        result.append(_bind(init_path, INIT_PATH, True, None))
    return result


def _rootfs_propagation(mounts: Sequence[Mount]) -> str | None:
    """A shared (or slave) bind needs ``/`` shared (or slave) in the container, or the
    propagation would stop at the root mount (moby does the same)."""
    options = {option for mount in mounts for option in mount.options or ()}
    if options & {"shared", "rshared"}:
        return "rshared"
    if options & {"slave", "rslave"}:
        return "rslave"
    return None


def _sysctls(host: HostConfig) -> dict[str, str] | None:
    for key in host.sysctls or {}:
        if key.startswith("net.") and host.network_mode == "host":
            raise InvalidArgument(f"sysctl {key!r} is not allowed in host network namespace")
    return dict(host.sysctls) if host.sysctls else None


def _annotations(config: ContainerConfig, host: HostConfig) -> dict[str, str]:
    # The engine's own keys last: a label must not change how the monitor stops it.
    annotations = {**(config.labels or {}), **(host.annotations or {})}
    annotations[STOP_SIGNAL_ANNOTATION] = config.stop_signal or "SIGTERM"
    if config.stop_timeout is not None:
        annotations[STOP_TIMEOUT_ANNOTATION] = str(config.stop_timeout)
    return annotations
