"""The OCI runtime as a Python API: a bundle in, an isolated running process out.

``Runtime`` is what the engine calls in process and what ``dockyard-runtime`` wraps.
Creating a container and exec'ing into it (the forks, the namespaces, the root
filesystem) is in ``spawn``; this module holds the container's lifecycle once it
exists, and imports little, because ``start``, ``state``, ``kill`` and ``delete`` are
each a process of their own when containerd drives the runtime: they must not pay for
what only ``create`` needs (msgspec and the OCI models cost ~30 ms to import).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from typing import TYPE_CHECKING, NamedTuple

from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure
from dockyard.linux import cgroups
from dockyard.linux import syscalls as sc
from dockyard.runtime.state import ContainerRecord, StateDir, Status, proc_start_time

if TYPE_CHECKING:
    from dockyard.oci import runtime as oci

DEFAULT_ROOT = "/run/dockyard-runtime"


OCI_VERSION = "1.2.0"


NAMESPACES: dict[str, int] = {
    "user": sc.CLONE_NEWUSER, "mount": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET, "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}


class Stdio(NamedTuple):
    """File descriptors that become the container process's 0, 1 and 2."""

    stdin: int
    stdout: int
    stderr: int


def _exit_status(status: int) -> int:
    """Docker's convention: the exit code, or 128 + the signal that killed it."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Runtime:
    """An OCI runtime rooted at one state directory.

    Instances hold no state of their own beyond the root: every call reads the disk
    and the kernel, so several processes can drive the same containers.
    """

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
        self.root = os.fspath(root)
        self._seccomp_cache = os.path.join(self.root, ".seccomp-cache")
        # Processes this one created with reap=True, and the socket on which each
        # init reports a failed exec (None once start read it).
        self._children: dict[str, tuple[int, socket.socket | None]] = {}

    # -- create / start / exec --------------------------------------------------------

    def create(self, container_id: str, bundle: str | os.PathLike[str], *,
               console_socket: socket.socket | None = None, pid_file: str | None = None,
               no_pivot: bool = False, stdio: Stdio | None = None,
               reap: bool = False) -> int:
        """Create a container from ``bundle``; returns the pid of its waiting init.

        ``reap`` makes the calling process a child subreaper, so that it can ``wait``
        for the container; the caller must then reap it. ``console_socket`` is a
        connected unix socket that receives the pty master when the process asks for
        a terminal; ``stdio`` gives the process other fds than the caller's 0, 1, 2.
        """
        from dockyard.runtime import spawn

        return spawn.create(self, container_id, bundle, console_socket=console_socket,
                            pid_file=pid_file, no_pivot=no_pivot, stdio=stdio, reap=reap)

    def exec(self, container_id: str, process: oci.Process, *,
             console_socket: socket.socket | None = None, stdio: Stdio | None = None,
             pid_file: str | None = None, detach: bool = False) -> int:
        """Run another process in a running container.

        Returns its exit status, or its pid with ``detach``. The caller becomes a
        child subreaper so that it can wait for the process.
        """
        from dockyard.runtime import spawn

        return spawn.exec_process(self, container_id, process, console_socket=console_socket,
                                  stdio=stdio, pid_file=pid_file, detach=detach)

    def start(self, container_id: str) -> None:
        """Let a created container's init exec the user's program."""
        sd = StateDir(self.root, container_id)
        record = sd.read()
        status = self._status(sd, record)
        if status != Status.CREATED:
            raise Conflict(f"cannot start a container that is {status}")
        fd = os.open(sd.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # The init opens the fifo for writing once a reader exists, writes one byte
            # and execs; poll so that an init that died never blocks us.
            while True:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready and os.read(fd, 1):
                    break
                if proc_start_time(record.pid) != record.pid_start:
                    raise Conflict(f"container {container_id!r} init exited before start")
        finally:
            os.close(fd)
        os.unlink(sd.fifo)
        self._run_hooks("poststart", sd, record)
        child = self._children.get(container_id)
        if child is not None and child[1] is not None:
            # The init keeps its end of the sync socket until exec closes it: an error
            # message here means exec failed after all.
            from dockyard.runtime.spawn import confirm_exec

            self._children[container_id] = (child[0], None)
            confirm_exec(child[1])

    # -- queries ----------------------------------------------------------------------

    def state(self, container_id: str) -> oci.State:
        """The OCI state of a container."""
        from dockyard.oci import runtime as oci

        sd = StateDir(self.root, container_id)
        record = sd.read()
        status = self._status(sd, record)
        return oci.State(oci_version=OCI_VERSION, id=record.id, status=str(status),
                         pid=record.pid if status != Status.STOPPED else 0,
                         bundle=record.bundle, annotations=record.annotations or None)

    def list(self) -> list[tuple[ContainerRecord, Status]]:
        """Every container under the root, with its status."""
        found: list[tuple[ContainerRecord, Status]] = []
        if not os.path.isdir(self.root):
            return found
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue  # the runtime's own files, never a container
            sd = StateDir(self.root, entry.name)
            try:
                record = sd.read()
            except DockyardError:
                continue
            found.append((record, self._status(sd, record)))
        return found

    def config(self, container_id: str) -> bytes:
        """The config.json the container was created from."""
        return StateDir(self.root, container_id).read().config

    def pids(self, container_id: str) -> list[int]:
        """The host pids of every process of the container."""
        record = StateDir(self.root, container_id).read()
        return cgroups.open_cgroup(record.cgroup_path).pids()

    def status(self, container_id: str) -> Status:
        """The container's status, read off the kernel."""
        sd = StateDir(self.root, container_id)
        return self._status(sd, sd.read())

    def _status(self, sd: StateDir, record: ContainerRecord) -> Status:
        if record.creating:
            return Status.CREATING
        if proc_start_time(record.pid) != record.pid_start:
            return Status.STOPPED
        if os.path.exists(sd.fifo):
            return Status.CREATED
        cg = cgroups.open_cgroup(record.cgroup_path)
        if cg.exists() and cg.is_frozen():
            return Status.PAUSED
        return Status.RUNNING

    def _run_hooks(self, kind: str, sd: StateDir, record: ContainerRecord,
                   status: Status | None = None) -> None:
        """Run the container's ``poststart`` or ``poststop`` hooks, if it has any."""
        # Most configs have no hooks: a look at the raw bytes spares parsing them.
        if b'"hooks"' not in record.config:
            return
        from dockyard.oci import runtime as oci
        from dockyard.runtime.hooks import run_hooks

        hooks = oci.load_spec(record.config).hooks
        chosen = getattr(hooks, kind) if hooks is not None else None
        if not chosen:
            return
        state = oci.State(oci_version=OCI_VERSION, id=record.id,
                          status=str(status or self._status(sd, record)), pid=record.pid,
                          bundle=record.bundle, annotations=record.annotations or None)
        run_hooks(kind, chosen, oci.dump(state))

    # -- signals, pause, update, wait, delete -----------------------------------------

    def kill(self, container_id: str, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        """Send ``sig`` to the init, or to every process of the container with ``all``."""
        sd = StateDir(self.root, container_id)
        record = sd.read()
        status = self._status(sd, record)
        cg = cgroups.open_cgroup(record.cgroup_path)
        if all:
            if cg.exists():
                cg.kill(sig)
                if status == Status.PAUSED and sig == signal.SIGKILL:
                    cg.thaw()
            return
        if status in (Status.STOPPED, Status.CREATING):
            raise Conflict(f"container {container_id!r} is not running")
        os.kill(record.pid, sig)
        if status == Status.PAUSED and sig == signal.SIGKILL:
            cg.thaw()

    def pause(self, container_id: str) -> None:
        """Freeze every process of a running container."""
        self._running(container_id, "pause").freeze()

    def resume(self, container_id: str) -> None:
        """Thaw a paused container."""
        sd = StateDir(self.root, container_id)
        record = sd.read()
        if self._status(sd, record) != Status.PAUSED:
            raise Conflict(f"container {container_id!r} is not paused")
        cgroups.open_cgroup(record.cgroup_path).thaw()

    def update(self, container_id: str, resources: oci.LinuxResources) -> None:
        """Change the cgroup limits of a live container."""
        from dockyard.runtime.resources import apply_resources

        sd = StateDir(self.root, container_id)
        record = sd.read()
        if self._status(sd, record) in (Status.STOPPED, Status.CREATING):
            raise Conflict(f"container {container_id!r} is not running")
        apply_resources(cgroups.open_cgroup(record.cgroup_path), resources)

    def _running(self, container_id: str, verb: str) -> cgroups.Cgroup:
        sd = StateDir(self.root, container_id)
        record = sd.read()
        status = self._status(sd, record)
        if status not in (Status.RUNNING, Status.CREATED):
            raise Conflict(f"cannot {verb} container {container_id!r}: it is {status}")
        return cgroups.open_cgroup(record.cgroup_path)

    def wait(self, container_id: str) -> int:
        """Wait for a container this process created with ``reap=True``; its exit status."""
        child = self._children.pop(container_id, None)
        if child is None:
            raise InvalidArgument(f"container {container_id!r} was not created by this "
                                  "process with reap=True")
        pid, sock = child
        if sock is not None:
            sock.close()
        try:
            return self.reap(pid)
        except ChildProcessError:
            raise SystemFailure(f"container {container_id!r}: init {pid} was reaped "
                                "elsewhere") from None

    @staticmethod
    def reap(pid: int) -> int:
        """Wait for a process of ours (an init or an exec'd one); its exit status."""
        while True:
            try:
                return _exit_status(os.waitpid(pid, 0)[1])
            except InterruptedError:
                continue

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove a stopped (or, with ``force``, any) container and all it left."""
        sd = StateDir(self.root, container_id)
        try:
            record = sd.read()
        except NotFound:
            if force and sd.exists():
                sd.remove()  # a create killed before it wrote its first record
                return
            raise
        status = self._status(sd, record)
        cg = cgroups.open_cgroup(record.cgroup_path)
        if status in (Status.RUNNING, Status.PAUSED, Status.CREATING) and not force:
            hint = " (use --force if its create was interrupted)" \
                if status == Status.CREATING else ""
            raise Conflict(f"cannot delete container {container_id!r} that is not stopped: "
                           f"{status}{hint}")
        if status != Status.STOPPED and record.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
        if cg.exists():
            cg.kill(signal.SIGKILL)
            if status == Status.PAUSED:
                cg.thaw()
        _wait_gone(record.pid if status != Status.STOPPED else 0, cg)
        self._children.pop(container_id, None)
        if cg.exists():
            _destroy_cgroup(cg, record.cgroup_path)
        try:
            self._run_hooks("poststop", sd, record, Status.STOPPED)
        finally:
            sd.remove()


_DEFAULT_CGROUP_PARENT = "/dockyard"


def _destroy_cgroup(cg: cgroups.Cgroup, path: str) -> None:
    """Remove the container's cgroup, and the default parent once no container uses it."""
    cg.destroy()
    if os.path.dirname(path) == _DEFAULT_CGROUP_PARENT:
        remove_unused_parent()


def remove_unused_parent() -> None:
    """Remove the default cgroup parent (``/dockyard``) of every hierarchy where no
    container lives under it any more: whichever runtime (ours, crun, runc) deleted the
    last one."""
    for parent in cgroups.open_cgroup(_DEFAULT_CGROUP_PARENT).paths().values():
        # Fails while another container lives under it, which is what we want.
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def _wait_gone(pid: int, cg: cgroups.Cgroup, timeout: float = 10.0) -> None:
    """Wait until the init and every process of the cgroup are gone (reaping our own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        alive = pid and proc_start_time(pid) is not None
        if not alive and not (cg.exists() and cg.pids()):
            return
        time.sleep(0.005)
