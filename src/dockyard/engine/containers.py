"""The container service: create, start, stop, kill, wait, remove, list, inspect, logs,
pause, restart, rename, update, prune, top, stats.

A container is a row in the state database (``containers``, schema version 2), a
writable snapshot keyed by its ID over its image's top layer, an OCI bundle, and,
while it runs, a monitor (``dockyard.runtime.monitor``) that is the parent of its
init. The layout (version 1)::

    ROOT/containers/ID/ID-json.log       the json-file log, written by the monitor
    RUNROOT/containers/ID/bundle/        config.json, and rootfs/: the snapshot's
                                         mount point while the container runs
    RUNROOT/containers/ID/monitor/       the monitor's state directory (monitor.pid,
                                         attach.sock, exit.json)
    RUNROOT/containers/ID/hosts, hostname, resolv.conf
                                         bound on /etc/... in the container
    RUNROOT/containers/ID/netns          the container's network namespace (a bind
                                         mount of nsfs) while it runs
    RUNROOT/runtime/                     the runtime's state root (dockyard's own;
                                         RUNROOT/runtime-crun/ for crun...)

The lifecycle, as the ``state`` column records it::

    creating --create--> created --start--> running --exit--> exited
                            ^                               |
                            +------------ start ------------+
                 (a failed start stays created, with its exit code and error)

``paused`` is no value of the column: a running container whose cgroup is frozen is
paused (``pause`` freezes it through the runtime, ``unpause`` thaws it).

No daemon runs: the row says what the engine last saw, the monitor's files say what
is true now. Every read reconciles the two (``_observe``): a running container whose
monitor is gone is exited with the code its ``exit.json`` recorded or, when the
monitor died without recording one, with 255 (Docker's code for an unknown exit), and
what it left (the runtime's state, its cgroup, the rootfs and netns mounts) is
removed then. A ``creating`` row whose creating process is dead is an interrupted
create: it is removed with all it made.

A container's named and anonymous volumes (``-v``, ``--mount type=volume``, the
image's ``VOLUME``) are the ``VolumeService``'s (``self.volumes``); the row's config
records them as Docker's ``MountPoints``, ``start`` mounts and fills them, the end of a
run releases them, ``rm -v`` and ``--rm`` remove the anonymous ones.

A container's network namespace is made by ``start`` (``--network none``: with only
its loopback up; the default network or a user network: then plumbed by the
``NetworkService``, ``self.networks``), or is the host's (``host``) or another running
container's (``container:NAME``); its endpoint rows are made with the container and
released with its run.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import functools
import json
import os
import posixpath
import random
import re
import shutil
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dockyard.engine.config import ContainerConfig, HostConfig, parse_bind
from dockyard.engine.db import Database
from dockyard.engine.events import EventLog, container_attributes, log_path
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure
from dockyard.linux import syscalls as sc
from dockyard.linux.mountinfo import is_mountpoint
from dockyard.storage.durable import pid_alive

if TYPE_CHECKING:
    from dockyard.engine.config import (
        EndpointSettings,
        NetworkingConfig,
        RegistryOptions,
        RestartPolicy,
    )
    from dockyard.engine.images import ImageService
    from dockyard.engine.networks import NetworkService
    from dockyard.engine.ocispec import VolumeRequest
    from dockyard.engine.volumes import VolumeService
    from dockyard.runtime.oci_runtime import RuntimeCommand

__all__ = ["UNKNOWN_EXIT_CODE", "ContainerService", "LogEntry", "new_netns"]

#: The exit code of a container whose monitor died without recording its exit (Docker
#: reports 255 when it cannot know the code).
UNKNOWN_EXIT_CODE = 255
#: Docker's zero time, for a container never started or never finished.
ZERO_TIME = "0001-01-01T00:00:00Z"
_DEFAULT_STOP_TIMEOUT = 10
_HEX = re.compile(r"^[0-9a-f]+$")
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")

# A few of Docker's generated-name words (moby pkg/namesgenerator).
_ADJECTIVES = ("admiring", "bold", "brave", "clever", "dazzling", "eager", "elegant",
               "festive", "focused", "gallant", "happy", "jolly", "keen", "loving",
               "modest", "nifty", "quirky", "serene", "stoic", "vibrant", "wizardly",
               "zealous")
_SURNAMES = ("albattani", "babbage", "curie", "darwin", "einstein", "feynman", "galois",
             "hopper", "johnson", "kepler", "lamport", "lovelace", "meitner", "noether",
             "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak")

# ioctls to bring the loopback up (linux/sockios.h, linux/if.h).
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sh22x")


@dataclass(frozen=True)
class LogEntry:
    """One entry of a container's log."""

    stream: str  # stdout or stderr
    data: bytes
    time: str    # RFC 3339 with nanoseconds, UTC


def _now() -> tuple[str, float]:
    from dockyard.runtime.logfile import rfc3339nano

    ns = time.time_ns()
    return rfc3339nano(ns), ns / 1e9


def parse_timestamp(text: str) -> float:
    """An RFC 3339 time (``2024-05-01T10:00:00.5Z``) as unix time; "" is 0."""
    import datetime

    if not text or text == ZERO_TIME:
        return 0.0
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if match is None:
        raise InvalidArgument(f"cannot parse {text!r} as an RFC 3339 time")
    base = datetime.datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z"
                                                       else match[3]))
    return base.timestamp() + float("0." + (match[2] or "0"))


