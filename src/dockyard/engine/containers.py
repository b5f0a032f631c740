"""The container service: create, start, stop, kill, wait, remove, list, inspect, logs.

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
    RUNROOT/runtime/                     the runtime's state root

The lifecycle, as the ``state`` column records it::

    creating --create--> created --start--> running --exit--> exited
                            ^                               |
                            +------------ start ------------+
                 (a failed start stays created, with its exit code and error)

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

Networking is not there yet: a container gets a new network namespace with only its
loopback up (``--network none`` and the default), or the host's (``--network host``).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
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
from dockyard.engine.volumes import VolumeService
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure
from dockyard.linux import syscalls as sc

if TYPE_CHECKING:
    from dockyard.engine.images import RegistryOptions
    from dockyard.engine.ocispec import VolumeRequest

__all__ = ["UNKNOWN_EXIT_CODE", "ContainerService", "LogEntry"]

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

_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
          "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
          "ff02::2\tip6-allrouters\n")


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

    ``runtime`` None is dockyard's own runtime, run in the monitor without a new
    interpreter; another runc-compatible binary is not wired through the monitor yet
    and is refused.
    """

    def __init__(self, root: str, runroot: str, *, storage_driver: str | None = None,
                 runtime: str | None = None, registries: RegistryOptions | None = None
                 ) -> None:
        from dockyard.engine.images import ImageService

        if runtime is not None:
            raise InvalidArgument(f"runtime {runtime!r}: only dockyard's own runtime can run "
                                  "containers yet (leave --runtime out)")
        self.root = os.path.abspath(root)
        self.runroot = os.path.abspath(runroot)
        self.images = ImageService(self.root, storage_driver=storage_driver,
                                   registries=registries, in_use=self.image_in_use)
        self.db: Database = self.images.db
        self.volumes = VolumeService(self.root, in_use=self.volume_users)
        self.runtime_root = os.path.join(self.runroot, "runtime")
        self._attached: set[str] = set()  # see run()

    # --- paths ----------------------------------------------------------------------

    def _run_dir(self, cid: str) -> str:
        return os.path.join(self.runroot, "containers", cid)

    def _bundle(self, cid: str) -> str:
        return os.path.join(self._run_dir(cid), "bundle")

    def _rootfs(self, cid: str) -> str:
        return os.path.join(self._bundle(cid), "rootfs")

    def _monitor_dir(self, cid: str) -> str:
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

    def _new_name(self) -> str:
        for _ in range(10):
            name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"
            if not self.db.query("SELECT 1 FROM containers WHERE name = ?", (name,)):
                return name
        return f"dockyard_{secrets.token_hex(6)}"

    # --- create ---------------------------------------------------------------------

    def create(self, config: ContainerConfig, host: HostConfig,
               name: str | None = None) -> str:
        """Create a container; its 64-hex ID. ``config.image`` names the image."""
        return self._create(config, host, name, keep_mounted=False)

    def run(self, config: ContainerConfig, host: HostConfig, name: str | None = None, *,
            attached: bool = False) -> str:
        """Create and start a container (its rootfs mounted once); its ID.

        ``attached``: the caller stays until the container exits and removes it itself
        (``run --rm`` in the foreground): this service does not remove it when it sees
        it exited, so that the caller can still read its exit code. A container with
        AutoRemove that fails to start is removed.
        """
        cid = self._create(config, host, name, keep_mounted=True)
        if attached:
            self._attached.add(cid)
        try:
            self.start(cid)
        except BaseException:
            if host.auto_remove:
                with contextlib.suppress(Exception):
                    self._destroy(cid, volumes=True)
            raise
        return cid

    def _create(self, config: ContainerConfig, host: HostConfig, name: str | None,
                *, keep_mounted: bool) -> str:
        from dockyard.engine import ocispec
        from dockyard.oci.document import dump
        from dockyard.oci.image import load_config
        from dockyard.storage.snapshots import mount_all

        if not config.image:
            raise InvalidArgument("no image given: name the image to create the container "
                                  "from")
        if name is not None:
            if not _NAME.match(name):
                raise InvalidArgument(f"Invalid container name ({name}), only "
                                      "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.removeprefix("/")
        if host.runtime and host.runtime not in ("dockyard", "runc"):
            raise InvalidArgument(f"runtime {host.runtime!r} is not supported yet: only "
                                  "dockyard's own runtime runs containers")
        network = host.network_mode or "default"
        if network not in ("default", "bridge", "none", "host"):
            raise InvalidArgument(f"network mode {network!r} is not supported yet: use "
                                  "none or host")
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
        points = self._volume_points(ocispec.volume_requests(config, host, image))
        # The row's config keeps the volumes as Docker's MountPoints, beside Docker's
        # Config members (which decoding it as a ContainerConfig ignores): the
        # anonymous volumes' names exist nowhere else, and ``volume_users`` looks there.
        document = {**json.loads(dump(config)), "MountPoints": points}

        cid = secrets.token_hex(32)
        created, created_unix = _now()
        try:
            with self.db.transaction() as conn:
                name = name or self._new_name()
                taken = conn.execute("SELECT id FROM containers WHERE name = ?",
                                     (name,)).fetchone()
                if taken is not None:
                    raise Conflict(f'Conflict. The container name "/{name}" is already in '
                                   f'use by container "{taken[0]}". You have to remove (or '
                                   "rename) that container to be able to reuse that name.")
                conn.execute(
                    "INSERT INTO containers (id, name, image_id, image, config, host_config, "
                    "created, created_unix, state, pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (cid, name, image_id, config.image, json.dumps(document),
                     dump(host).decode(), created, created_unix, "creating", os.getpid()))
        except BaseException:
            self._remove_anonymous(points)
            raise
        mounted = False
        try:
            run_dir = self._run_dir(cid)
            rootfs = self._rootfs(cid)
            os.makedirs(rootfs, mode=0o711)
            os.makedirs(self._data_dir(cid), mode=0o710, exist_ok=True)
            mounts = self.images.snapshots.prepare(cid, chain_id)
            mount_all(mounts, rootfs)
            mounted = True
            merged = ocispec.merge_image_config(config, image)
            hostname = (os.uname().nodename if host.uts_mode == "host"
                        else merged.hostname or cid[:12])
            files = self._network_files(run_dir, host, hostname)
            for raw in host.binds or ():
                bind = parse_bind(raw)
                if bind.type == "bind" and not os.path.exists(bind.source):
                    os.makedirs(bind.source, exist_ok=True)  # as Docker's -v does
            # A volume's path is its driver's directory, mounted or not: the spec can
            # name it now, and ``start`` mounts the volume there.
            volumes = [(self.volumes.driver.path(point["Name"]), point["Destination"],
                        [] if point["RW"] else ["ro"]) for point in points]
            spec = ocispec.render(
                config, host, image, rootfs=rootfs, container_id=cid, volumes=volumes,
                hosts_file=files["hosts"], resolv_conf=files["resolv.conf"],
                hostname_file=files["hostname"],
                netns_path=None if network == "host" else self._netns(cid))
            _write(os.path.join(self._bundle(cid), "config.json"), dump(spec, indent=2))
            with self.db.transaction() as conn:
                conn.execute("UPDATE containers SET state = 'created', pid = 0 WHERE id = ?",
                             (cid,))
        except BaseException:
            with contextlib.suppress(Exception):
                self._destroy(cid, volumes=True)
            raise
        if mounted and not keep_mounted:
            self._unmount(rootfs)
        return cid

    def _volume_points(self, requests: Sequence[VolumeRequest]) -> builtins.list[dict[str, Any]]:
        """The volumes of ``volume_requests``, created when missing (a new anonymous one
        for each request without a name), as the MountPoints the row records."""
        points: builtins.list[dict[str, Any]] = []
        try:
            for request in requests:
                volume = self.volumes.create(request.name or None)
                points.append({"Name": volume["Name"], "Destination": request.target,
                               "RW": not request.read_only,
                               "Mode": "ro" if request.read_only else "",
                               "Anonymous": not request.name, "NoCopy": request.no_copy})
        except BaseException:
            self._remove_anonymous(points)
            raise
        return points

    def _remove_anonymous(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Remove the anonymous volumes among ``points`` (``rm -v``, ``--rm``).

        One that another container also names (``-v ID:/path``) stays: as for Docker,
        that is no error of the removal.
        """
        for point in points:
            if point["Anonymous"]:
                with contextlib.suppress(Conflict, NotFound):
                    self.volumes.remove(point["Name"])

    def _network_files(self, run_dir: str, host: HostConfig, hostname: str) -> dict[str, str]:
        paths = {name: os.path.join(run_dir, name)
                 for name in ("hosts", "hostname", "resolv.conf")}
        hosts = (_read_text("/etc/hosts") or _HOSTS) if host.network_mode == "host" else _HOSTS
        for entry in host.extra_hosts or ():
            entry_name, _, address = entry.partition(":")
            hosts += f"{address}\t{entry_name}\n"
        _write(paths["hosts"], hosts.encode())
        _write(paths["hostname"], f"{hostname}\n".encode())
        resolv = _read_text("/etc/resolv.conf") or ""
        if host.dns or host.dns_search or host.dns_options:
            lines = [line for line in resolv.splitlines()
                     if not (host.dns and line.startswith("nameserver"))
                     and not (host.dns_search and line.startswith(("search", "domain")))
                     and not (host.dns_options and line.startswith("options"))]
            lines += [f"nameserver {server}" for server in host.dns or ()]
            if host.dns_search:
                lines.append("search " + " ".join(host.dns_search))
            if host.dns_options:
                lines.append("options " + " ".join(host.dns_options))
            resolv = "\n".join(lines) + "\n"
        _write(paths["resolv.conf"], resolv.encode())
        return paths

    # --- start, stop, kill, wait ----------------------------------------------------

    def start(self, id_or_name: str) -> None:
        """Start a created or exited container (a running one is left as it is)."""
        from dockyard.runtime import monitor
        from dockyard.runtime.state import StateDir
        from dockyard.storage.snapshots import mount_all

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        if info["state"] == "running":
            return
        if info["state"] == "creating":
            raise Conflict(f"container {cid[:12]} is still being created")
        config = _load_config(info["config"])
        host = _load_host(info["host_config"])
        # The monitor of the last run may still be finishing (it exits right after it
        # recorded the exit): give it a moment.
        state_dir = self._monitor_dir(cid)
        deadline = time.monotonic() + 5
        while monitor.monitor_alive(state_dir) and time.monotonic() < deadline:
            time.sleep(0.01)
        rootfs = self._rootfs(cid)
        try:
            if not os.path.ismount(rootfs):
                mount_all(self.images.snapshots.mounts(cid), rootfs)
            for point in _mount_points(info["config"]):
                self.volumes.mount_path(point["Name"], cid)
                if not point["NoCopy"]:
                    # Docker's copy-up: a volume still empty gets the image's files.
                    self.volumes.populate(point["Name"], rootfs, point["Destination"])
            if host.network_mode != "host" and not os.path.ismount(self._netns(cid)):
                _new_netns(self._netns(cid))
            restart = host.restart_policy
            policy = monitor.RestartPolicy.parse(
                (restart.name or "no") + (f":{restart.maximum_retry_count}"
                                          if restart and restart.name == "on-failure"
                                          and restart.maximum_retry_count else "")
                if restart is not None else "no")
            max_size, max_files = _log_options(host)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(state_dir, monitor.EXIT_FILE))
            spec = monitor.MonitorSpec(
                container_id=cid, bundle=self._bundle(cid), runtime_root=self.runtime_root,
                state_dir=state_dir, log_path=self.log_path(cid), max_size=max_size,
                max_files=max_files, terminal=bool(config.tty), stdin=bool(config.open_stdin),
                restart=policy, stop_signal=signal_number(config.stop_signal or "SIGTERM"),
                stop_timeout=float(_stop_timeout(config)))
            started, _ = _now()
            monitor.start_monitor(spec)
        except BaseException as e:
            self._release(cid)
            if isinstance(e, DockyardError):
                with self.db.transaction() as conn:
                    conn.execute("UPDATE containers SET exit_code = ?, error = ? WHERE id = ?",
                                 (e.exit_code if e.exit_code in (126, 127) else 128,
                                  str(e), cid))
            raise
        pid = 0
        with contextlib.suppress(DockyardError, OSError):
            pid = StateDir(self.runtime_root, cid).read().pid
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE containers SET state = 'running', pid = ?, started_at = ?, "
                "finished_at = '', exit_code = 0, oom_killed = 0, error = '' WHERE id = ?",
                (pid, started, cid))

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
        with contextlib.suppress(Conflict):
            monitor.stop(self._monitor_dir(cid), timeout,
                         None if sig is None else signal_number(sig))
        self._settle(cid)

    def kill(self, id_or_name: str, sig: str | int = "SIGKILL") -> None:
        """Send a signal to the container's init (Docker's ``kill``)."""
        from dockyard.runtime.container import Runtime

        number = signal_number(sig)
        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None or info["state"] != "running":
            raise Conflict(f"Cannot kill container: {id_or_name}: Container {cid} is not "
                           "running")
        try:
            Runtime(self.runtime_root).kill(cid, number)
        except NotFound:
            raise Conflict(f"Cannot kill container: {id_or_name}: Container {cid} is not "
                           "running") from None
        if number == signal.SIGKILL:
            self._settle(cid, 2.0)

    def wait(self, id_or_name: str) -> int:
        """Wait until the container is not running; its exit code."""
        from dockyard.runtime import monitor

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is not None and info["state"] == "running":
            with contextlib.suppress(Conflict, OSError), \
                    monitor.attach(self._monitor_dir(cid)) as sock:
                while (frame := monitor.read_frame(sock)) is not None:
                    if frame[0] == monitor.Frame.EXIT and \
                            not json.loads(frame[1]).get("restarting"):
                        break
            info = self._settle(cid)
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        return int(info["exit_code"])

    # --- exec and attach ------------------------------------------------------------

    def _running(self, id_or_name: str) -> str:
        """The full ID of a running container; Docker's Conflict when it is not."""
        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        if info["state"] != "running":
            raise Conflict(f"container {cid} is not running")
        return cid

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

        from dockyard.engine import ocispec
        from dockyard.engine.config import HostConfig
        from dockyard.oci import runtime as oci
        from dockyard.runtime.container import Runtime

        if not command:
            raise InvalidArgument("no command specified: give one after the container")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidArgument(f"the working directory '{workdir}' is invalid, it needs "
                                  "to be an absolute path")
        cid = self._running(id_or_name)
        runtime = Runtime(self.runtime_root)
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
        if user:
            ids = ocispec.resolve_user(self._rootfs(cid), user)
            process.user = oci.User(uid=ids.uid, gid=ids.gid,
                                    additional_gids=ids.additional_gids or None)
        if privileged:
            caps = ocispec.capabilities(HostConfig(privileged=True))
            process.capabilities = oci.LinuxCapabilities(bounding=caps, effective=caps,
                                                         permitted=caps)
        try:
            return runtime.exec(cid, process, console_socket=console_socket, stdio=stdio,
                                detach=detach)
        except (NotFound, Conflict):
            # The container stopped meanwhile: say it as Docker does.
            raise Conflict(f"container {cid} is not running") from None

    def attach(self, id_or_name: str) -> socket.socket:
        """A connection to a running container's monitor: its output and exit as
        frames, our input and window size to it (``runtime.monitor``'s protocol)."""
        from dockyard.runtime import monitor

        cid = self.resolve(id_or_name)
        info = self._observe(self._row(cid))
        if info is None or info["state"] != "running":
            raise Conflict("You cannot attach to a stopped container, start it first")
        try:
            return monitor.attach(self._monitor_dir(cid))
        except Conflict:
            raise Conflict("You cannot attach to a stopped container, start it first") \
                from None

    def _settle(self, cid: str, timeout: float = 10.0) -> Any:
        """Wait (briefly) until the monitor recorded the final exit, and reconcile."""
        from dockyard.runtime import monitor

        state_dir = self._monitor_dir(cid)
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
        from dockyard.runtime import monitor

        info = dict(row)
        info["restarting"] = False
        if info["state"] == "creating":
            if info["pid"] != os.getpid() and not _pid_alive(info["pid"]):
                with contextlib.suppress(Exception):
                    self._destroy(info["id"], volumes=True)
                return None
            return info
        if info["state"] != "running":
            return info
        state_dir = self._monitor_dir(info["id"])
        status = monitor.read_exit(state_dir) if os.path.exists(state_dir) else None
        alive = monitor.monitor_alive(state_dir)
        if alive and (status is None or status.restarting):
            if status is not None:
                info["restarting"] = True
                info["restart_count"] = status.restarts + 1
                info["exit_code"] = status.exit_code
            else:
                info["restart_count"] = 0
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
        volumes' uses."""
        from dockyard.runtime.container import Runtime
        from dockyard.runtime.state import StateDir

        if StateDir(self.runtime_root, cid).exists():
            with contextlib.suppress(DockyardError, OSError):
                Runtime(self.runtime_root).delete(cid, force=True)
        netns = self._netns(cid)
        if os.path.ismount(netns):
            with contextlib.suppress(OSError):
                sc.umount2(netns, sc.MNT_DETACH)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(netns)
        self._unmount(self._rootfs(cid))
        rows = self.db.query("SELECT config FROM containers WHERE id = ?", (cid,))
        for point in _mount_points(rows[0]["config"]) if rows else ():
            self.volumes.release(point["Name"], cid)

    @staticmethod
    def _unmount(path: str) -> None:
        from dockyard.storage.snapshots import unmount

        while os.path.ismount(path):
            try:
                unmount(path)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise

    def _destroy(self, cid: str, *, volumes: bool) -> None:
        """Remove everything of a container that is not running: state, files, row;
        its anonymous volumes too with ``volumes``."""
        rows = self.db.query("SELECT config FROM containers WHERE id = ?", (cid,))
        points = _mount_points(rows[0]["config"]) if rows else []
        self._release(cid)
        with contextlib.suppress(NotFound, Conflict):
            self.images.snapshots.remove(cid)
        shutil.rmtree(self._run_dir(cid), ignore_errors=True)
        shutil.rmtree(self._data_dir(cid), ignore_errors=True)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (cid,))
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
            with contextlib.suppress(Conflict):
                monitor.stop(self._monitor_dir(cid), 0, signal.SIGKILL)
            self._settle(cid)
            deadline = time.monotonic() + 5
            while monitor.monitor_alive(self._monitor_dir(cid)) and \
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
        destination).
        """
        filters = dict(filters or {})
        unknown = set(filters) - {"id", "name", "status", "label", "exited", "ancestor",
                                  "volume"}
        if unknown:
            raise InvalidArgument(f"invalid filter '{sorted(unknown)[0]}'")
        for status in filters.get("status", ()):
            if status not in _STATES:
                raise InvalidArgument(f"invalid filter 'status={status}'")
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
            if not all and status not in ("running", "restarting") and \
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
        return {
            "Id": info["id"], "Names": ["/" + info["name"]], "Image": info["image"],
            "ImageID": info["image_id"],
            # As moby's container view: an argument with a space is shown in quotes.
            "Command": " ".join([path, *(f"'{a}'" if " " in a else a for a in args)]).strip(),
            "Created": int(info["created_unix"]), "Ports": [],
            "Labels": config.get("Labels") or {}, "State": state,
            "Status": _status_text(info, state), "HostConfig": {
                "NetworkMode": host.get("NetworkMode") or "none"},
            "Mounts": self._all_mounts(info),
            # Not Docker's: what `ps` needs to print ages without parsing again.
            "CreatedUnix": info["created_unix"], "ExitCode": info["exit_code"],
        }

    def _all_mounts(self, info: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        """The container's mounts in Docker's ``Mounts`` shape: binds, tmpfs, volumes."""
        return [*_mounts(json.loads(info["host_config"])),
                *({"Type": "volume", "Name": point["Name"],
                   "Source": self.volumes.driver.path(point["Name"]),
                   "Destination": point["Destination"], "Driver": "local",
                   "Mode": point["Mode"], "RW": point["RW"], "Propagation": ""}
                  for point in _mount_points(info["config"]))]

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
        pid = info["pid"] if state in ("running", "restarting") else 0
        if state == "running":
            pid = self._live_pid(cid) or pid
        return {
            "Id": cid,
            "Created": info["created"],
            "Path": path,
            "Args": args,
            "State": {
                "Status": state,
                "Running": state in ("running", "restarting"),
                "Paused": False,
                "Restarting": state == "restarting",
                "OOMKilled": bool(info["oom_killed"]),
                "Dead": False,
                "Pid": pid,
                "ExitCode": info["exit_code"],
                "Error": info["error"],
                "StartedAt": info["started_at"] or ZERO_TIME,
                "FinishedAt": info["finished_at"] or ZERO_TIME,
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
            "HostConfig": {"NetworkMode": "none", "RestartPolicy": {"Name": "no",
                                                                    "MaximumRetryCount": 0},
                           "AutoRemove": False, "Privileged": False,
                           "ReadonlyRootfs": False, "Memory": 0, "NanoCpus": 0,
                           "PidsLimit": None, "CapAdd": None, "CapDrop": None,
                           "Binds": None, "Tmpfs": None, "LogConfig": {
                               "Type": "json-file", "Config": {}}, **host},
            "GraphDriver": {"Name": self.images.snapshots.driver,
                            "Data": {"MergedDir": self._rootfs(cid)}},
            "Mounts": self._all_mounts(info),
            "Config": shown,
            "NetworkSettings": {"Networks": {}, "Ports": {}, "IPAddress": "",
                                "SandboxKey": self._netns(cid) if pid else ""},
        }

    def _live_pid(self, cid: str) -> int:
        from dockyard.runtime.state import StateDir

        with contextlib.suppress(DockyardError, OSError):
            return StateDir(self.runtime_root, cid).read().pid
        return 0

    def state(self, id_or_name: str) -> str:
        """Docker's State.Status of the container."""
        info = self._observe(self._row(self.resolve(id_or_name)))
        if info is None:
            raise NotFound(f"No such container: {id_or_name}")
        return _state_name(info)

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

        state_dir = self._monitor_dir(cid)
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
        return "restarting" if info.get("restarting") else "running"
    if info["state"] == "creating":
        return "created"
    return str(info["state"])


