"""Creating containers and exec'ing into them: the forks and what the children do.

Creating a container forks twice. The runtime (R) forks a child (S, "setup") that
enters or creates the namespaces; a new pid namespace only applies to the children
of the process that unshared it, so S forks the container's init (I), which is PID 1
inside, and exits. I is reparented to the nearest subreaper: R when R asked to wait
for it (``reap=True``), else whoever runs the runtime (containerd's shim, conmon).

    R (runtime)                     S (setup)                    I (init, PID 1)
    create cgroup, apply limits
    fork ------------------------>  [blocked on "go"]
    add S to cgroup; "go" ------->  setns(path namespaces)
                                    unshare(user)
             <------------------- "userns"
    write uid_map/gid_map; "ok" -->  setresuid(0)
                                    unshare(mnt, pid, net, ...)
                                    fork ----------------------> setsid
             <------------------- "pid N"; exit                 mounts, devices
    reap S                                                      [hooks? R runs
             <------------------------------------------------ createRuntime]
                                                                pivot_root, masks
                                                                hostname, sysctl,
                                                                user, caps, lookup
             <------------------------------------------------ "ready"
    write state.json, pid file                                  open exec.fifo (blocks)
    (create returns)
    start: open exec.fifo, read ----------------------------->  [unblocked] seccomp,
    unlink fifo, poststart hooks                                execve(args)

Every message travels on one SOCK_SEQPACKET pair: a child that fails sends
"error <code> <message>" and exits, and R undoes everything it made. The children
are never dumpable while they run the runtime's code inside the container's
namespaces, and every fd but stdio and the sync socket is close-on-exec, so nothing
of the host leaks into the container.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import termios
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import msgspec

from dockyard.errors import (
    CannotExecute,
    CommandNotFound,
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SystemFailure,
)
from dockyard.linux import cgroups
from dockyard.linux import syscalls as sc
from dockyard.oci import runtime as oci
from dockyard.runtime import process as proc
from dockyard.runtime import rootfs
from dockyard.runtime.container import (
    _DEFAULT_CGROUP_PARENT,
    NAMESPACES,
    OCI_VERSION,
    Stdio,
    _destroy_cgroup,
    _wait_gone,
)
from dockyard.runtime.hooks import run_hooks
from dockyard.runtime.resources import apply_resources
from dockyard.runtime.state import (
    ContainerRecord,
    StateDir,
    Status,
    now_rfc3339,
    proc_start_time,
)

if TYPE_CHECKING:
    from dockyard.runtime.container import Runtime

# /proc/PID/ns names, in the order runc joins them: user first (it owns the others),
# mount last but one (it changes the root), cgroup after the process joined its cgroup.
_NS_FILES = (("user", "user"), ("ipc", "ipc"), ("uts", "uts"), ("network", "net"),
             ("pid", "pid"), ("mount", "mnt"), ("cgroup", "cgroup"), ("time", "time"))


_ERROR_TYPES: dict[int, type[DockyardError]] = {126: CannotExecute, 127: CommandNotFound}


class _Sync:
    """R's end of the SOCK_SEQPACKET pair to a child, with a deadline."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        self.sock = sock
        self.what = what

    def recv(self, timeout: float = 30.0) -> bytes:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise SystemFailure(f"{self.what}: the container's init did not answer in "
                                f"{timeout:.0f}s")
        msg = self.sock.recv(65536)
        if msg.startswith(b"error "):
            _, code, text = msg.split(b" ", 2)
            raise _ERROR_TYPES.get(int(code), SystemFailure)(text.decode(errors="replace"))
        return msg

    def expect(self, prefix: bytes) -> bytes:
        msg = self.recv()
        if not msg.startswith(prefix):
            detail = "exited during setup" if not msg else f"said {msg[:40]!r}"
            raise SystemFailure(f"{self.what}: the container's init {detail}")
        return msg[len(prefix):]

    def send(self, msg: bytes) -> None:
        self.sock.send(msg)


