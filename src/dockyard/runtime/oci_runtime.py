"""The OCI runtime a container runs under, behind one interface: dockyard's own, called
in process, or another runc-compatible binary (crun, runc) driven through its command
line, as conmon and containerd's shim drive them (Docker's ``--runtime``).

``RuntimeCommand`` offers what the engine and the monitor need of a runtime once a
bundle exists: create (the caller is a child subreaper, and the init its child once
``create`` returned), start, kill, pause, resume, update, exec, delete, and the queries
(init pid, cgroup, processes, paused or not, the config it was created from). Every
call reads the runtime's state afresh, so that several processes (the engine's
commands, the monitor, its watchdog) drive the same container.

``open_runtime(name, root)`` is the one place that maps a name to an implementation:
``dockyard`` (the in-process ``Runtime``), or a binary found on the PATH, run as::

    NAME --root ROOT --log ROOT/.VERB-XXXX.log --log-format json VERB [options] ID

The binary's errors are read back from that log (its stderr would be the container's:
the runtime passes its own stdio to the process it creates), and mapped to dockyard's
errors: a command not found is CommandNotFound (127), not executable CannotExecute
(126), an unknown container NotFound, anything else SystemFailure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from dockyard.errors import (
    CannotExecute,
    CommandNotFound,
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    SystemFailure,
)
from dockyard.linux import cgroups
from dockyard.linux import syscalls as sc
from dockyard.runtime.container import OCI_VERSION, Runtime, Stdio, remove_unused_parent
from dockyard.runtime.state import StateDir, Status

if TYPE_CHECKING:
    from dockyard.oci import runtime as oci

__all__ = ["BUILTIN", "EXTERNAL", "External", "InProcess", "RuntimeCommand", "open_runtime"]

#: dockyard's own runtime, the default.
BUILTIN = "dockyard"
#: The other runtimes dockyard knows how to drive (any runc-compatible binary would do,
#: but these are the ones tested).
EXTERNAL = ("crun", "runc")

_ROOT_ACCESS = 0o700
_CRUN_NOT_FOUND = re.compile(r"executable file `(.*?)` not found in \$PATH(: No such file "
                             r"or directory)?")


class RuntimeCommand:
    """What the engine and the monitor ask of an OCI runtime (see the module docstring).

    ``root`` is the runtime's state directory, one per runtime under the run root.
    """

    name: str
    #: The runtime-spec version of the bundles it is given: one it accepts.
    oci_version: str = OCI_VERSION

    def __init__(self, root: str) -> None:
        self.root = root

    def create(self, container_id: str, bundle: str, *, stdio: Stdio | None = None,
               console_socket: socket.socket | None = None) -> int:
        """Create the container; the pid of its waiting init, a child of the caller (a
        child subreaper). ``console_socket`` receives the pty master when the process
        asks for a terminal; else ``stdio`` are the process's 0, 1 and 2."""
        raise NotImplementedError

    def start(self, container_id: str) -> None:
        """Let the created container's init exec the user's program."""
        raise NotImplementedError

    def kill(self, container_id: str, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        """Send ``sig`` to the init, or to every process of the container with ``all``."""
        raise NotImplementedError

    def delete(self, container_id: str) -> None:
        """Remove the container whatever its state (killed first), and all it left."""
        raise NotImplementedError

    def pause(self, container_id: str) -> None:
        """Freeze every process of the container."""
        raise NotImplementedError

    def resume(self, container_id: str) -> None:
        """Thaw a paused container."""
        raise NotImplementedError

    def update(self, container_id: str, resources: oci.LinuxResources) -> None:
        """Change the cgroup limits of a live container."""
        raise NotImplementedError

    def exec(self, container_id: str, process: oci.Process, *,
             console_socket: socket.socket | None = None, stdio: Stdio | None = None,
             detach: bool = False) -> int:
        """Run another process in the container: its exit status, or with ``detach``
        its pid (a child of the caller, which becomes a child subreaper to reap it)."""
        raise NotImplementedError

    def kill_all_argv(self, container_id: str) -> list[str]:
        """The command line that SIGKILLs every process of the container, for a process
        that only execs it (the monitor's watchdog)."""
        raise NotImplementedError

    def exists(self, container_id: str) -> bool:
        """Whether the runtime has state for the container."""
        return os.path.isdir(os.path.join(self.root, container_id))

    def pid(self, container_id: str) -> int:
        """The init's host pid (0 when it is gone)."""
        raise NotImplementedError

    def paused(self, container_id: str) -> bool:
        """Whether the container's cgroup is frozen."""
        raise NotImplementedError

    def config(self, container_id: str) -> bytes:
        """The config.json the container was created from."""
        raise NotImplementedError

    def cgroup(self, container_id: str) -> cgroups.Cgroup:
        """The container's cgroup."""
        raise NotImplementedError

    def pids(self, container_id: str) -> list[int]:
        """The host pids of every process of the container."""
        return self.cgroup(container_id).pids()


class InProcess(RuntimeCommand):
    """dockyard's own runtime, called in this process (no new interpreter)."""

    name = BUILTIN

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.runtime = Runtime(root)

    def create(self, container_id: str, bundle: str, *, stdio: Stdio | None = None,
               console_socket: socket.socket | None = None) -> int:
        return self.runtime.create(container_id, bundle, stdio=stdio, reap=True,
                                   console_socket=console_socket)

    def start(self, container_id: str) -> None:
        self.runtime.start(container_id)

    def kill(self, container_id: str, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        self.runtime.kill(container_id, sig, all=all)

    def delete(self, container_id: str) -> None:
        self.runtime.delete(container_id, force=True)

    def pause(self, container_id: str) -> None:
        self.runtime.pause(container_id)

    def resume(self, container_id: str) -> None:
        self.runtime.resume(container_id)

    def update(self, container_id: str, resources: oci.LinuxResources) -> None:
        self.runtime.update(container_id, resources)

    def exec(self, container_id: str, process: oci.Process, *,
             console_socket: socket.socket | None = None, stdio: Stdio | None = None,
             detach: bool = False) -> int:
        return self.runtime.exec(container_id, process, console_socket=console_socket,
                                 stdio=stdio, detach=detach)

    def kill_all_argv(self, container_id: str) -> list[str]:
        # dockyard-runtime, of this very interpreter and package.
        return [sys.executable, "-m", "dockyard.runtime.cli", "--root", self.root, "kill",
                "--all", container_id, "KILL"]

    def pid(self, container_id: str) -> int:
        return StateDir(self.root, container_id).read().pid

    def paused(self, container_id: str) -> bool:
        return self.runtime.status(container_id) == Status.PAUSED

    def config(self, container_id: str) -> bytes:
        return self.runtime.config(container_id)

    def cgroup(self, container_id: str) -> cgroups.Cgroup:
        return cgroups.open_cgroup(StateDir(self.root, container_id).read().cgroup_path)


class External(RuntimeCommand):
    """A runc-compatible runtime binary (crun, runc), run once per operation."""

    # runc 1.1 and crun 1.8 refuse a bundle of a runtime-spec newer than 1.0/1.1, and
    # ignore the members they do not know.
    oci_version = "1.0.2"

    def __init__(self, name: str, binary: str, root: str) -> None:
        super().__init__(root)
        self.name = name
        self.binary = binary

    def create(self, container_id: str, bundle: str, *, stdio: Stdio | None = None,
               console_socket: socket.socket | None = None) -> int:
        try:
            with self._console(console_socket) as console, self._pid_file() as pid_file:
                self._run(container_id, "create", "--bundle", bundle, *console,
                          "--pid-file", pid_file, stdio=stdio)
                return _read_pid(pid_file)
        except BaseException:
            # crun leaves the cgroup of a create that failed; a kill -9 would leave more.
            with contextlib.suppress(DockyardError, OSError):
                self.delete(container_id)
            with contextlib.suppress(DockyardError, OSError), \
                    open(os.path.join(bundle, "config.json"), "rb") as f:
                cg = self._cgroup_of(container_id, f.read())
                if cg.exists():
                    cg.destroy()
            remove_unused_parent()
            raise

    def start(self, container_id: str) -> None:
        self._run(container_id, "start")

    def kill(self, container_id: str, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        self._run(container_id, "kill", *(["--all"] if all else []), sig=str(int(sig)))

    def delete(self, container_id: str) -> None:
        if self.exists(container_id):
            self._run(container_id, "delete", "--force")
        # crun and runc leave the parent of the engine's cgroupsPath (/dockyard/ID).
        remove_unused_parent()

    def pause(self, container_id: str) -> None:
        self._run(container_id, "pause")

    def resume(self, container_id: str) -> None:
        self._run(container_id, "resume")

    def update(self, container_id: str, resources: oci.LinuxResources) -> None:
        import tempfile

        import msgspec

        from dockyard.oci import runtime as oci
        from dockyard.oci.document import dump
        from dockyard.runtime.resources import apply_resources

        # "No pids limit" (a limit <= 0, as runc reads it) is written as -1 by crun 1.8
        # on cgroup v1, which the kernel refuses: that one file is written here.
        unlimited = resources.pids is not None and resources.pids.limit <= 0
        if unlimited:
            resources = msgspec.structs.replace(resources, pids=None)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".update-") as f:
            f.write(dump(resources))
            f.flush()
            self._run(container_id, "update", "--resources", f.name)
        if unlimited:
            apply_resources(self.cgroup(container_id),
                            oci.LinuxResources(pids=oci.LinuxPids(limit=-1)))

    def exec(self, container_id: str, process: oci.Process, *,
             console_socket: socket.socket | None = None, stdio: Stdio | None = None,
             detach: bool = False) -> int:
        import tempfile

        from dockyard.oci.document import dump

        # Always detached (-d): the process is then ours (we are a subreaper) and is
        # reaped here, so that its status is the process's, not the runtime's.
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".process-") as f, \
                self._console(console_socket) as console, self._pid_file() as pid_file:
            f.write(dump(process))
            f.flush()
            self._run(container_id, "exec", "--process", f.name, *console, "-d",
                      "--pid-file", pid_file, stdio=stdio)
            pid = _read_pid(pid_file)
        return pid if detach else Runtime.reap(pid)

    def kill_all_argv(self, container_id: str) -> list[str]:
        return [self.binary, "--root", self.root, "kill", "--all", container_id, "KILL"]

    def pid(self, container_id: str) -> int:
        state = self._state(container_id)
        return int(state.get("pid") or 0) if state.get("status") != "stopped" else 0

    def paused(self, container_id: str) -> bool:
        return self._state(container_id).get("status") == "paused"

    def config(self, container_id: str) -> bytes:
        bundle = str(self._state(container_id).get("bundle") or "")
        try:
            with open(os.path.join(bundle, "config.json"), "rb") as f:
                return f.read()
        except OSError as e:
            raise NotFound(f"container {container_id!r}: its bundle is gone: {e}") from None

    def cgroup(self, container_id: str) -> cgroups.Cgroup:
        return self._cgroup_of(container_id, self.config(container_id))

    def _cgroup_of(self, container_id: str, config: bytes) -> cgroups.Cgroup:
        from dockyard.oci import runtime as oci

        spec = oci.load_spec(config)
        path = spec.linux.cgroups_path if spec.linux is not None else None
        if not path:
            raise SystemFailure(f"container {container_id!r} has no cgroupsPath: the "
                                f"engine sets one for {self.name}")
        return cgroups.open_cgroup(path)

    # -- running the binary ------------------------------------------------------------

    def _state(self, container_id: str) -> dict[str, object]:
        out = self._run(container_id, "state", capture=True)
        try:
            state = json.loads(out)
        except ValueError:
            raise SystemFailure(f"{self.name} state {container_id}: not JSON: "
                                f"{out[:200]!r}") from None
        return state if isinstance(state, dict) else {}

    def _run(self, container_id: str, verb: str, *options: str, sig: str | None = None,
             stdio: Stdio | None = None, capture: bool = False) -> bytes:
        import subprocess
        import tempfile

        if verb != "create" and not self.exists(container_id):
            raise NotFound(f"container {container_id!r} does not exist in {self.name}'s "
                           "state")
        os.makedirs(self.root, mode=_ROOT_ACCESS, exist_ok=True)
        # One log a call: the engine and the monitor may drive the container at once.
        fd, log = tempfile.mkstemp(dir=self.root, prefix=f".{verb}-", suffix=".log")
        os.close(fd)
        argv = [self.binary, "--root", self.root, "--log", log, "--log-format", "json",
                verb, *options, container_id, *([sig] if sig else [])]
        null = subprocess.DEVNULL
        try:
            result = subprocess.run(
                argv, check=False,
                stdin=stdio.stdin if stdio else null,
                stdout=subprocess.PIPE if capture else (stdio.stdout if stdio else null),
                stderr=stdio.stderr if stdio else subprocess.PIPE)
            if result.returncode != 0:
                raise self._error(verb, container_id, _last_error(log) or
                                  (result.stderr or b"").decode(errors="replace").strip())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(log)
        return result.stdout or b""

    def _error(self, verb: str, container_id: str, message: str) -> DockyardError:
        # crun's words for a command not found, in Docker's (runc's), which users and
        # scripts look for.
        message = _CRUN_NOT_FOUND.sub(r'exec: "\1": executable file not found in $PATH',
                                      message)
        lowered = message.lower()
        text = f"{self.name} {verb}: {message or 'failed'}"
        # Only what is said of the command itself: a bind source missing is no 127.
        if verb in ("create", "exec") and ('exec: "' in lowered or "executable" in lowered):
            if "not found" in lowered or "no such file" in lowered:
                return CommandNotFound(text)
            if any(words in lowered for words in ("permission denied", "not permitted",
                                                  "is a directory")):
                return CannotExecute(text)
        if not self.exists(container_id):
            return NotFound(text)
        if verb in ("kill", "pause", "resume", "update", "exec") and (
                "not running" in lowered or "stopped" in lowered or "paused" in lowered):
            return Conflict(text)
        return SystemFailure(text)

    @contextlib.contextmanager
    def _pid_file(self) -> Iterator[str]:
        import tempfile

        os.makedirs(self.root, mode=_ROOT_ACCESS, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=self.root, prefix=".pid-")
        os.close(fd)
        os.unlink(path)  # the runtime creates it
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    @contextlib.contextmanager
    def _console(self, console_socket: socket.socket | None) -> Iterator[Sequence[str]]:
        """The ``--console-socket PATH`` options; the master the runtime sends there is
        passed on to ``console_socket`` (a connected socket, as the in-process runtime
        takes it)."""
        if console_socket is None:
            yield ()
            return
        import shutil
        import tempfile

        # Not under the root: a unix socket path is short (108 bytes), and the runtime
        # needs a path it can connect to.
        directory = tempfile.mkdtemp(prefix="dockyard-console-")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            path = os.path.join(directory, "sock")
            listener.bind(path)
            listener.listen(1)
            yield ["--console-socket", path]
            # The runtime connected and sent the master before it returned.
            listener.settimeout(5)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
            if not fds:
                raise SystemFailure(f"{self.name} sent no terminal on the console socket")
            try:
                socket.send_fds(console_socket, [b"t"], fds)
            finally:
                for received in fds:
                    os.close(received)
        finally:
            listener.close()
            shutil.rmtree(directory, ignore_errors=True)


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError) as e:
        raise SystemFailure(f"the runtime wrote no pid file: {e}") from None


def _last_error(log: str) -> str:
    """The last error the runtime logged (JSON lines: ``{"msg": ..., "level": ...}``)."""
    message = ""
    with contextlib.suppress(OSError), open(log, "rb") as f:
        for line in f:
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    return re.sub(r"\s+", " ", message).strip()


def open_runtime(name: str | None, root: str) -> RuntimeCommand:
    """The runtime called ``name`` (None or "" is dockyard's own), with its state under
    ``root``; InvalidArgument for one that is unknown or not installed."""
    if not name or name == BUILTIN:
        return InProcess(root)
    import shutil

    if name not in EXTERNAL:
        raise InvalidArgument(f"unknown or invalid runtime name: {name}: use "
                              + ", ".join((BUILTIN, *EXTERNAL)))
    binary = shutil.which(name)
    if binary is None:
        raise InvalidArgument(f"runtime {name!r} is not installed: no {name} on the PATH")
    return External(name, binary, root)