def _status_text(info: Mapping[str, Any], state: str) -> str:
    """``Up 2 seconds``, ``Exited (0) 3 seconds ago``, ``Created``, as ``docker ps``."""
    from dockyard.cli.formatting import human_duration  # pure text, no I/O

    now = time.time()
    if state == "running":
        return "Up " + human_duration(now - parse_timestamp(info["started_at"]))
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


def all_labels_match(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    """Docker's ``label`` filter: every ``key`` or ``key=value`` holds."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _new_netns(path: str) -> None:
    """A new network namespace with its loopback up, kept by a bind mount on ``path``.

    A forked child unshares its network namespace (the parent's threads, if any, are
    not in the child), brings ``lo`` up there with the SIOCSIFFLAGS ioctl and binds
    its /proc/self/ns/net on ``path``: the child shares our mount namespace, so the
    bind is ours, and it keeps the namespace alive after the child exits.
    """
    with open(path, "a"):
        pass
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        code = 1
        try:
            os.close(r)
            sc.unshare(sc.CLONE_NEWNET)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                flags = _IFREQ.unpack(fcntl.ioctl(s, _SIOCGIFFLAGS,
                                                  _IFREQ.pack(b"lo", 0)))[1]
                fcntl.ioctl(s, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
            sc.mount("/proc/self/ns/net", path, None, sc.MS_BIND)
            code = 0
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(w, str(e).encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        message = os.read(r, 4096).decode(errors="replace")
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemFailure(f"cannot create the container's network namespace: {message}")