def _child(sock: socket.socket, body: Callable[[], object]) -> NoReturn:
    """Run ``body`` in a forked child; never return into the parent's stack.

    Whatever the child imports must be imported before it changes its root: after
    pivot_root the host's Python library is out of reach.
    """
    debug = bool(os.environ.get("DOCKYARD_DEBUG"))
    if debug:
        import traceback
    code = 1
    try:
        body()
        code = 0
    except BaseException as e:  # every failure, even SystemExit, must reach R
        exit_code = e.exit_code if isinstance(e, DockyardError) else 1
        text = str(e) if isinstance(e, DockyardError) else _describe(e)
        if debug:
            traceback.print_exc()
        with contextlib.suppress(OSError):
            sock.send(f"error {exit_code} {text}".encode())
        code = exit_code
    finally:
        os._exit(code)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        parts = [e.strerror or str(e)]
        if e.filename:
            parts.insert(0, str(e.filename))
        return ": ".join(parts)
    return f"{type(e).__name__}: {e}"


def _seqpacket() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return a, b


class _Plan(msgspec.Struct, kw_only=True):
    """Everything the children need, computed before they are forked."""

    spec: oci.Spec
    bundle: str
    rootfs: str
    process: proc.PreparedProcess
    new_ns: int
    join_ns: list[tuple[str, int]]
    mounts: list[rootfs.MountPlan]
    cgroup_mounts: list[rootfs.CgroupMount]
    no_pivot: bool


def create(rt: Runtime, container_id: str, bundle: str | os.PathLike[str], *,
           console_socket: socket.socket | None = None, pid_file: str | None = None,
           no_pivot: bool = False, stdio: Stdio | None = None,
           reap: bool = False) -> int:
    """Create a container from ``bundle``; returns the pid of its waiting init.

    ``reap`` makes the calling process a child subreaper, so that it can ``wait``
    for the container; the caller must then reap it. ``console_socket`` is a
    connected unix socket that receives the pty master when the process asks for
    a terminal.
    """
    sd = StateDir(rt.root, container_id)
    bundle = os.path.abspath(bundle)
    spec = _load_bundle(bundle)
    cgroup_path = _cgroups_path(spec, container_id)
    cgroup = cgroups.open_cgroup(cgroup_path)
    plan = _plan(rt, spec, bundle, cgroup, no_pivot)
    try:
        if plan.process.terminal and console_socket is None:
            raise InvalidArgument("process.terminal is true but no console socket was given")
        return _create(rt, sd, spec, plan, cgroup, cgroup_path, console_socket=console_socket,
                       pid_file=pid_file, stdio=stdio, reap=reap)
    finally:
        # The children have joined (or never will) the namespaces opened by path.
        for _, fd in plan.join_ns:
            os.close(fd)


def _create(rt: Runtime, sd: StateDir, spec: oci.Spec, plan: _Plan, cgroup: cgroups.Cgroup,
            cgroup_path: str, *, console_socket: socket.socket | None, pid_file: str | None,
            stdio: Stdio | None, reap: bool) -> int:
    container_id = sd.id
    sd.claim()
    record = ContainerRecord(
        id=container_id, creating=True, pid=0, pid_start=0, bundle=plan.bundle,
        rootfs=plan.rootfs, created=now_rfc3339(), cgroup_path=cgroup_path,
        config=oci.dump(spec), annotations=spec.annotations or {})
    made_cgroup = False
    pid = 0
    try:
        sd.write(record)
        os.mkfifo(sd.fifo)
        # The init opens it for writing after it became the process's user; the
        # umask must not take the write bit of the others away.
        os.chmod(sd.fifo, 0o622)
        if not cgroup.exists():
            cgroup.create()
            made_cgroup = True
        resources = _with_default_devices(spec)
        if resources is not None:
            apply_resources(cgroup, resources)
        if reap:
            sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        pid, sync = _spawn_init(sd, record, plan, cgroup, console_socket, stdio)
        record.creating = False
        sd.write(record)
        if pid_file:
            _write_pid_file(pid_file, pid)
    except BaseException:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, cgroup)
        if made_cgroup:
            with contextlib.suppress(DockyardError):
                _destroy_cgroup(cgroup, cgroup_path)
        sd.remove()
        raise
    if reap:
        rt._children[container_id] = (pid, sync)
    else:
        sync.close()
    return pid