def signal_number(text: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``15`` or ``SIGRTMIN+3`` as a signal number."""
    if isinstance(text, int):
        return text
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        base, plus, offset = name.partition("+")
        try:
            number = int(getattr(signal.Signals, base)) + (int(offset) if plus else 0)
        except (AttributeError, ValueError):
            raise InvalidArgument(f"invalid signal: {text}") from None
    if not 0 < number < 65:
        raise InvalidArgument(f"invalid signal: {text}")
    return number


class ContainerService:
    """The containers of one root (``ROOT``) and run root (``RUNROOT``).

    ``runtime`` is the default OCI runtime of new containers (dockerd's
    ``--default-runtime``): None is dockyard's own, run in the monitor without a new
    interpreter; ``crun`` or ``runc`` is that binary, driven by the monitor through its
    command line (``runtime.oci_runtime``). A container keeps the runtime it was created
    with (HostConfig.Runtime).
    """

    def __init__(self, root: str, runroot: str, *, storage_driver: str | None = None,
                 runtime: str | None = None, registries: RegistryOptions | None = None
                 ) -> None:
        self.default_runtime = runtime or None
        self.root = os.path.abspath(root)
        self.runroot = os.path.abspath(runroot)
        self._storage_driver = storage_driver
        self._registries = registries
        self.db = Database(self.root)
        self.events = EventLog(self.root)
        self.runtime_root = os.path.join(self.runroot, "runtime")
        self._attached: set[str] = set()  # see run()

    # The other services are made on first use: ``exec``, ``stop``, ``logs``... need
    # none of their imports (~10 ms together, hashlib's among them).

    @functools.cached_property
    def images(self) -> ImageService:
        """The image service, sharing our database."""
        from dockyard.engine.images import ImageService

        return ImageService(self.root, storage_driver=self._storage_driver,
                            registries=self._registries, in_use=self.image_in_use,
                            db=self.db)

    @functools.cached_property
    def volumes(self) -> VolumeService:
        """The volume service; it asks us which containers use a volume."""
        from dockyard.engine.volumes import VolumeService

        return VolumeService(self.root, in_use=self.volume_users)

    @functools.cached_property
    def networks(self) -> NetworkService:
        """The network service, sharing our database."""
        from dockyard.engine.networks import NetworkService

        return NetworkService(self.root, self.runroot, self.db)

    # --- paths ----------------------------------------------------------------------

    def _run_dir(self, cid: str) -> str:
        return os.path.join(self.runroot, "containers", cid)

    def _bundle(self, cid: str) -> str:
        return os.path.join(self._run_dir(cid), "bundle")

    def _rootfs(self, cid: str) -> str:
        return os.path.join(self._bundle(cid), "rootfs")

    def _open_runtime(self, name: str | None) -> RuntimeCommand:
        """The OCI runtime called ``name`` (None: dockyard's), with its own state root."""
        from dockyard.runtime.oci_runtime import BUILTIN, open_runtime

        name = name or BUILTIN
        return open_runtime(name, self.runtime_root if name == BUILTIN
                            else os.path.join(self.runroot, f"runtime-{name}"))

    def runtime_of(self, cid: str) -> RuntimeCommand:
        """The OCI runtime the container was created with (its HostConfig.Runtime)."""
        rows = self.db.query("SELECT host_config FROM containers WHERE id = ?", (cid,))
        return self._open_runtime(json.loads(rows[0]["host_config"]).get("Runtime")
                                  if rows else None)

    def monitor_dir(self, cid: str) -> str:
        return os.path.join(self._run_dir(cid), "monitor")

    def _netns(self, cid: str) -> str:
        return os.path.join(self._run_dir(cid), "netns")

    def _data_dir(self, cid: str) -> str:
        return os.path.join(self.root, "containers", cid)

    def log_path(self, cid: str) -> str:
        """The container's json-file log."""
        return os.path.join(self._data_dir(cid), f"{cid}-json.log")

    # --- names ----------------------------------------------------------------------

    def image_in_use(self, image_id: str) -> bool:
        """Whether a container uses the image (the ImageService's ``in_use``)."""
        return bool(self.db.query("SELECT 1 FROM containers WHERE image_id = ? LIMIT 1",
                                  (image_id,)))

    def volume_users(self, name: str) -> builtins.list[str]:
        """The IDs of the containers whose config refers to the volume, running or not
        (the VolumeService's ``in_use``)."""
        return [str(row["id"]) for row in self.db.query(
            "SELECT DISTINCT containers.id AS id FROM containers, "
            "json_each(containers.config, '$.MountPoints') AS point "
            "WHERE json_extract(point.value, '$.Name') = ? ORDER BY containers.id",
            (name,))]

    def resolve(self, id_or_name: str) -> str:
        """The full ID of the container named by a full ID, a name or a unique prefix."""
        ref = id_or_name.strip()
        if not ref:
            raise NotFound("No such container: ")
        rows = self.db.query("SELECT id FROM containers WHERE id = ? OR name = ?",
                             (ref, ref.removeprefix("/")))
        if rows:
            by_id = [r["id"] for r in rows if r["id"] == ref]
            return str(by_id[0] if by_id else rows[0]["id"])
        if _HEX.match(ref):
            rows = self.db.query("SELECT id FROM containers WHERE id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
            if rows:
                return str(rows[0]["id"])
        raise NotFound(f"No such container: {id_or_name}")

    def _row(self, cid: str) -> Any:
        rows = self.db.query("SELECT * FROM containers WHERE id = ?", (cid,))
        if not rows:
            raise NotFound(f"No such container: {cid}")
        return rows[0]

    def record(self, action: str, cid: str, **attributes: str) -> None:
        """Record a container's event (for the services that act on containers from
        outside this one: ``cp``, ``commit``, ``export``)."""
        self.events.container(action, self._row(cid), **attributes)

    def _new_name(self) -> str:
        for _ in range(10):
            pick = random.SystemRandom().choice  # secrets.choice, without hashlib's import
            name = f"{pick(_ADJECTIVES)}_{pick(_SURNAMES)}"
            if not self.db.query("SELECT 1 FROM containers WHERE name = ?", (name,)):
                return name
        return f"dockyard_{os.urandom(6).hex()}"

    # --- create ---------------------------------------------------------------------

    def create(self, config: ContainerConfig, host: HostConfig,
               name: str | None = None, networking: NetworkingConfig | None = None) -> str:
        """Create a container; its 64-hex ID. ``config.image`` names the image."""
        return self._create(config, host, name, keep_mounted=False, networking=networking)

    def run(self, config: ContainerConfig, host: HostConfig, name: str | None = None, *,
            attached: bool = False, networking: NetworkingConfig | None = None) -> str:
        """Create and start a container (its rootfs mounted once); its ID.

        ``attached``: the caller stays until the container exits and removes it itself
        (``run --rm`` in the foreground): this service does not remove it when it sees
        it exited, so that the caller can still read its exit code. A container with
        AutoRemove that fails to start is removed.
        """
        cid = self._create(config, host, name, keep_mounted=True, networking=networking)
        if attached:
            self._attached.add(cid)
            self.record("attach", cid)  # Docker's foreground run attaches before the start
        try:
            self.start(cid)
        except BaseException:
            if host.auto_remove:
                with contextlib.suppress(Exception):
                    self._destroy(cid, volumes=True)
            raise
        return cid

    def _create(self, config: ContainerConfig, host: HostConfig, name: str | None,
                *, keep_mounted: bool, networking: NetworkingConfig | None = None) -> str:
        import msgspec

        from dockyard.engine import ocispec
        from dockyard.engine.networks import network_of_mode
        from dockyard.oci.document import dump
        from dockyard.oci.image import load_config
        from dockyard.storage.snapshots import mount_all
        from dockyard.volumes import ANONYMOUS_LABEL

        if not config.image:
            raise InvalidArgument("no image given: name the image to create the container "
                                  "from")
        if name is not None:
            if not _NAME.match(name):
                raise InvalidArgument(f"Invalid container name ({name}), only "
                                      "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.removeprefix("/")
        # Refused now (unknown, not installed) rather than at the start; recorded, as
        # dockerd records its default, so that inspect shows it.
        runtime = self._open_runtime(host.runtime or self.default_runtime)
        host.runtime = runtime.name
        network = host.network_mode or "default"
        endpoints = (networking.endpoints_config if networking else None) or {}
        self.networks.plan(host, endpoints)
        netns_owner = self._netns_owner(host)
        if netns_owner:  # as Docker: the hostname of the container it joins
            if config.hostname:
                raise InvalidArgument("conflicting options: hostname and the network mode")
            joined = _read_text(os.path.join(self._run_dir(netns_owner), "hostname"))
            config = msgspec.structs.replace(config, hostname=(joined or "").strip() or None)
        image_id = self.images.resolve(config.image)
        chain_rows = self.db.query("SELECT chain_id FROM images WHERE id = ?", (image_id,))
        chain_id = chain_rows[0]["chain_id"] if chain_rows else None
        with self.images.content.open(image_id) as blob:
            image = load_config(blob.read())
        for mount in host.mounts or ():
            options = mount.volume_options
            if mount.type == "volume" and options is not None and (
                    options.driver_config or options.labels or options.subpath):
                # Mounting the whole volume for a subpath, or a volume without the
                # asked options, would be silently wrong.
                raise InvalidArgument("--mount volume-driver, volume-opt, volume-label and "
                                      "volume-subpath are not supported yet: create the "
                                      "volume with `volume create` first")
        inherited, inherited_binds = self._volumes_from(host)
        if inherited_binds:
            host.binds = [*(host.binds or []), *inherited_binds]
        points = self._volume_points(ocispec.volume_requests(
            config, host, image, [point["Destination"] for point in inherited])) + inherited
        # The row's config keeps the volumes as Docker's MountPoints, beside Docker's
        # Config members (which decoding it as a ContainerConfig ignores): the
        # anonymous volumes' names exist nowhere else, and ``volume_users`` looks there.
        document = {**json.loads(dump(config)), "MountPoints": points}

        cid = os.urandom(32).hex()
        created, created_unix = _now()
        with self.db.transaction() as conn:
            name = name or self._new_name()
            taken = conn.execute("SELECT id FROM containers WHERE name = ?",
                                 (name,)).fetchone()
            if taken is not None:
                raise _name_in_use(name, taken[0])
            conn.execute(
                "INSERT INTO containers (id, name, image_id, image, config, host_config, "
                "created, created_unix, state, pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (cid, name, image_id, config.image, json.dumps(document),
                 dump(host).decode(), created, created_unix, "creating", os.getpid()))
            network_name = network_of_mode(network)
            if network_name is not None:
                self.networks.add(cid, network_name, endpoints.get(network_name)
                                  or endpoints.get("default"))
        mounted = False
        try:
            # After the row names them: a create killed from here on is removed by the
            # next command with the anonymous volumes it made (``_observe``).
            for point in points:
                self.volumes.create(point["Name"], labels={ANONYMOUS_LABEL: ""}
                                    if point["Anonymous"] else None)
            rootfs = self._rootfs(cid)
            os.makedirs(rootfs, mode=0o711)
            os.makedirs(self._data_dir(cid), mode=0o710, exist_ok=True)
            mounts = self.images.snapshots.prepare(cid, chain_id)
            mount_all(mounts, rootfs)
            mounted = True
            merged = ocispec.merge_image_config(config, image)
            hostname = (os.uname().nodename if host.uts_mode == "host"
                        else merged.hostname or cid[:12])

            files = self._network_files(cid, host, hostname)
            _, link_env = self.networks.links(host.links or (), name, self._merged_config)
            for raw in host.binds or ():
                bind = parse_bind(raw)
                if bind.type == "bind" and not os.path.exists(bind.source):
                    os.makedirs(bind.source, exist_ok=True)  # as Docker's -v does
            # A volume's path is its driver's directory, mounted or not: the spec can
            # name it now, and ``start`` mounts the volume there.
            volumes = [(self.volumes.driver.path(point["Name"]), point["Destination"],
                        [] if point["RW"] else ["ro"]) for point in points]
            spec = ocispec.render(
                msgspec.structs.replace(config, env=[*link_env, *(config.env or [])])
                if link_env else config, host, image, rootfs=rootfs, container_id=cid,
                volumes=volumes,
                hosts_file=files["hosts"], resolv_conf=files["resolv.conf"],
                hostname_file=files["hostname"],
                netns_path=None if network == "host" else self._netns(netns_owner or cid),
                init_path=ocispec.find_init() if host.init else None,
                # Named, so that every runtime puts it in the same place.
                cgroups_path=f"/dockyard/{cid}")
            spec.oci_version = runtime.oci_version
            _write(os.path.join(self._bundle(cid), "config.json"), dump(spec, indent=2))
            with self.db.transaction() as conn:
                # ``run`` goes on with the start: it marks the row as its own (``start``).
                conn.execute("UPDATE containers SET state = 'created', pid = ? WHERE id = ?",
                             (os.getpid() if keep_mounted else 0, cid))
        except BaseException:
            with contextlib.suppress(Exception):
                self._destroy(cid, volumes=True)
            raise
        if mounted and not keep_mounted:
            self._unmount(rootfs)
        self.events.container("create", {"id": cid, "name": name, "image": config.image,
                                         "config": document})
        return cid

    @staticmethod
    def _volume_points(requests: Sequence[VolumeRequest]) -> builtins.list[dict[str, Any]]:
        """The volumes of ``volume_requests`` (a new anonymous name for each request
        without one) as the MountPoints the row records; ``_create`` makes those
        missing once the row names them."""
        from dockyard.volumes import anonymous_name

        return [{"Name": request.name or anonymous_name(), "Destination": request.target,
                 "RW": not request.read_only, "Mode": "ro" if request.read_only else "",
                 "Anonymous": not request.name, "NoCopy": request.no_copy}
                for request in requests]

    def _volumes_from(self, host: HostConfig
                      ) -> tuple[builtins.list[dict[str, Any]], builtins.list[str]]:
        """Docker's ``--volumes-from CONTAINER[:ro|:rw]``: the other containers'
        volumes (as MountPoints) and bind mounts (as ``-v`` specs) at the same
        destinations, but those the container's own ``-v``, ``--mount`` and ``--tmpfs``
        take. Each keeps its mode, and is read-only with ``ro`` (``rw`` cannot make a
        read-only one writable, as in Docker). The volumes are not filled again from
        the image (they hold the other container's data), and an anonymous one stays
        anonymous: ``rm -v`` of the last container using it removes it.
        """
        own = {parse_bind(raw).target for raw in host.binds or ()}
        own.update(posixpath.normpath(mount.target or "/") for mount in host.mounts or ())
        own.update(posixpath.normpath(path) for path in host.tmpfs or {})
        # By destination: a later container's mount there replaces an earlier one's.
        chosen: dict[str, dict[str, Any] | str] = {}
        for item in host.volumes_from or ():
            ref, _, mode = item.partition(":")
            words = mode.split(",") if mode else []
            if (mode and not words) or not set(words) <= {"ro", "rw", "z", "Z"} or \
                    {"ro", "rw"} <= set(words):
                raise InvalidArgument(f"invalid mode: {mode}")
            row = self._row(self.resolve(ref))
            for point in _mount_points(row["config"]):
                writable = point["RW"] and "ro" not in words
                chosen[point["Destination"]] = {**point, "RW": writable,
                                                "Mode": "" if writable else "ro",
                                                "NoCopy": True}
            for mount in _mounts(json.loads(row["host_config"])):
                if mount["Type"] == "bind":
                    writable = mount["RW"] and "ro" not in words
                    propagation = mount["Propagation"]
                    chosen[mount["Destination"]] = (
                        f"{mount['Source']}:{mount['Destination']}:{'rw' if writable else 'ro'}"
                        + ("" if propagation == "rprivate" else f",{propagation}"))
        kept = [mount for target, mount in chosen.items() if target not in own]
        return ([m for m in kept if isinstance(m, dict)], [m for m in kept if isinstance(m, str)])

    def _remove_anonymous(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Remove the anonymous volumes among ``points`` (``rm -v``, ``--rm``).

        One that another container also names (``-v ID:/path``) stays: as for Docker,
        that is no error of the removal.
        """
        for point in points:
            if point["Anonymous"]:
                with contextlib.suppress(Conflict, NotFound):
                    self.volumes.remove(point["Name"])

    def _network_files(self, cid: str, host: HostConfig, hostname: str,
                       links: Sequence[tuple[str, str, str]] = ()) -> dict[str, str]:
        """Write the container's hosts, hostname and resolv.conf (in place: a running
        container has them bound); a ``container:`` one shares its peer's."""
        run_dir = self._run_dir(cid)
        paths = {name: os.path.join(run_dir, name)
                 for name in ("hosts", "hostname", "resolv.conf")}
        owner = self._netns_owner(host)
        if owner:
            hosts = _read_text(os.path.join(self._run_dir(owner), "hosts")) or ""
            resolv = _read_text(os.path.join(self._run_dir(owner), "resolv.conf")) or ""
        else:
            hosts = self.networks.hosts_file(cid, hostname, host, links)
            resolv = self.networks.resolv_conf(cid, host)
        for name, text in (("hosts", hosts), ("hostname", f"{hostname}\n"),
                           ("resolv.conf", resolv)):
            with open(paths[name], "w") as f:
                f.write(text)
        return paths

    def _start_network(self, info: Mapping[str, Any], config: ContainerConfig,
                       host: HostConfig) -> None:
        """Make the starting container's network namespace, plumb its networks and
        publish its ports (or check the one it joins runs), then write its files."""
        from dockyard.engine.ocispec import merge_image_config

        cid = info["id"]
        owner = self._netns_owner(host)
        if owner:
            if not is_mountpoint(self._netns(owner)):
                raise Conflict(f"cannot join network namespace of a non running container: "
                               f"{owner}")
        elif host.network_mode != "host":
            endpoints = self.networks.endpoints(cid)
            if not is_mountpoint(self._netns(cid)):
                new_netns(self._netns(cid), ipv6=any(ep["has_ipv6"] for ep in endpoints))
            exposed = merge_image_config(config, self._image_config(info["image_id"]))
            from dockyard.engine.networks import port_requests

            ports = port_requests(host, list(exposed.exposed_ports or {}))
            if endpoints or ports:  # else (--network none) no veth, no ruleset to touch
                self.networks.attach(cid, self._netns(cid), ports)
        self._refresh_network_files(cid, host)

    def _netns_owner(self, host: HostConfig) -> str:
        """The ID of the container whose network namespace a ``container:NAME`` one
        joins; "" for one with a namespace of its own (or the host's)."""
        mode = host.network_mode or ""
        return self.resolve(mode.partition(":")[2]) if mode.startswith("container:") else ""

    # --- start, stop, kill, wait ----------------------------------------------------

    def start(self, id_or_name: str) -> None:
        """Start a created or exited container (a running one is left as it is)."""
        from dockyard.runtime import monitor
        from dockyard.storage.snapshots import mount_all

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        if info["paused"]:
            raise Conflict("cannot start a paused container, try unpause instead")
        if info["state"] == "running":
            return
        if info["state"] == "creating":
            raise Conflict(f"container {cid[:12]} is still being created")
        config = _load_config(info["config"])
        host = _load_host(info["host_config"])
        # The monitor of the last run may still be finishing (it exits right after it
        # recorded the exit): give it a moment.
        state_dir = self.monitor_dir(cid)
        deadline = time.monotonic() + 5
        while monitor.monitor_alive(state_dir) and time.monotonic() < deadline:
            time.sleep(0.01)
        rootfs = self._rootfs(cid)
        start_recorded = False
        try:
            if info["pid"] != os.getpid():
                # The starter's pid, until the start is recorded: a start killed half way
                # is then seen and made good by the next command (``_observe``).
                with self.db.transaction() as conn:
                    conn.execute("UPDATE containers SET pid = ? WHERE id = ?",
                                 (os.getpid(), cid))
            if not is_mountpoint(rootfs):
                mount_all(self.images.snapshots.mounts(cid), rootfs)
            for point in _mount_points(info["config"]):
                self.volumes.mount_path(point["Name"], cid)
                self.events.record("volume", "mount", point["Name"], {
                    "driver": "local", "container": cid, "destination": point["Destination"],
                    "read/write": str(point["RW"]).lower(), "propagation": ""})
                if not point["NoCopy"]:
                    # Docker's copy-up: a volume still empty gets the image's files.
                    self.volumes.populate(point["Name"], rootfs, point["Destination"])
            self._start_network(info, config, host)
            restart = host.restart_policy
            policy = monitor.RestartPolicy.parse(
                (restart.name or "no") + (f":{restart.maximum_retry_count}"
                                          if restart and restart.name == "on-failure"
                                          and restart.maximum_retry_count else "")
                if restart is not None else "no")
            max_size, max_files = _log_options(host)
            for stale in (monitor.EXIT_FILE, monitor.NAME_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(state_dir, stale))
            runtime = self._open_runtime(host.runtime)
            spec = monitor.MonitorSpec(
                container_id=cid, bundle=self._bundle(cid), runtime=runtime.name,
                runtime_root=runtime.root, state_dir=state_dir, log_path=self.log_path(cid),
                max_size=max_size, max_files=max_files, terminal=bool(config.tty),
                stdin=bool(config.open_stdin), restart=policy,
                stop_signal=signal_number(config.stop_signal or "SIGTERM"),
                stop_timeout=float(_stop_timeout(config)),
                healthcheck=self._healthcheck(info),
                hold_output=cid in self._attached and bool(config.tty),
                events_path=log_path(self.root),
                event_attributes=container_attributes(info))
            started, _ = _now()
            # Before the monitor starts it: a container that ends at once has its
            # ``die`` (the monitor's) after its ``start`` in the log, as in Docker's.
            self.events.container("start", info)
            start_recorded = True
            monitor.start_monitor(spec)
        except BaseException as e:
            self._release(cid)
            code = e.exit_code if isinstance(e, DockyardError) and \
                e.exit_code in (126, 127) else 128
            if isinstance(e, DockyardError):
                with self.db.transaction() as conn:
                    conn.execute("UPDATE containers SET exit_code = ?, error = ?, pid = 0 "
                                 "WHERE id = ?", (code, str(e), cid))
            if start_recorded:
                self.events.container("die", info, exitCode=str(code))
            raise
        pid = self._live_pid(cid)
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE containers SET state = 'running', pid = ?, started_at = ?, "
                "finished_at = '', exit_code = 0, oom_killed = 0, error = '' WHERE id = ?",
                (pid, started, cid))

    def _healthcheck(self, info: Mapping[str, Any]) -> Any:
        """The container's healthcheck (its own over its image's, as dockerd merges
        them) as the monitor's ``HealthSpec``; None without one or with ``NONE``."""
        from dockyard.engine.ocispec import merge_image_config
        from dockyard.runtime.monitor import HealthSpec

        merged = merge_image_config(_load_config(info["config"]),
                                    self._image_config(info["image_id"]))
        check = merged.healthcheck
        test = list(check.test or ()) if check is not None else []
        if not test or test[0] == "NONE":
            return None
        if test[0] == "CMD-SHELL":
            args = ["/bin/sh", "-c", " ".join(test[1:])]
        elif test[0] == "CMD":
            args = test[1:]
        else:
            raise InvalidArgument(f"unknown healthcheck type {test[0]!r}: use CMD, CMD-SHELL "
                                  "or NONE")
        if not args:
            return None
        assert check is not None

        def seconds(value: int | None, default: float) -> float:
            return value / 1e9 if value else default  # 0 is Docker's "the default"

        return HealthSpec(
            test=tuple(args), interval=seconds(check.interval, 30.0),
            timeout=seconds(check.timeout, 30.0), start_period=seconds(check.start_period, 0),
            start_interval=seconds(check.start_interval, 5.0), retries=check.retries or 3)

    def health(self, cid: str) -> dict[str, Any] | None:
        """The container's ``State.Health`` as its monitor last wrote it, if it has a
        healthcheck and was started since it got one."""
        from dockyard.runtime.monitor import read_health

        return read_health(self.monitor_dir(cid))

    def stop(self, id_or_name: str, timeout: float | None = None,
             sig: str | int | None = None) -> None:
        """Send the stop signal (``sig``, default the container's StopSignal or
        SIGTERM), then SIGKILL after ``timeout`` seconds (default: the container's
        StopTimeout, or 10); returns once it exited."""
        from dockyard.runtime import monitor

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None or info["state"] != "running":
            return
        self._thaw(info)  # a frozen init would never see the stop signal
        number = signal_number(sig if sig is not None else
                               json.loads(info["config"]).get("StopSignal") or "SIGTERM")
        self.events.container("kill", info, signal=str(number))
        with contextlib.suppress(Conflict):
            monitor.stop(self.monitor_dir(cid), timeout, number)
        self._settle(cid)
        self.events.container("stop", info)

    def kill(self, id_or_name: str, sig: str | int = "SIGKILL") -> None:
        """Send a signal to the container's init (Docker's ``kill``)."""
        number = signal_number(sig)
        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None or info["state"] != "running":
            raise Conflict(f"Cannot kill container: {id_or_name}: Container {cid} is not "
                           "running")
        # Before the signal: the monitor's ``die`` may follow it at once.
        self.events.container("kill", info, signal=str(number))
        try:
            self.runtime_of(cid).kill(cid, number)
        except (NotFound, Conflict):
            raise Conflict(f"Cannot kill container: {id_or_name}: Container {cid} is not "
                           "running") from None
        stop_signal = json.loads(info["config"]).get("StopSignal")
        if not stop_signal or number in (signal.SIGKILL, signal_number(stop_signal)):
            # As dockerd: a signal that ends the container thaws a paused one, so that
            # it is delivered; any other signal waits for the unpause.
            self._thaw(info)
        if number == signal.SIGKILL:
            self._settle(cid, 2.0)

    def wait(self, id_or_name: str) -> int:
        """Wait until the container is not running; its exit code."""
        from dockyard.runtime import monitor

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is not None and info["state"] == "running":
            with contextlib.suppress(Conflict, OSError), \
                    monitor.attach(self.monitor_dir(cid)) as sock:
                while (frame := monitor.read_frame(sock)) is not None:
                    if frame[0] == monitor.Frame.EXIT and \
                            not json.loads(frame[1]).get("restarting"):
                        break
            info = self._settle(cid)
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        return int(info["exit_code"])

    # --- pause, restart, rename, update ---------------------------------------------

    def _frozen(self, cid: str) -> bool:
        """Whether the running container's cgroup is frozen."""
        with contextlib.suppress(DockyardError, OSError):
            return self.runtime_of(cid).paused(cid)
        return False

    def _thaw(self, info: Mapping[str, Any]) -> None:
        """Thaw a paused container (before it is stopped or killed)."""
        if info["paused"]:
            with contextlib.suppress(DockyardError, OSError):
                self.runtime_of(info["id"]).resume(info["id"])

    def _live(self, id_or_name: str) -> dict[str, Any]:
        """The observed row of a running (or paused) container; Docker's Conflicts for
        one that is not running or is between two runs."""
        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        if info["state"] != "running":
            raise Conflict(f"container {cid} is not running")
        if info["restarting"]:
            raise Conflict(f"Container {cid} is restarting, wait until the container is "
                           "running")
        return info

    def pause(self, id_or_name: str) -> None:
        """Freeze every process of a running container (the cgroup freezer)."""
        info = self._live(id_or_name)
        if info["paused"]:
            raise Conflict(f"Container {info['id']} is already paused")
        self.runtime_of(info["id"]).pause(info["id"])
        self.events.container("pause", info)

    def unpause(self, id_or_name: str) -> None:
        """Thaw a paused container."""
        info = self._live(id_or_name)
        if not info["paused"]:
            raise Conflict(f"Container {info['id']} is not paused")
        self.runtime_of(info["id"]).resume(info["id"])
        self.events.container("unpause", info)

    def restart(self, id_or_name: str, timeout: float | None = None,
                sig: str | int | None = None) -> None:
        """``stop`` (if it runs), then ``start``: a new run, whose RestartCount starts
        from 0 as after any manual start (Docker counts the policy's restarts only)."""
        cid = self.resolve(id_or_name)
        self.stop(cid, timeout, sig)
        self.start(cid)
        self.events.container("restart", self._row(cid))

    def rename(self, id_or_name: str, new_name: str) -> None:
        """Give the container another name, with Docker's checks."""
        if not id_or_name or not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        cid = self.resolve(id_or_name)
        new_name = new_name.removeprefix("/")
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM containers WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise NotFound(f"No such container: {id_or_name}")
            if row["name"] == new_name:
                raise InvalidArgument("Renaming a container with the same name as its "
                                      "current name")
            if not _NAME.match(new_name):
                raise InvalidArgument(f"Invalid container name ({new_name}), only "
                                      "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            taken = conn.execute("SELECT id FROM containers WHERE name = ?",
                                 (new_name,)).fetchone()
            if taken is not None:
                raise _name_in_use(new_name, taken[0])
            conn.execute("UPDATE containers SET name = ? WHERE id = ?", (new_name, cid))
        state_dir = self.monitor_dir(cid)
        if os.path.isdir(state_dir):
            # The monitor of a running container names it in its events (``die``...).
            from dockyard.runtime.monitor_files import NAME_FILE
            from dockyard.storage.durable import replace_file

            replace_file(os.path.join(state_dir, NAME_FILE), new_name.encode())
        self.events.container("rename", {**row, "name": new_name}, oldName="/" + row["name"])

    def update(self, id_or_name: str, *, memory: int | None = None,
               memory_swap: int | None = None, nano_cpus: int | None = None,
               cpu_shares: int | None = None, pids_limit: int | None = None,
               restart: RestartPolicy | None = None) -> None:
        """Change a container's limits and restart policy (Docker's ``update``).

        The new values are stored in its HostConfig and its bundle (the next start,
        and the monitor's restarts, create it with them); a running container's cgroup
        gets them at once through its runtime's ``update``. The restart policy takes effect
        at the next start: the running monitor keeps the one it was started with.
        ``pids_limit`` <= 0 and ``nano_cpus`` 0 remove those limits.
        """
        import msgspec

        from dockyard.engine import ocispec
        from dockyard.oci import runtime as oci
        from dockyard.oci.document import dump

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        host = _load_host(info["host_config"])
        changes: dict[str, Any] = {}
        if memory:
            # Docker stores its default swap (twice the memory) with the container: a new
            # memory limit is checked against it, and keeps it unless told otherwise.
            swap = host.memory_swap or (2 * host.memory if host.memory else 0)
            if swap > 0 and memory > swap and not memory_swap:
                raise Conflict(f"Cannot update container {cid}: Memory limit should be "
                               "smaller than already set memoryswap limit, update the "
                               "memoryswap at the same time")
            changes.update(memory=memory, memory_swap=swap or None)
        if memory_swap:
            changes["memory_swap"] = memory_swap
        if nano_cpus is not None:
            changes["nano_cpus"] = nano_cpus or None
        if cpu_shares is not None:
            changes["cpu_shares"] = cpu_shares or None
        if pids_limit is not None:
            changes["pids_limit"] = pids_limit if pids_limit > 0 else None
        if restart is not None:
            if host.auto_remove and restart.name not in ("", "no"):
                raise Conflict(f"Cannot update container {cid}: Restart policy cannot be "
                               "updated because AutoRemove is enabled for the container")
            changes["restart_policy"] = restart
        new = msgspec.structs.replace(host, **changes)
        # ocispec's checks of the values are the daemon's (minimum memory, CPU range).
        resources = ocispec.render_resources(new)
        limits = oci.LinuxResources(memory=resources.memory, cpu=resources.cpu,
                                    pids=resources.pids)
        if pids_limit is not None and pids_limit <= 0:
            limits.pids = oci.LinuxPids(limit=-1)  # written as "max": no limit
        if nano_cpus == 0 and host.nano_cpus:
            limits.cpu = msgspec.structs.replace(limits.cpu or oci.LinuxCPU(), quota=-1)
        if info["state"] == "running" and not info["restarting"]:
            try:
                self.runtime_of(cid).update(cid, limits)
            except DockyardError as e:
                raise type(e)(f"Cannot update container {cid}: {e}") from None
        bundle_config = os.path.join(self._bundle(cid), "config.json")
        with open(bundle_config, "rb") as f:
            spec = oci.load_spec(f.read())
        if spec.linux is not None:
            # No pids member is no limit at the next create; -1 is "max" only to update.
            spec.linux.resources = msgspec.structs.replace(
                spec.linux.resources or oci.LinuxResources(), memory=limits.memory,
                cpu=limits.cpu, pids=None if limits.pids and limits.pids.limit <= 0
                else limits.pids)
        _write(bundle_config, dump(spec, indent=2))
        with self.db.transaction() as conn:
            conn.execute("UPDATE containers SET host_config = ? WHERE id = ?",
                         (dump(new).decode(), cid))
        self.events.container("update", info)

    # --- networks -------------------------------------------------------------------

    def connect(self, id_or_name: str, network: str,
                settings: EndpointSettings | None = None) -> None:
        """Connect a container to a network (Docker's ``network connect``): at once
        if it runs, else from its next start."""
        cid, host, running = self._network_change(id_or_name)
        self.networks.connect(cid, network, settings,
                              netns=self._netns(cid) if running else None)
        if running:
            self._refresh_network_files(cid, host)

    def disconnect(self, id_or_name: str, network: str, *, force: bool = False) -> None:
        """Disconnect a container from a network (Docker's ``network disconnect``)."""
        cid, host, running = self._network_change(id_or_name)
        self.networks.disconnect(cid, network, force=force)
        if running:
            self._refresh_network_files(cid, host)

    def _network_change(self, id_or_name: str) -> tuple[str, HostConfig, bool]:
        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        host = _load_host(info["host_config"])
        from dockyard.engine.networks import network_of_mode

        if network_of_mode(host.network_mode) is None:
            raise Conflict("container sharing network namespace with another container or "
                           "host cannot be connected to any other network")
        return cid, host, info["state"] == "running"

    def _refresh_network_files(self, cid: str, host: HostConfig) -> None:
        links, _ = self.networks.links(host.links or (), self._row(cid)["name"],
                                       self._merged_config)
        hostname = _read_text(os.path.join(self._run_dir(cid), "hostname")) or cid[:12]
        self._network_files(cid, host, hostname.strip(), links)

    # --- exec and attach ------------------------------------------------------------

    def _running(self, id_or_name: str) -> str:
        """The full ID of a running, unpaused container; Docker's Conflict otherwise."""
        info = self._live(id_or_name)
        if info["paused"]:
            raise Conflict(f"Container {info['id']} is paused, unpause the container "
                           "before exec")
        return str(info["id"])

    def exec(self, id_or_name: str, command: Sequence[str], *, user: str | None = None,
             env: Sequence[str] = (), workdir: str | None = None, privileged: bool = False,
             tty: bool = False, console_size: tuple[int, int] | None = None,
             stdio: Any = None, console_socket: socket.socket | None = None,
             detach: bool = False) -> int:
        """Run ``command`` in a running container (Docker's ``exec``).

        The process joins the container's namespaces and cgroup, with its capabilities,
        seccomp filter, rlimits, environment (and ``env`` over it), user (``user`` is
        resolved against the container's passwd and group files, as ``run -u``) and
        working directory. ``tty`` asks for a terminal, sent on ``console_socket``
        (``console_size``: its first rows and columns); ``stdio`` is a
        ``runtime.container.Stdio``. Returns the process's exit status, or its pid
        with ``detach`` (it is then a child of the caller, which may reap it).
        Raises CommandNotFound (127) or CannotExecute (126) when it cannot run.
        """
        import msgspec

        from dockyard.oci import runtime as oci

        if not command:
            raise InvalidArgument("no command specified: give one after the container")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidArgument(f"the working directory '{workdir}' is invalid, it needs "
                                  "to be an absolute path")
        from dockyard.runtime.spawn import prime_cgroup_moves

        # The process joins the container's cgroup ~10 ms from now: see the function.
        prime_cgroup_moves()
        cid = self._running(id_or_name)
        runtime = self.runtime_of(cid)
        try:
            spec = oci.load_spec(runtime.config(cid))
        except NotFound:
            raise Conflict(f"container {cid} is not running") from None
        base = spec.process or oci.Process(cwd="/")
        variables = {entry.partition("=")[0]: entry for entry in base.env or ()}
        for entry in env:
            name, sep, _ = entry.partition("=")
            if sep:
                variables[name] = entry
            else:  # a bare NAME unsets it, as with run's -e
                variables.pop(name, None)
        process = msgspec.structs.replace(
            base, args=list(command), terminal=tty or None,
            env=list(variables.values()), cwd=workdir or base.cwd,
            console_size=oci.Box(height=console_size[0], width=console_size[1])
            if tty and console_size else None)
        if user or privileged:
            from dockyard.engine import ocispec  # only then: ~2 ms of imports
        if user:
            ids = ocispec.resolve_user(self._rootfs(cid), user)
            process.user = oci.User(uid=ids.uid, gid=ids.gid,
                                    additional_gids=ids.additional_gids or None)
        if privileged:
            caps = ocispec.capabilities(HostConfig(privileged=True))
            process.capabilities = oci.LinuxCapabilities(bounding=caps, effective=caps,
                                                         permitted=caps)
        row = self._row(cid)
        exec_id = os.urandom(32).hex()
        # Docker's action names the command as "ENTRYPOINT ARGS", a space even without
        # arguments.
        shown = f": {command[0]} {' '.join(command[1:])}"
        self.events.container("exec_create" + shown, row, execID=exec_id)
        self.events.container("exec_start" + shown, row, execID=exec_id)
        try:
            code = runtime.exec(cid, process, console_socket=console_socket, stdio=stdio,
                                detach=detach)
        except (NotFound, Conflict):
            # The container stopped meanwhile: say it as Docker does.
            raise Conflict(f"container {cid} is not running") from None
        except DockyardError as e:
            self.events.container("exec_die", row, execID=exec_id, exitCode=str(e.exit_code))
            raise
        if not detach:  # a detached process's end is seen by no one
            self.events.container("exec_die", row, execID=exec_id, exitCode=str(code))
        return code

    def attach(self, id_or_name: str) -> socket.socket:
        """A connection to a running container's monitor: its output and exit as
        frames, our input and window size to it (``runtime.monitor``'s protocol)."""
        from dockyard.runtime import monitor

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None or info["state"] != "running":
            raise Conflict("You cannot attach to a stopped container, start it first")
        if info["paused"]:
            raise Conflict("You cannot attach to a paused container, unpause it first")
        try:
            sock = monitor.attach(self.monitor_dir(cid))
        except Conflict:
            raise Conflict("You cannot attach to a stopped container, start it first") \
                from None
        self.events.container("attach", info)
        return sock

    def _settle(self, cid: str, timeout: float = 10.0) -> Any:
        """Wait (briefly) until the monitor recorded the final exit, and reconcile."""
        from dockyard.runtime import monitor

        state_dir = self.monitor_dir(cid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and monitor.monitor_alive(state_dir):
            status = monitor.read_exit(state_dir)
            if status is not None and not status.restarting:
                break
            time.sleep(0.005)
        return self._observe(self._row(cid))

    # --- reconcile ------------------------------------------------------------------

    def _observe(self, row: Any) -> dict[str, Any] | None:
        """The row made true to the monitor's files; None if it was an interrupted
        create (then removed)."""
        # Not the monitor module: ``ps`` and ``exec`` would import ~4 ms more for it.
        from dockyard.runtime.monitor_files import monitor_alive, read_exit

        info = dict(row)
        info["restarting"] = info["paused"] = False
        if info["state"] == "creating":
            if info["pid"] != os.getpid() and not pid_alive(info["pid"]):
                with contextlib.suppress(Exception):
                    self._destroy(info["id"], volumes=True)
                return None
            return info
        state_dir = self.monitor_dir(info["id"])
        if info["state"] in ("created", "exited") and info["pid"] and \
                info["pid"] != os.getpid() and not pid_alive(info["pid"]):
            # A start killed half way (``start`` marks the row with its pid): the
            # container runs if its monitor does; else what the start took is given back.
            changes = {"pid": 0}
            if monitor_alive(state_dir):
                changes = {"state": "running", "pid": self._live_pid(info["id"]),
                           "started_at": _now()[0], "finished_at": ""}
            else:
                self._release(info["id"])
            with self.db.transaction() as conn:
                conn.execute(f"UPDATE containers SET {', '.join(f'{k} = ?' for k in changes)} "
                             "WHERE id = ? AND pid = ?",
                             (*changes.values(), info["id"], info["pid"]))
            info.update(changes)
        if info["state"] != "running":
            return info
        # Alive first: a monitor that records the exit and ends between the two reads
        # is then seen dead with its exit, not dead without one (255).
        alive = monitor_alive(state_dir)
        status = read_exit(state_dir) if os.path.exists(state_dir) else None
        if alive and (status is None or status.restarting):
            if status is not None:
                info["restarting"] = True
                info["restart_count"] = status.restarts + 1
                info["exit_code"] = status.exit_code
            else:
                info["restart_count"] = 0
                # Paused is no state of the row: the freezer is the truth, whoever froze it.
                info["paused"] = self._frozen(info["id"])
            return info
        # It exited (or its monitor died): record it, and release what it held.
        self._release(info["id"])
        if status is None:
            code, oom, finished = UNKNOWN_EXIT_CODE, False, _now()[0]
            error = "the container's monitor died without recording its exit"
            restarts = info["restart_count"]
        else:
            code, oom, finished, error = (status.exit_code, status.oom_killed,
                                          status.finished_at, "")
            restarts = status.restarts
        with self.db.transaction() as conn:
            current = conn.execute("SELECT state, started_at FROM containers WHERE id = ?",
                                   (info["id"],)).fetchone()
            if current is None:
                return None
            if current["state"] == "running" and current["started_at"] == info["started_at"]:
                conn.execute(
                    "UPDATE containers SET state = 'exited', pid = 0, exit_code = ?, "
                    "oom_killed = ?, finished_at = ?, error = ?, restart_count = ? "
                    "WHERE id = ?", (code, int(oom), finished, error, restarts, info["id"]))
        info.update(state="exited", pid=0, exit_code=code, oom_killed=int(oom),
                    finished_at=finished, error=error, restart_count=restarts)
        if info["id"] not in self._attached and \
                json.loads(info["host_config"]).get("AutoRemove"):
            # --rm: no daemon removes it when it exits; the first to see it exited does.
            with contextlib.suppress(DockyardError, OSError):
                self._destroy(info["id"], volumes=True)
        return info

    def _release(self, cid: str) -> None:
        """Take down what a run held: the runtime's state and cgroup, the mounts, the
        volumes' uses, the networks' endpoints and ports (last: a failure there must
        not keep the mounts)."""
        runtime = self.runtime_of(cid)
        if runtime.exists(cid):
            with contextlib.suppress(DockyardError, OSError):
                runtime.delete(cid)
        netns = self._netns(cid)
        if is_mountpoint(netns):
            with contextlib.suppress(OSError):
                sc.umount2(netns, sc.MNT_DETACH)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(netns)
        self._unmount(self._rootfs(cid))
        rows = self.db.query("SELECT config FROM containers WHERE id = ?", (cid,))
        for point in _mount_points(rows[0]["config"]) if rows else ():
            if self.volumes.release(point["Name"], cid):
                self.events.record("volume", "unmount", point["Name"],
                                   {"driver": "local", "container": cid})
        self.networks.release(cid)

    @staticmethod
    def _unmount(path: str) -> None:
        from dockyard.storage.snapshots import unmount

        while is_mountpoint(path):
            try:
                unmount(path)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise

    def _destroy(self, cid: str, *, volumes: bool) -> None:
        """Remove everything of a container that is not running: state, files, row;
        its anonymous volumes too with ``volumes``."""
        rows = self.db.query("SELECT * FROM containers WHERE id = ?", (cid,))
        points = _mount_points(rows[0]["config"]) if rows else []
        self._release(cid)
        with contextlib.suppress(NotFound, Conflict):
            self.images.snapshots.remove(cid)
        shutil.rmtree(self._run_dir(cid), ignore_errors=True)
        shutil.rmtree(self._data_dir(cid), ignore_errors=True)
        with self.db.transaction() as conn:
            deleted = conn.execute("DELETE FROM containers WHERE id = ?", (cid,)).rowcount
        # Once, by whoever removed the row; an interrupted create was never announced.
        if deleted and rows[0]["state"] != "creating":
            self.events.container("destroy", rows[0])
        if volumes:
            self._remove_anonymous(points)

    # --- remove ---------------------------------------------------------------------

    def remove(self, id_or_name: str, *, force: bool = False, volumes: bool = False) -> str:
        """Remove a container; a running one only with ``force`` (killed first); its
        anonymous volumes too with ``volumes`` (named ones stay, as Docker's ``rm -v``).
        Returns its full ID."""
        from dockyard.runtime import monitor

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            return cid
        if info["state"] == "running":
            if not force:
                raise Conflict(f"You cannot remove a running container {cid}. Stop the "
                               "container before attempting removal or force remove")
            self._thaw(info)
            self.events.container("kill", info, signal=str(int(signal.SIGKILL)))
            with contextlib.suppress(Conflict):
                monitor.stop(self.monitor_dir(cid), 0, signal.SIGKILL)
            self._settle(cid)
            deadline = time.monotonic() + 5
            while monitor.monitor_alive(self.monitor_dir(cid)) and \
                    time.monotonic() < deadline:
                time.sleep(0.005)
        self._destroy(cid, volumes=volumes)
        return cid

    # --- reading --------------------------------------------------------------------

    def list(self, *, all: bool = False,
             filters: Mapping[str, Sequence[str]] | None = None) -> builtins.list[dict[str, Any]]:
        """The containers, newest first, in the shape of Docker's ``/containers/json``.

        ``all`` includes those not running. ``filters``: ``id``, ``name``, ``status``,
        ``label`` (``key`` or ``key=value``), ``exited`` (a code), ``ancestor`` (an
        image name or ID), ``volume`` (a volume's name, or a mount's source or
        destination), ``health`` (``starting``, ``healthy``, ``unhealthy``, or ``none``
        for a container without a healthcheck).
        """
        filters = dict(filters or {})
        unknown = set(filters) - {"id", "name", "status", "label", "exited", "ancestor",
                                  "volume", "health"}
        if unknown:
            raise InvalidArgument(f"invalid filter '{sorted(unknown)[0]}'")
        for status in filters.get("status", ()):
            if status not in _STATES:
                raise InvalidArgument(f"invalid filter 'status={status}'")
        for health in filters.get("health", ()):
            if health not in ("starting", "healthy", "unhealthy", "none"):
                raise InvalidArgument(f"Unrecognised filter value for health: {health}")
        ancestors = set()
        for ref in filters.get("ancestor", ()):
            with contextlib.suppress(NotFound, InvalidArgument):
                ancestors.add(self.images.resolve(ref))
        result = []
        for row in self.db.query("SELECT * FROM containers ORDER BY created_unix DESC"):
            info = self._observe(row)
            if info is None or info["state"] == "creating":
                continue
            summary = self._summary(info)
            status = summary["State"]
            if status == "exited" and json.loads(info["host_config"]).get("AutoRemove"):
                continue  # removed as it was seen exited (--rm)
            if not all and status not in ("running", "restarting", "paused") and \
                    "status" not in filters and "exited" not in filters:
                continue
            if "id" in filters and not any(info["id"].startswith(v) for v in filters["id"]):
                continue
            if "name" in filters and not any(re.search(v.removeprefix("/"), info["name"])
                                             for v in filters["name"]):
                continue
            if "status" in filters and status not in filters["status"]:
                continue
            if "exited" in filters and (status != "exited" or str(info["exit_code"])
                                        not in filters["exited"]):
                continue
            if "ancestor" in filters and info["image_id"] not in ancestors:
                continue
            if "health" in filters and summary["Health"] not in filters["health"]:
                continue
            if "volume" in filters and not any(
                    wanted in (mount.get("Name"), mount["Source"], mount["Destination"])
                    for mount in summary["Mounts"] for wanted in filters["volume"]):
                continue
            labels = summary["Labels"]
            if "label" in filters and not all_labels_match(labels, filters["label"]):
                continue
            result.append(summary)
        return result

    def _summary(self, info: dict[str, Any]) -> dict[str, Any]:
        config = json.loads(info["config"])
        host = json.loads(info["host_config"])
        path, args = self._command(info, config)
        state = _state_name(info)
        health = self.health(info["id"]) if state in ("running", "paused") else None
        health_status = str(health["Status"]) if health else "none"
        shown = {"starting": " (health: starting)", "none": ""}.get(health_status,
                                                                   f" ({health_status})")
        return {
            "Id": info["id"], "Names": ["/" + info["name"]], "Image": info["image"],
            "ImageID": info["image_id"],
            # As moby's container view: an argument with a space is shown in quotes.
            "Command": " ".join([path, *(f"'{a}'" if " " in a else a for a in args)]).strip(),
            "Created": int(info["created_unix"]),
            "Ports": _port_summary(self.networks.ports(info["id"]) if state == "running"
                                   else {}, config.get("ExposedPorts") or {}),
            "Labels": config.get("Labels") or {}, "State": state,
            "Status": _status_text(info, state) + shown, "HostConfig": {
                "NetworkMode": host.get("NetworkMode") or "bridge"},
            "NetworkSettings": {"Networks": self.networks.settings(
                info["id"], state == "running")["Networks"]},
            "Mounts": self._all_mounts(info),
            # Not Docker's: what `ps` needs to print ages without parsing again.
            "CreatedUnix": info["created_unix"], "ExitCode": info["exit_code"],
            "Health": health_status,
        }

    def _all_mounts(self, info: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        """The container's mounts in Docker's ``Mounts`` shape: binds, tmpfs, volumes."""
        return [*_mounts(json.loads(info["host_config"])),
                *({"Type": "volume", "Name": point["Name"],
                   "Source": self.volumes.driver.path(point["Name"]),
                   "Destination": point["Destination"], "Driver": "local",
                   "Mode": point["Mode"], "RW": point["RW"], "Propagation": ""}
                  for point in _mount_points(info["config"]))]

    def _merged_config(self, cid: str) -> ContainerConfig:
        """The container's ``Config`` with its image's defaults (EXPOSE, ENV...)."""
        from dockyard.engine.ocispec import merge_image_config

        row = self._row(cid)
        return merge_image_config(_load_config(row["config"]),
                                  self._image_config(row["image_id"]))

    def _image_config(self, image_id: str) -> Any:
        from dockyard.oci.image import load_config

        try:
            with self.images.content.open(image_id) as blob:
                return load_config(blob.read())
        except (NotFound, OSError):
            return None

    def _command(self, info: dict[str, Any], config: dict[str, Any]) -> tuple[str, list[str]]:
        from dockyard.engine.ocispec import command, merge_image_config

        image = self._image_config(info["image_id"])
        try:
            args = command(merge_image_config(_load_config(info["config"]), image))
        except DockyardError:
            args = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
        return (args[0], args[1:]) if args else ("", [])

    def inspect(self, id_or_name: str) -> dict[str, Any]:
        """The container in the shape of ``docker container inspect``."""
        from dockyard.engine.ocispec import merge_image_config
        from dockyard.oci.document import dump

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        config = _load_config(info["config"])
        host = json.loads(info["host_config"])
        image = self._image_config(info["image_id"])
        merged = merge_image_config(config, image)
        if not merged.hostname:
            merged.hostname = cid[:12]
        merged.image = info["image"]
        shown = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
                 "AttachStdout": False, "AttachStderr": False, "Tty": False,
                 "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
                 "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
                 "OnBuild": None, "Labels": {}, **json.loads(dump(merged))}
        path, args = self._command(info, json.loads(info["config"]))
        state = _state_name(info)
        run_dir = self._run_dir(cid)
        pid = info["pid"] if state in ("running", "restarting", "paused") else 0
        if state in ("running", "paused"):
            pid = self._live_pid(cid) or pid
        return {
            "Id": cid,
            "Created": info["created"],
            "Path": path,
            "Args": args,
            "State": {
                "Status": state,
                "Running": state in ("running", "restarting", "paused"),
                "Paused": state == "paused",
                "Restarting": state == "restarting",
                "OOMKilled": bool(info["oom_killed"]),
                "Dead": False,
                "Pid": pid,
                "ExitCode": info["exit_code"],
                "Error": info["error"],
                "StartedAt": info["started_at"] or ZERO_TIME,
                "FinishedAt": info["finished_at"] or ZERO_TIME,
                **({"Health": health} if (health := self.health(cid)) else {}),
            },
            "Image": info["image_id"],
            "ResolvConfPath": os.path.join(run_dir, "resolv.conf"),
            "HostnamePath": os.path.join(run_dir, "hostname"),
            "HostsPath": os.path.join(run_dir, "hosts"),
            "LogPath": self.log_path(cid),
            "Name": "/" + info["name"],
            "RestartCount": info["restart_count"],
            "Driver": self.images.snapshots.driver,
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": None,
            "HostConfig": {"NetworkMode": "bridge", "RestartPolicy": {"Name": "no",
                                                                    "MaximumRetryCount": 0},
                           "AutoRemove": False, "Privileged": False,
                           "ReadonlyRootfs": False, "Memory": 0, "MemorySwap": 0,
                           "NanoCpus": 0, "CpuShares": 0,
                           "PidsLimit": None, "CapAdd": None, "CapDrop": None,
                           "Binds": None, "Tmpfs": None, "LogConfig": {
                               "Type": "json-file", "Config": {}}, **host},
            "GraphDriver": {"Name": self.images.snapshots.driver,
                            "Data": {"MergedDir": self._rootfs(cid)}},
            "Mounts": self._all_mounts(info),
            "Config": shown,
            "NetworkSettings": {
                **self.networks.settings(cid, state in ("running", "paused"),
                                         list(merged.exposed_ports or {})),
                "SandboxKey": self._netns(cid) if pid else ""},
        }

    def _live_pid(self, cid: str) -> int:
        with contextlib.suppress(DockyardError, OSError):
            return self.runtime_of(cid).pid(cid)
        return 0

    def state(self, id_or_name: str) -> str:
        """Docker's State.Status of the container."""
        info = self._observe(self._row(self.resolve(id_or_name)))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        return _state_name(info)

    # --- prune, top, stats ----------------------------------------------------------

    def prune(self, *, until: float | None = None,
              labels: Sequence[str] = ()) -> tuple[builtins.list[str], int]:
        """Remove the containers that do not run (created or exited), as Docker's
        ``container prune``: those created before ``until`` (unix time) and with every
        label of ``labels`` (``key`` or ``key=value``). Their volumes stay. Returns
        their IDs and the space their writable layers took."""
        removed: builtins.list[str] = []
        reclaimed = 0
        for row in self.db.query("SELECT * FROM containers ORDER BY created_unix"):
            info = self._observe(row)
            if info is None or info["state"] in ("running", "creating"):
                continue
            if info["state"] == "exited" and json.loads(info["host_config"]).get("AutoRemove"):
                continue  # removed as it was seen exited (--rm)
            if until is not None and info["created_unix"] >= until:
                continue
            if not all_labels_match(json.loads(info["config"]).get("Labels") or {}, labels):
                continue
            with contextlib.suppress(DockyardError, OSError):
                reclaimed += self.images.snapshots.usage(info["id"]).size
            with contextlib.suppress(NotFound):
                self._destroy(info["id"], volumes=False)
                removed.append(info["id"])
        return removed, reclaimed

    def top(self, id_or_name: str, ps_args: Sequence[str] = ()) -> dict[str, Any]:
        """The host's ``ps`` (``ps_args``, default ``-ef``) cut to the container's
        processes, in the shape of Docker's ``/containers/ID/top``: ``Titles`` and
        ``Processes`` (the last column may hold spaces, as ``CMD`` does)."""
        import subprocess

        info = self._live(id_or_name)
        pids = set(self.runtime_of(info["id"]).pids(info["id"]))
        result = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise InvalidArgument(f"Error running ps: {result.stderr.strip()}")
        lines = result.stdout.splitlines()
        titles = lines[0].split() if lines else []
        if "PID" not in titles:
            raise InvalidArgument("Couldn't find PID field in ps output")
        column = titles.index("PID")
        processes = []
        for line in lines[1:]:
            fields = line.split()
            if len(fields) < len(titles) or not fields[column].isdigit():
                continue
            if int(fields[column]) in pids:
                last = len(titles) - 1
                processes.append([*fields[:last], " ".join(fields[last:])])
        self.events.container("top", info)
        return {"Titles": titles, "Processes": processes}

    def stats(self, names: Sequence[str] = (), *, all: bool = False,
              interval: float = 0.5) -> builtins.list[dict[str, Any]]:
        """One sample of the resource use of the named containers (default: those that
        run; every one with ``all``), read from their cgroups: CPU % over ``interval``
        seconds, memory (without the inactive page cache, as Docker's CLI shows it)
        and its limit (the host's memory when there is none), block and network I/O
        (the init's interfaces but ``lo``), pids. A container that does not run is
        all zeros. Each: ID, Name, CPUPerc, MemUsage, MemLimit, NetRx, NetTx,
        BlockRead, BlockWrite, PIDs."""
        infos = ([self._observe(self._row(self.resolve(name))) for name in names]
                 if names else [self._observe(row) for row in self.db.query(
                     "SELECT * FROM containers ORDER BY created_unix DESC")])
        live: dict[str, Any] = {}
        chosen = []
        for info in infos:
            if info is None or info["state"] == "creating":
                continue
            if info["state"] == "running" and not info["restarting"]:
                with contextlib.suppress(DockyardError, OSError):
                    live[info["id"]] = self._cgroup(info["id"])
            if names or all or info["id"] in live:
                chosen.append(info)
        first = {cid: (_cpu_usage(cg), time.monotonic_ns()) for cid, cg in live.items()}
        if first:
            time.sleep(interval)
        result = []
        for info in chosen:
            cid = info["id"]
            sample = {"ID": cid, "Name": info["name"], "CPUPerc": 0.0, "MemUsage": 0,
                      "MemLimit": 0, "NetRx": 0, "NetTx": 0, "BlockRead": 0,
                      "BlockWrite": 0, "PIDs": 0}
            cg = live.get(cid)
            if cg is not None and cg.exists():
                used, then = first[cid]
                elapsed = time.monotonic_ns() - then
                sample["CPUPerc"] = max(0, _cpu_usage(cg) - used) * 100.0 / max(elapsed, 1)
                sample["MemUsage"], sample["MemLimit"] = _memory_usage(cg)
                sample["BlockRead"], sample["BlockWrite"] = _block_io(cg)
                sample["PIDs"] = _cgroup_int(cg, "pids.current")
                if json.loads(info["host_config"]).get("NetworkMode") != "host":
                    sample["NetRx"], sample["NetTx"] = _net_io(self._live_pid(cid))
            result.append(sample)
        return result

    def _cgroup(self, cid: str) -> Any:
        return self.runtime_of(cid).cgroup(cid)

    # --- logs -----------------------------------------------------------------------

    def logs(self, id_or_name: str, *, follow: bool = False, tail: int | None = None,
             since: float | None = None, until: float | None = None) -> Iterator[LogEntry]:
        """The entries of the container's log, oldest first.

        ``tail`` keeps the last N; ``since`` / ``until`` (unix time) bound them;
        ``follow`` goes on with new entries until the container stops.
        """
        cid = self.resolve(id_or_name)
        self._row(cid)
        path = self.log_path(cid)

        def wanted(entry: LogEntry) -> bool:
            if since is None and until is None:
                return True
            when = parse_timestamp(entry.time)
            return (since is None or when >= since) and (until is None or when <= until)

        reader = _LogReader(path)
        first: Iterator[LogEntry] = (e for e in reader.backlog() if wanted(e))
        if tail is not None and tail >= 0:
            first = iter(deque(first, maxlen=tail))
        yield from first
        if not follow:
            return
        yield from (e for e in self._follow(cid, reader) if wanted(e))

    def _follow(self, cid: str, reader: _LogReader) -> Iterator[LogEntry]:
        from dockyard.runtime import monitor

        state_dir = self.monitor_dir(cid)
        info = self._observe(self._row(cid))
        running = info is not None and info["state"] == "running"
        while running:
            try:
                sock = monitor.attach(state_dir)
            except (Conflict, OSError):
                break
            with sock:
                while True:
                    ended = _wait_frame(sock, monitor)
                    yield from reader.more()
                    if ended != "output":
                        break
            if ended == "exit":
                break
            # The monitor closed the connection: it is gone, or between two runs.
            status = monitor.read_exit(state_dir)
            if not monitor.monitor_alive(state_dir) or (status is not None
                                                        and not status.restarting):
                break
            time.sleep(0.05)
        yield from reader.more()
        reader.close()


def _wait_frame(sock: socket.socket, monitor: Any) -> str:
    """Block on an attach connection until output comes ("output"), the container's
    final exit ("exit") or the end of the connection ("closed").

    The frames' payloads are not used: the log is the one record of what the
    container wrote (an attach made after the start would miss its first output).
    """
    buf = b""
    while True:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return "closed"
        if not data:
            return "closed"
        buf += data
        while len(buf) >= monitor.HEADER.size:
            kind, length = monitor.HEADER.unpack_from(buf)
            if len(buf) < monitor.HEADER.size + length:
                break
            payload = buf[monitor.HEADER.size:monitor.HEADER.size + length]
            buf = buf[monitor.HEADER.size + length:]
            if kind == monitor.Frame.EXIT and not json.loads(payload).get("restarting"):
                return "exit"
        if not buf:
            return "output"


class _LogReader:
    """Reads a json-file log (and its rotated files) as it grows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: Any = None
        self.inode = 0
        self.partial = b""

    def backlog(self) -> Iterator[LogEntry]:
        for n in range(9, 0, -1):
            rotated = f"{self.path}.{n}"
            if os.path.exists(rotated):
                with open(rotated, "rb") as f:
                    yield from _parse_lines(f.read())
        self._open()
        yield from self.more()

    def _open(self) -> None:
        try:
            self.file = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
            self.inode = os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            self.file = None

    def more(self) -> Iterator[LogEntry]:
        while True:
            if self.file is None:
                self._open()
                if self.file is None:
                    return
            data = self.partial + self.file.read()
            cut = data.rfind(b"\n") + 1
            self.partial = data[cut:]
            yield from _parse_lines(data[:cut])
            try:
                rotated = os.stat(self.path).st_ino != self.inode
            except FileNotFoundError:
                rotated = False
            if not rotated:
                return
            self.file.close()
            self.file = None
            self.partial = b""

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _parse_lines(data: bytes) -> Iterator[LogEntry]:
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            yield LogEntry(entry.get("stream", "stdout"), entry.get("log", "").encode(),
                           entry.get("time", ""))
        except ValueError:
            continue


# --- helpers ------------------------------------------------------------------------


def _load_config(text: str) -> ContainerConfig:
    from dockyard.engine.config import load_container_config

    return load_container_config(text)


def _load_host(text: str) -> HostConfig:
    from dockyard.engine.config import load_host_config

    return load_host_config(text)


def _mount_points(config: str) -> list[dict[str, Any]]:
    """The volumes a container's stored config records (``_volume_points``)."""
    return list(json.loads(config).get("MountPoints") or [])


def _stop_timeout(config: ContainerConfig) -> int:
    return config.stop_timeout if config.stop_timeout is not None else _DEFAULT_STOP_TIMEOUT


def _log_options(host: HostConfig) -> tuple[int, int]:
    from dockyard.engine.options import parse_size
    from dockyard.runtime.logfile import DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE

    log = host.log_config
    if log is not None and log.type not in (None, "", "json-file"):
        raise InvalidArgument(f"log driver {log.type!r} is not supported yet: use json-file")
    options = (log.config if log is not None else None) or {}
    size = parse_size(options["max-size"]) if "max-size" in options else DEFAULT_MAX_SIZE
    try:
        files = int(options.get("max-file", DEFAULT_MAX_FILES))
    except ValueError:
        raise InvalidArgument(f"invalid max-file: {options['max-file']}") from None
    return size, files


def _state_name(info: Mapping[str, Any]) -> str:
    if info["state"] == "running":
        if info.get("restarting"):
            return "restarting"
        return "paused" if info.get("paused") else "running"
    if info["state"] == "creating":
        return "created"
    return str(info["state"])


def _status_text(info: Mapping[str, Any], state: str) -> str:
    """``Up 2 seconds``, ``Exited (0) 3 seconds ago``, ``Created``, as ``docker ps``."""
    from dockyard.cli.formatting import human_duration  # pure text, no I/O

    now = time.time()
    if state in ("running", "paused"):
        up = "Up " + human_duration(now - parse_timestamp(info["started_at"]))
        return up + " (Paused)" if state == "paused" else up
    if state == "restarting":
        return (f"Restarting ({info['exit_code']}) "
                f"{human_duration(now - parse_timestamp(info['finished_at']))} ago")
    if state == "exited":
        return (f"Exited ({info['exit_code']}) "
                f"{human_duration(now - parse_timestamp(info['finished_at']))} ago")
    return state.capitalize()


def _mounts(host: Mapping[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for raw in host.get("Binds") or ():
        bind = parse_bind(raw)
        if bind.type == "bind":
            mounts.append({"Type": "bind", "Source": bind.source, "Destination": bind.target,
                           "Mode": bind.mode, "RW": not bind.read_only,
                           "Propagation": bind.propagation or "rprivate"})
    for target in host.get("Tmpfs") or {}:
        mounts.append({"Type": "tmpfs", "Source": "", "Destination": target, "Mode": "",
                       "RW": True, "Propagation": ""})
    return mounts


def _port_summary(published: Mapping[str, Sequence[Mapping[str, str]]],
                  exposed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``Ports`` of a container's summary (``docker ps``): its published ports,
    and those exposed only."""
    ports: list[dict[str, Any]] = []
    for key in sorted({*published, *exposed}):
        port, _, proto = key.partition("/")
        for binding in published.get(key) or [{}]:
            entry: dict[str, Any] = {"PrivatePort": int(port), "Type": proto or "tcp"}
            if binding:
                entry.update(IP=binding["HostIp"], PublicPort=int(binding["HostPort"]))
            ports.append(entry)
    return ports


def all_labels_match(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    """Docker's ``label`` filter: every ``key`` or ``key=value`` holds."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _name_in_use(name: str, holder: str) -> Conflict:
    """Docker's error for a name another container has."""
    return Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{holder}". You have to remove (or rename) that container to be able '
                    "to reuse that name.")


def _cgroup_int(cg: Any, name: str) -> int:
    """A number a cgroup file holds; 0 when the file is missing or says ``max``."""
    with contextlib.suppress(DockyardError, ValueError):
        return int(cg.read(name))
    return 0


def _cgroup_keyed(cg: Any, name: str) -> dict[str, int]:
    """A ``key value`` per line cgroup file (``memory.stat``, ``cpu.stat``)."""
    with contextlib.suppress(DockyardError):
        return {key: int(value) for key, _, value in
                (line.partition(" ") for line in cg.read(name).splitlines())
                if value.strip().lstrip("-").isdigit()}
    return {}


def _cpu_usage(cg: Any) -> int:
    """The CPU time the cgroup used, in nanoseconds."""
    if cg.version == "v1":
        return _cgroup_int(cg, "cpuacct.usage")
    return _cgroup_keyed(cg, "cpu.stat").get("usage_usec", 0) * 1000


def _memory_usage(cg: Any) -> tuple[int, int]:
    """The memory the cgroup uses less its inactive file cache (what Docker's CLI
    shows), and its limit, capped to the host's memory."""
    host = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if cg.version == "v1":
        usage = _cgroup_int(cg, "memory.usage_in_bytes")
        inactive = _cgroup_keyed(cg, "memory.stat").get("total_inactive_file", 0)
        limit = _cgroup_int(cg, "memory.limit_in_bytes")
    else:
        usage = _cgroup_int(cg, "memory.current")
        inactive = _cgroup_keyed(cg, "memory.stat").get("inactive_file", 0)
        limit = _cgroup_int(cg, "memory.max")
    return max(0, usage - inactive), min(limit, host) if limit > 0 else host


def _block_io(cg: Any) -> tuple[int, int]:
    """Bytes read from and written to block devices by the cgroup."""
    read = written = 0
    if cg.version == "v1":
        with contextlib.suppress(DockyardError):
            for line in cg.read("blkio.throttle.io_service_bytes_recursive").splitlines():
                fields = line.split()  # "8:0 Read 4096"; the "Total" lines have 2 fields
                if len(fields) == 3 and fields[1] in ("Read", "Write"):
                    if fields[1] == "Read":
                        read += int(fields[2])
                    else:
                        written += int(fields[2])
        return read, written
    with contextlib.suppress(DockyardError):
        for line in cg.read("io.stat").splitlines():  # "8:0 rbytes=N wbytes=N ..."
            values = dict(item.partition("=")[::2] for item in line.split()[1:])
            read += int(values.get("rbytes", 0))
            written += int(values.get("wbytes", 0))
    return read, written


def _net_io(pid: int) -> tuple[int, int]:
    """Bytes received and sent on the interfaces (but ``lo``) of ``pid``'s network
    namespace."""
    received = sent = 0
    text = _read_text(f"/proc/{pid}/net/dev") if pid else None
    for line in (text or "").splitlines()[2:]:  # two header lines
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() != "lo" and len(fields) >= 9:
            received += int(fields[0])
            sent += int(fields[8])
    return received, sent


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def new_netns(path: str, *, ipv6: bool = True) -> None:
    """A new network namespace with its loopback up, kept by a bind mount on ``path``.

    A short-lived thread unshares its network namespace (a thread's own: the process's
    other threads stay where they are, and no fork of the whole interpreter is paid),
    brings ``lo`` up there with the SIOCSIFFLAGS ioctl and binds its
    /proc/thread-self/ns/net on ``path``: the thread shares our mount namespace, so the
    bind is ours, and it keeps the namespace alive after the thread ends. Without
    ``ipv6``, the interfaces made there later have IPv6 off (as Docker's on a network
    without IPv6: no link-local address, no router solicitations); ``lo`` keeps ::1.
    """
    with open(path, "a"):
        pass

    def make() -> None:
        sc.unshare(sc.CLONE_NEWNET)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = _IFREQ.unpack(fcntl.ioctl(s, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
            fcntl.ioctl(s, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
        if not ipv6:
            # /proc/sys/net is the namespace of the task that opens it: this thread's.
            with contextlib.suppress(FileNotFoundError), \
                    open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
                f.write("1")
        sc.mount("/proc/thread-self/ns/net", path, None, sc.MS_BIND)

    # The thread ends right after, and its namespace with it but for the bind.
    try:
        sc.call_in_thread(make)
    except OSError as e:
        raise SystemFailure(f"cannot create the container's network namespace: {e}") from None