def exec_process(rt: Runtime, container_id: str, process: oci.Process, *,
         console_socket: socket.socket | None = None, stdio: Stdio | None = None,
         pid_file: str | None = None, detach: bool = False) -> int:
    """Run another process in a running container.

    Returns its exit status, or its pid with ``detach``. The caller becomes a
    child subreaper so that it can wait for the process.
    """
    sd = StateDir(rt.root, container_id)
    record = sd.read()
    status = rt._status(sd, record)
    if status not in (Status.RUNNING, Status.CREATED):
        raise Conflict(f"cannot exec in a container that is {status}")
    spec = oci.load_spec(record.config)
    linux = spec.linux or oci.Linux()
    prepared = proc.prepare(process, linux.seccomp, rt._seccomp_cache)
    if prepared.terminal and console_socket is None:
        raise InvalidArgument("process.terminal is true but no console socket was given")
    namespaces = {ns.type for ns in linux.namespaces or ()}
    join = [(t, _open_ns(f"/proc/{record.pid}/ns/{f}")) for t, f in _NS_FILES
            if t in namespaces and _differs(record.pid, f)]
    cg = cgroups.open_cgroup(record.cgroup_path)
    mine, theirs = _seqpacket()
    sync = _Sync(mine, "exec")
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    try:
        setup_pid = os.fork()
        if setup_pid == 0:
            mine.close()
            _child(theirs, lambda: _exec_setup(theirs, join, prepared, console_socket,
                                               stdio))
        theirs.close()
        try:
            cg.add(setup_pid)
            sync.send(b"go")
            pid = int(sync.expect(b"pid "))
        finally:
            _reap(setup_pid)
        # EOF means the exec succeeded (the socket is close-on-exec); an error
        # message that it did not.
        try:
            sync.recv(timeout=30)
        except DockyardError:
            _reap(pid)
            raise
    finally:
        mine.close()
        for _, fd in join:
            os.close(fd)
    if pid_file:
        _write_pid_file(pid_file, pid)
    return pid if detach else rt.reap(pid)


def prime_cgroup_moves() -> None:
    """Start the wait of a cgroup move coming in the next few milliseconds, now, in the
    background (``start_monitor`` calls it before it forks the monitor, the engine's
    ``exec`` before it looks the container up).

    Every move of a process between cgroups takes one global lock for writing
    (``cgroup_threadgroup_rwsem``, a per-cpu rwsem). Its first writer after a quiet
    spell waits for an RCU grace period (``rcu_sync_enter``: ~10 ms on this machine,
    whatever the move); a writer that comes while the lock is still in its writers'
    mode (held, or released less than a grace period ago) passes at once. A thread
    moving this process into the cgroup it is already in (a no-op: "0" is the writer
    itself) pays that wait while the create or exec prepares, forks and joins the
    namespaces, and the move of the container's process that follows finds the fast
    path. Best effort: where the file cannot be written, the move just pays the wait.
    """
    import threading

    own = cgroups.own_cgroups()
    for mount in cgroups.cgroup_mounts():
        key = mount.controllers[0] if mount.controllers else ""
        if key in own:
            procs = os.path.join(mount.dir_of(own[key]), "cgroup.procs")
            break
    else:
        return
    try:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return

    def move() -> None:
        try:
            os.write(fd, b"0")
        except OSError:
            pass
        finally:
            os.close(fd)

    # A daemon: a forked child does not inherit it, and nobody waits for it.
    threading.Thread(target=move, name="cgroup-prime", daemon=True).start()


def _load_bundle(bundle: str) -> oci.Spec:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise NotFound(f"bundle {bundle}: config.json does not exist") from None
    except NotADirectoryError:
        raise NotFound(f"bundle {bundle} is not a directory") from None
    spec = oci.load_spec(data)
    oci.validate_spec(spec)
    return spec


def _plan(rt: Runtime, spec: oci.Spec, bundle: str, cgroup: cgroups.Cgroup,
          no_pivot: bool) -> _Plan:
    if spec.root is None:
        raise InvalidArgument("config.json has no root")
    if spec.process is None:
        raise InvalidArgument("config.json has no process")
    root = spec.root.path
    rootfs_path = os.path.realpath(root if os.path.isabs(root) else
                                   os.path.join(bundle, root))
    if not os.path.isdir(rootfs_path):
        raise NotFound(f"rootfs {rootfs_path} does not exist")
    linux = spec.linux or oci.Linux()
    new_ns = 0
    join_paths: list[tuple[str, str]] = []
    for ns in linux.namespaces or ():
        if ns.type not in NAMESPACES:
            raise InvalidArgument(f"unknown namespace type {ns.type!r}")
        if ns.path:
            join_paths.append((ns.type, ns.path))
        else:
            new_ns |= NAMESPACES[ns.type]
    if not new_ns & sc.CLONE_NEWNS and not any(t == "mount" for t, _ in join_paths):
        raise InvalidArgument("the container needs a mount namespace of its own")
    if (linux.uid_mappings or linux.gid_mappings) and not new_ns & sc.CLONE_NEWUSER:
        raise InvalidArgument("uid/gid mappings need a new user namespace")
    if new_ns & sc.CLONE_NEWUSER and not (linux.uid_mappings and linux.gid_mappings):
        raise InvalidArgument("a new user namespace needs uidMappings and gidMappings")
    seccomp_spec = linux.seccomp
    prepared = proc.prepare(spec.process, seccomp_spec, rt._seccomp_cache)
    mounts = [rootfs.parse_mount(m, bundle) for m in spec.mounts or ()]
    layout = _cgroup_layout(cgroup)
    # Opened last, so that no check above can fail with them open.
    join_ns: list[tuple[str, int]] = []
    try:
        for kind, path in join_paths:
            join_ns.append((kind, _open_ns(path)))
    except BaseException:
        for _, fd in join_ns:
            os.close(fd)
        raise
    return _Plan(spec=spec, bundle=bundle, rootfs=rootfs_path, process=prepared,
                 new_ns=new_ns, join_ns=join_ns, mounts=mounts,
                 cgroup_mounts=layout, no_pivot=no_pivot)


def _spawn_init(sd: StateDir, record: ContainerRecord, plan: _Plan,
                cgroup: cgroups.Cgroup, console: socket.socket | None,
                stdio: Stdio | None) -> tuple[int, socket.socket]:
    mine, theirs = _seqpacket()
    sync = _Sync(mine, "create")
    # An O_PATH fd of the fifo, reopened by the init after pivot_root through
    # /proc/self/fd: the host path is no longer reachable then.
    fifo_fd = os.open(sd.fifo, os.O_PATH | os.O_CLOEXEC)
    try:
        setup_pid = os.fork()
        if setup_pid == 0:
            mine.close()
            _child(theirs, lambda: _setup(theirs, plan, fifo_fd, console, stdio))
        theirs.close()
        try:
            msg = sync.recv()
            if msg == b"userns":
                linux = plan.spec.linux or oci.Linux()
                _write_id_maps(setup_pid, linux.uid_mappings or [],
                               linux.gid_mappings or [])
                sync.send(b"ok")
                msg = sync.recv()
            if not msg.startswith(b"pid "):
                raise SystemFailure("create: the setup process exited during setup")
            pid = int(msg[4:])
            # Moving a process between cgroups waits for an RCU grace period (~10 ms
            # here): the init builds its mounts meanwhile and waits for "cgroup" only
            # before it needs to be inside (see _init).
            cgroup.add(pid)
            sync.send(b"cgroup")
            record.pid = pid
            record.pid_start = proc_start_time(pid) or 0
            sd.write(record)
        finally:
            _reap(setup_pid)
        msg = sync.recv()
        hooks = plan.spec.hooks
        if msg == b"hooks":
            record_state = oci.dump(oci.State(
                oci_version=OCI_VERSION, id=record.id, status="created", pid=pid,
                bundle=plan.bundle, annotations=plan.spec.annotations))
            if hooks is not None:
                run_hooks("prestart", hooks.prestart, record_state)
                run_hooks("createRuntime", hooks.create_runtime, record_state)
            sync.send(b"ok " + record_state)
            msg = sync.recv()
        if msg != b"ready":
            raise SystemFailure(f"create: unexpected message {msg[:40]!r} from init")
        return pid, mine
    except BaseException:
        mine.close()
        raise
    finally:
        os.close(fifo_fd)


def confirm_exec(sock: socket.socket) -> None:
    """Read the init's last word after start: EOF when its execve succeeded."""
    try:
        _Sync(sock, "start").recv(timeout=10)
    finally:
        sock.close()


def _cgroups_path(spec: oci.Spec, container_id: str) -> str:
    path = spec.linux.cgroups_path if spec.linux else None
    return path or f"{_DEFAULT_CGROUP_PARENT}/{container_id}"


# What every container may use whatever its rules say (runc's AllowedDevices): mknod
# of any node, the standard devices, its ptys and its console.
_ALWAYS_ALLOWED = (
    ("c", -1, -1, "m"), ("b", -1, -1, "m"), ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"),
    ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"),
    ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, -1, "rwm"),
)


def _with_default_devices(spec: oci.Spec) -> oci.LinuxResources | None:
    """The spec's resources with the devices every container needs allowed after its rules.

    Rules are evaluated last-match-wins, so allowing these after a "deny all" keeps
    /dev/null and the pty working, as every runtime does.
    """
    linux = spec.linux
    if linux is None or linux.resources is None:
        return None
    resources = linux.resources
    if not resources.devices:
        return resources
    extra = [oci.LinuxDeviceCgroup(allow=True, type=t, major=major, minor=minor, access=access)
             for t, major, minor, access in _ALWAYS_ALLOWED]
    extra += [oci.LinuxDeviceCgroup(allow=True, type="b" if d.type == "b" else "c",
                                    major=d.major, minor=d.minor, access="rwm")
              for d in linux.devices or () if d.type in ("b", "c", "u")]
    return msgspec.structs.replace(resources, devices=[*resources.devices, *extra])


def _cgroup_layout(cg: cgroups.Cgroup) -> list[rootfs.CgroupMount]:
    """Each cgroup hierarchy of the host, for a ``cgroup`` mount inside the container."""
    paths = cg.paths()
    mounts = [m for m in cgroups.cgroup_mounts() if m.mountpoint.startswith("/sys/fs/cgroup")]
    v1 = [m for m in mounts if m.fstype != "cgroup2"]
    if not v1:
        return [rootfs.CgroupMount("", "cgroup2", next(iter(paths.values())))]
    # A hybrid host's cgroup2 tree carries no controller: like runc, containers see
    # only the v1 hierarchies.
    return [rootfs.CgroupMount(os.path.basename(m.mountpoint), ",".join(m.controllers),
                               paths[m.controllers[0]]) for m in v1]


def _open_ns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"namespace {path} does not exist") from None


def _differs(pid: int, name: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino
    except FileNotFoundError:
        return False


def _write_id_maps(pid: int, uids: Sequence[oci.LinuxIDMapping],
                   gids: Sequence[oci.LinuxIDMapping]) -> None:
    for name, maps in (("uid_map", uids), ("gid_map", gids)):
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise InvalidArgument(f"cannot write {name} {text.strip()!r}: {e.strerror}") from None


def _write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _enter(sync: socket.socket, wait_for: bytes | None) -> None:
    """First steps of every child: hide from ptrace and /proc/PID/exe, wait for R."""
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    if wait_for is not None and sync.recv(16) != wait_for:
        raise SystemFailure("the runtime went away during setup")


def _close_fds(keep: Sequence[int]) -> None:
    """Mark every fd above stdio close-on-exec but the ones kept open through exec."""
    sc.close_range(3, flags=sc.CLOSE_RANGE_CLOEXEC)
    for fd in keep:
        os.set_inheritable(fd, True)


def _setup(sync: socket.socket, plan: _Plan, fifo_fd: int, console: socket.socket | None,
           stdio: Stdio | None) -> None:
    """S: join and create namespaces, then fork the init."""
    _enter(sync, None)
    for ns_type, fd in sorted(plan.join_ns, key=lambda t: t[0] != "user"):
        sc.setns(fd, NAMESPACES[ns_type])
    if plan.new_ns & sc.CLONE_NEWUSER:
        sc.unshare(sc.CLONE_NEWUSER)
        sync.send(b"userns")
        if sync.recv(16) != b"ok":
            raise SystemFailure("the runtime went away while mapping ids")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    # The cgroup namespace is the init's to create, once it is in its cgroup.
    sc.unshare(plan.new_ns & ~(sc.CLONE_NEWUSER | sc.CLONE_NEWCGROUP))
    offsets = (plan.spec.linux.time_offsets if plan.spec.linux else None) or {}
    if offsets and plan.new_ns & sc.CLONE_NEWTIME:
        # Writable only until the first process enters the new time namespace: the
        # init forked below.
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(f"{clock} {o.secs or 0} {o.nanosecs or 0}\n"
                            for clock, o in offsets.items()))
    pid = os.fork()
    if pid == 0:
        _child(sync, lambda: _init(sync, plan, fifo_fd, console, stdio))
    sync.send(f"pid {pid}".encode())


def _init(sync: socket.socket, plan: _Plan, fifo_fd: int, console: socket.socket | None,
          stdio: Stdio | None) -> None:
    """I: build the root filesystem, become the process, wait for start, exec."""
    os.setsid()
    spec = plan.spec
    linux = spec.linux or oci.Linux()
    userns = bool(plan.new_ns & sc.CLONE_NEWUSER) or any(t == "user" for t, _ in plan.join_ns)
    if stdio is not None:
        os.dup2(stdio.stdin, 0)
        os.dup2(stdio.stdout, 1)
        os.dup2(stdio.stderr, 2)
    propagation = rootfs.root_propagation(linux.rootfs_propagation)
    if plan.new_ns & sc.CLONE_NEWNS:
        sc.mount(None, "/", None, propagation)
    # The rootfs must be a mount point of its own for pivot_root.
    try:
        sc.mount(plan.rootfs, plan.rootfs, None, sc.MS_BIND | sc.MS_REC)
    except PermissionError:
        if not userns:
            raise
        raise PermissionDenied(
            f"rootfs {plan.rootfs} is not reachable by the container's root user: every "
            "directory above it must be searchable by the mapped uid") from None
    if propagation & sc.MS_SHARED:
        # pivot_root refuses a shared new root or a shared parent of it; the wanted
        # propagation is given to the new root once it is "/".
        rootfs.make_private(plan.rootfs)
    root_fd = os.open(plan.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    cgroupns = bool(plan.new_ns & sc.CLONE_NEWCGROUP) or any(t == "cgroup" for t, _ in
                                                             plan.join_ns)
    joined = False

    def join_cgroup() -> None:
        # R moves us into the container's cgroup while we mount; a cgroup namespace
        # made before that would be rooted in the wrong cgroup.
        nonlocal joined
        if joined:
            return
        if sync.recv(16) != b"cgroup":
            raise SystemFailure("the runtime went away during setup")
        if plan.new_ns & sc.CLONE_NEWCGROUP:
            sc.unshare(sc.CLONE_NEWCGROUP)
        joined = True

    for m in plan.mounts:
        if m.type in ("cgroup", "cgroup2"):
            join_cgroup()
        rootfs.mount_one(root_fd, m, plan.cgroup_mounts, cgroupns)
    if any(m.destination == "/dev" and not m.is_bind for m in plan.mounts):
        rootfs.create_devices(root_fd, linux.devices or [], bind=userns)
    elif linux.devices:
        rootfs.create_devices(root_fd, linux.devices, bind=userns)
    os.close(root_fd)
    join_cgroup()
    hooks = spec.hooks
    state = b""
    if hooks and (hooks.prestart or hooks.create_runtime or hooks.create_container or
                  hooks.start_container):
        import subprocess  # noqa: F401 - startContainer hooks run after pivot_root

        sync.send(b"hooks")
        answer = sync.recv(65536)
        if not answer.startswith(b"ok "):
            raise SystemFailure("the runtime went away while running hooks")
        state = answer[3:]
        run_hooks("createContainer", hooks.create_container, state)
    if plan.no_pivot:
        rootfs.move_root(plan.rootfs)
    else:
        rootfs.pivot(plan.rootfs)
    if propagation & sc.MS_SHARED:
        sc.mount(None, "/", None, propagation)
    if plan.process.terminal and console is not None:
        _setup_console(console, plan.process.console_size)
    if spec.hostname is not None and plan.new_ns & sc.CLONE_NEWUTS:
        socket.sethostname(spec.hostname)
    if spec.domainname is not None and plan.new_ns & sc.CLONE_NEWUTS:
        sc.setdomainname(spec.domainname)
    # Before /proc/sys becomes read-only.
    for key, value in (linux.sysctl or {}).items():
        _write_sysctl(key, value)
    if linux.readonly_paths:
        rootfs.readonly_paths(linux.readonly_paths)
    if linux.masked_paths:
        rootfs.mask_paths(linux.masked_paths)
    if spec.root is not None and spec.root.readonly:
        rootfs.readonly_root()
    prepared = plan.process
    os.makedirs(prepared.cwd, exist_ok=True)
    proc.set_limits(prepared)
    proc.become_user(prepared)
    path = proc.lookup(prepared)
    proc.refuse_runtime_binary(prepared, path)
    _close_fds([])
    sync.send(b"ready")
    # Blocks until `start` opens the fifo for reading.
    with open(sc.fd_path(fifo_fd), "wb", buffering=0) as fifo:
        fifo.write(b"0")
    os.close(fifo_fd)
    if hooks and hooks.start_container:
        run_hooks("startContainer", hooks.start_container, state)
    proc.execute(prepared, path)


def _setup_console(console: socket.socket, size: tuple[int, int] | None) -> None:
    """Open a pty in the container's devpts, hand the master over, and use the slave."""
    master, slave = os.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, sc.pack_winsize(*size))
    socket.send_fds(console, [b"/dev/ptmx"], [master])
    os.close(master)
    console.close()
    with contextlib.suppress(FileNotFoundError):
        sc.mount(os.ttyname(slave), "/dev/console", None, sc.MS_BIND)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if slave > 2:
        os.close(slave)


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    if ".." in key.split("."):
        raise InvalidArgument(f"invalid sysctl {key!r}")
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        raise InvalidArgument(f"sysctl {key!r} does not exist") from None
    except OSError as e:
        raise InvalidArgument(f"cannot set sysctl {key}={value}: {e.strerror}") from None


def _exec_setup(sync: socket.socket, join: Sequence[tuple[str, int]],
                prepared: proc.PreparedProcess, console: socket.socket | None,
                stdio: Stdio | None) -> None:
    """S for exec: join the container's namespaces, then fork the process."""
    _enter(sync, b"go")
    for ns_type, fd in join:
        sc.setns(fd, NAMESPACES[ns_type])
    pid = os.fork()
    if pid == 0:
        _child(sync, lambda: _exec_process(sync, prepared, console, stdio))
    sync.send(f"pid {pid}".encode())


def _exec_process(sync: socket.socket, prepared: proc.PreparedProcess,
                  console: socket.socket | None, stdio: Stdio | None) -> None:
    os.setsid()
    if stdio is not None:
        os.dup2(stdio.stdin, 0)
        os.dup2(stdio.stdout, 1)
        os.dup2(stdio.stderr, 2)
    if prepared.terminal and console is not None:
        _setup_console(console, prepared.console_size)
    proc.set_limits(prepared)
    proc.become_user(prepared)
    path = proc.lookup(prepared)
    proc.refuse_runtime_binary(prepared, path)
    _close_fds([])
    # The sync socket is close-on-exec: the runtime reads EOF when execve succeeded.
    proc.execute(prepared, path)
