"""The per-container monitor: the process a container runs under, like podman's conmon.

``start_monitor`` forks (no new interpreter: the runtime is already in memory) a
daemon that creates and starts the container through its OCI runtime (dockyard's own
in process, or crun or runc through their command line: ``oci_runtime``), stays its
parent (a child subreaper, it adopts the init once the runtime's create exited),
writes its output to the log, serves attach clients, records its exit and applies the
restart policy. It outlives the CLI and ``dockyard serve``, so that they can exit,
crash or be upgraded without touching running containers.

    caller (CLI, engine)     intermediate       M (monitor)                W (watchdog)
    [no subreaper while      setsid
     forking: M must not     fork ------------> gc.freeze; fds 0-2 =
     be adopted by it]       exit               /dev/null, others closed;
    fork (above)                                subreaper; monitor.pid
    reap intermediate                           fork ---------------------> stdin = pipe
                                                listen on attach.sock       from M; exec sh:
                                                runtime create (stdio =     read the pipe
                                                  pipes or a pty): S -> I
                                                runtime start
             <--------- "ok PID" on the report pipe
    (start_monitor returns)                     poll loop: output -> log and
                                                clients; clients -> stdin;
                                                SIGCHLD -> reap I
                                                I exited: exit.json; restart,
                                                or delete it and "done" ---> exit quietly
                                                exit

If M dies without saying "done" (kill -9, a bug), W kills every process of the
container's cgroup (it execs the runtime's ``kill --all ID KILL``): a container never
runs on without its monitor, since nothing would log its output or record its exit.
What remains (the runtime's state and an empty cgroup) is what the runtime's delete
from the engine's reconcile removes; the engine reports the container as exited (no
``exit.json``, no live monitor). conmon instead leaves the container running; we choose
one tiny process more for no orphan. W is ``/bin/sh`` blocked in ``read`` on the pipe
(~1 MiB, not a second forked interpreter): M's death is the pipe's end of file. A
container's init forked by M holds a copy of the pipe (close-on-exec) until its
execve, so W learns of a death of M between a create and its start only when the init
execs or dies; the engine's reconcile deletes such a created container anyway.

Files in the monitor's state directory (the engine's "exit dir" for the container):

    monitor.pid   "PID START\\n": M's pid and start time (clock ticks since boot, field 22
                  of /proc/PID/stat), so that a reused pid is not taken for M
    attach.sock   the attach socket (below)
    exit.json     written (atomically) at each exit of the container, see ExitStatus
    health.json   with a healthcheck: Docker's State.Health (Status starting, healthy
                  or unhealthy; FailingStreak; Log: the last 5 probes' Start, End,
                  ExitCode and Output), written (atomically) after each probe
    monitor.log   only if M failed after it started: its traceback
    name          written by the engine when the running container is renamed: the
                  name M's events carry from then on

Attach protocol, on ``attach.sock`` (SOCK_STREAM; any number of clients). Both ways,
frames of a 5-byte header (1 byte kind, 4 bytes big-endian length) and a payload,
after Docker's multiplexed stream:

    kind  M -> client                          client -> M
    0                                          stdin bytes (dropped unless spec.stdin);
                                               an empty payload closes stdin (EOF)
    1     stdout bytes, as read (with a
          terminal: everything, raw pty bytes)
    2     stderr bytes, as read
    3     exit: the exit.json document; M
          closes the connection after it
    4     reply to a control message:          control, JSON: {"op": "stop",
          {"ok": true} or {"error": "..."}       "signal": N?, "timeout": S?} or
                                               {"op": "resize", "rows": R, "cols": C}

Each control message gets exactly one reply, in order. ``stop`` sends the signal
(default ``spec.stop_signal``) to the init and, if the container still runs after
``timeout`` seconds (default ``spec.stop_timeout``), SIGKILL to all its processes; the
exit frame follows when it is gone. A client that cannot take output as fast as the
container writes it is disconnected once 1 MiB waits for it: a slow reader must not
hold the container or the log back.

Restart policies are Docker's: ``no``; ``on-failure[:N]`` (a non-zero exit, at most N
restarts, no limit without N); ``always``; ``unless-stopped``. A stop asked through the
monitor ends the container whatever the policy (``always`` and ``unless-stopped`` only
differ when the engine comes back up, which is the engine's business; ``exit.json``
records ``stop_requested`` for it). Restarts wait 100 ms, doubling each time up to
1 min, back to 100 ms after a run of 10 s, as dockerd does.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import termios
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from dockyard import errors
from dockyard.errors import Conflict, DockyardError, InvalidArgument, SystemFailure
from dockyard.linux import cgroups
from dockyard.linux import syscalls as sc
from dockyard.runtime import eventlog
from dockyard.runtime.container import Stdio
from dockyard.runtime.logfile import DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE, JsonFileLog, rfc3339nano
from dockyard.runtime.monitor_files import (
    EXIT_FILE,
    NAME_FILE,
    PID_FILE,
    ExitStatus,
    monitor_alive,
    read_exit,
)
from dockyard.runtime.oci_runtime import BUILTIN, open_runtime
from dockyard.runtime.state import proc_start_time
from dockyard.runtime.terminal import Terminal

HEALTH_FILE = "health.json"
ATTACH_SOCKET = "attach.sock"
ERROR_FILE = "monitor.log"

HEADER = struct.Struct(">BI")
MAX_FRAME = 1 << 20
# Output waiting for a slow client, and input waiting for the container's stdin, above
# which M stops queueing (disconnects the client, stops reading stdin from clients).
MAX_BUFFER = 1 << 20

_PR_GET_CHILD_SUBREAPER = 37
_TRIM_AFTER = 0.05  # seconds after the start before M gives its free memory back
_RESTART_FIRST_DELAY = 0.1
_RESTART_MAX_DELAY = 60.0
_RESTART_RESET_AFTER = 10.0
# Docker's: the results a health log keeps, and the bytes of a probe's output kept.
_HEALTH_LOG_ENTRIES = 5
_HEALTH_OUTPUT_MAX = 4096


class Frame(enum.IntEnum):
    """The kinds of attach frames (see the module docstring)."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    EXIT = 3
    CONTROL = 4


@dataclass(frozen=True)
class RestartPolicy:
    """What the monitor does when the container exits (Docker's ``--restart``)."""

    name: str = "no"
    max_retries: int = 0  # on-failure only; 0 is no limit, as in Docker

    NAMES = ("no", "on-failure", "always", "unless-stopped")

    def __post_init__(self) -> None:
        if self.name not in self.NAMES:
            raise InvalidArgument(f"invalid restart policy {self.name!r}: use "
                                  + ", ".join(self.NAMES))
        if self.max_retries < 0 or (self.max_retries and self.name != "on-failure"):
            raise InvalidArgument("a maximum retry count goes with on-failure only, and is "
                                  ">= 0")

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """``no``, ``on-failure``, ``on-failure:3``, ``always`` or ``unless-stopped``."""
        name, _, count = text.partition(":")
        if count and not count.isdigit():
            raise InvalidArgument(f"invalid restart policy {text!r}: the count is a number")
        return cls(name, int(count or 0))

    def restarts(self, exit_code: int, restarts: int, stop_requested: bool) -> bool:
        """Whether a container that exited with ``exit_code`` is started again."""
        if stop_requested or self.name == "no":
            return False
        if self.name == "on-failure":
            return exit_code != 0 and (not self.max_retries or restarts < self.max_retries)
        return True


@dataclass(frozen=True)
class HealthSpec:
    """Docker's healthcheck as the monitor runs it; times in seconds.

    ``test`` is the command run in the container, as ``exec`` runs one (``CMD-SHELL``
    is ``/bin/sh -c``, turned so by the engine). A probe passes with status 0 and fails
    otherwise or after ``timeout``; ``retries`` failures in a row make the container
    unhealthy, except failures within ``start_period`` of its start while it never
    passed; during that period probes come every ``start_interval``.
    """

    test: tuple[str, ...]
    interval: float = 30.0
    timeout: float = 30.0
    start_period: float = 0.0
    start_interval: float = 5.0
    retries: int = 3

    def __post_init__(self) -> None:
        if not self.test or min(self.interval, self.timeout, self.start_interval) <= 0 \
                or self.start_period < 0 or self.retries < 1:
            raise InvalidArgument("a healthcheck needs a command, positive interval, "
                                  "timeout and start interval, and retries >= 1")


@dataclass(frozen=True)
class MonitorSpec:
    """Everything a monitor needs to run one container.

    ``runtime`` names the OCI runtime (``oci_runtime.open_runtime``) whose state is in
    ``runtime_root``. ``events_path`` is the event log (``eventlog``) where the monitor
    records what only it sees (``die``, ``oom``, ``health_status: ...``, and ``start``
    for a restart by the policy, as dockerd does), each with ``event_attributes``
    (the image, the name, the labels).
    """

    container_id: str
    bundle: str
    runtime_root: str
    state_dir: str
    log_path: str
    runtime: str = BUILTIN
    max_size: int = DEFAULT_MAX_SIZE
    max_files: int = DEFAULT_MAX_FILES
    terminal: bool = False  # must match the bundle's process.terminal
    stdin: bool = False     # keep the container's stdin open for attach clients
    restart: RestartPolicy = RestartPolicy()
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    healthcheck: HealthSpec | None = None
    # Keep what the container writes until the first attach client comes, and give it
    # to that client first (up to MAX_BUFFER): ``run -it`` attaches after the start.
    hold_output: bool = False
    events_path: str | None = None
    event_attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_size <= 0 or self.max_files < 1:
            raise InvalidArgument("log max_size must be > 0 and max_files >= 1")


@dataclass(frozen=True)
class MonitorHandle:
    """The engine's handle on a started monitor."""

    state_dir: str
    pid: int

    def alive(self) -> bool:
        """Whether the monitor still runs."""
        return monitor_alive(self.state_dir)

    def read_exit(self) -> ExitStatus | None:
        """The container's last recorded exit."""
        return read_exit(self.state_dir)

    def attach(self) -> socket.socket:
        """A new attach connection."""
        return attach(self.state_dir)

    def stop(self, timeout: float | None = None, sig: int | None = None) -> ExitStatus:
        """Stop the container (signal, ``timeout``, SIGKILL); its exit status."""
        return stop(self.state_dir, timeout, sig)

    def wait(self, timeout: float = 60.0) -> ExitStatus:
        """Wait until the monitor exited; the container's final exit status."""
        deadline = time.monotonic() + timeout
        while monitor_alive(self.state_dir):
            if time.monotonic() > deadline:
                raise errors.Timeout(f"the monitor in {self.state_dir} still runs after "
                                     f"{timeout:.0f}s")
            time.sleep(0.02)
        status = read_exit(self.state_dir)
        if status is None:
            raise SystemFailure(f"the monitor in {self.state_dir} died without recording "
                                "the container's exit")
        return status


# -- the engine's side ------------------------------------------------------------------


def start_monitor(spec: MonitorSpec) -> MonitorHandle:
    """Start a monitor that creates and starts the container; returns once it runs.

    Errors of the create or the start (a bad bundle, a command not found) are raised
    here, as the runtime raised them in the monitor.
    """
    # Imported before the fork: the monitor then shares the runtime's creation code
    # with the caller (copy on write) instead of importing its own copy.
    from dockyard.runtime import spawn

    # Whatever the runtime, its move of the init into the container's cgroup comes in
    # ~10 ms (the forks below, the monitor's setup): the wait it would pay starts now.
    spawn.prime_cgroup_moves()

    os.makedirs(spec.state_dir, mode=0o711, exist_ok=True)
    if monitor_alive(spec.state_dir):
        raise Conflict(f"a monitor already runs in {spec.state_dir}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(spec.state_dir, EXIT_FILE))
    report_r, report_w = os.pipe()
    # A subreaper caller (the engine after Runtime.create(reap=True)) would adopt M when
    # the intermediate exits; M must be nobody's child but init's.
    subreaper = _is_subreaper()
    if subreaper:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 0)
    try:
        pid = os.fork()
        if pid == 0:
            _become_monitor(spec, report_r, report_w)
        os.close(report_w)
        os.waitpid(pid, 0)
    finally:
        if subreaper:
            sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    try:
        # One read: the message is one write, smaller than PIPE_BUF. Reading to EOF
        # would also wait for the container's init, which holds a copy until its execve.
        message = os.read(report_r, 65536).decode(errors="replace")
    finally:
        os.close(report_r)
    kind, _, rest = message.partition(" ")
    if kind == "ok":
        return MonitorHandle(spec.state_dir, int(rest))
    if kind == "error":
        name, _, text = rest.partition(" ")
        error = getattr(errors, name, SystemFailure)
        if not (isinstance(error, type) and issubclass(error, DockyardError)):
            error = SystemFailure
        raise error(text)
    raise SystemFailure(f"the monitor of {spec.container_id!r} exited before it started "
                        "the container")


def read_health(state_dir: str) -> dict[str, object] | None:
    """The container's health as the monitor last wrote it, in the shape of Docker's
    ``State.Health`` (Status, FailingStreak, Log); None without a healthcheck."""
    try:
        with open(os.path.join(state_dir, HEALTH_FILE), "rb") as f:
            health = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    return health if isinstance(health, dict) else None


def attach(state_dir: str) -> socket.socket:
    """A connection to the monitor's attach socket (frames: see the module docstring)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _at_dir(state_dir, lambda path: sock.connect(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise Conflict(f"no monitor runs in {state_dir}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def stop(state_dir: str, timeout: float | None = None, sig: int | None = None
         ) -> ExitStatus:
    """Ask the monitor to stop its container; returns the exit status once it is gone.

    ``sig`` and ``timeout`` default to the monitor's ``stop_signal`` and ``stop_timeout``.
    A container whose monitor is already gone returns its recorded exit.
    """
    request: dict[str, object] = {"op": "stop"}
    if sig is not None:
        request["signal"] = int(sig)
    if timeout is not None:
        request["timeout"] = timeout
    try:
        sock = attach(state_dir)
    except Conflict:
        status = read_exit(state_dir)
        if status is None:
            raise
        return status
    with sock:
        send_frame(sock, Frame.CONTROL, json.dumps(request).encode())
        while (frame := read_frame(sock)) is not None:
            kind, payload = frame
            if kind == Frame.CONTROL and "error" in (reply := json.loads(payload)):
                raise Conflict(reply["error"])
            if kind == Frame.EXIT:
                return ExitStatus(**json.loads(payload))
    status = read_exit(state_dir)
    if status is None:
        raise SystemFailure(f"the monitor in {state_dir} closed the connection without "
                            "an exit status")
    return status


def send_frame(sock: socket.socket, kind: int, payload: bytes) -> None:
    """Send one attach frame."""
    sock.sendall(HEADER.pack(kind, len(payload)) + payload)


def read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    """Read one attach frame; None at the end of the connection."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    kind, length = HEADER.unpack(header)
    payload = _recv_exactly(sock, length)
    if payload is None:
        return None
    return kind, payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _at_dir(directory: str, call: Callable[[str], None]) -> None:
    """Call ``call`` with a short path to the attach socket in ``directory``.

    A unix socket path is limited to 108 bytes, which a deep state directory exceeds;
    /proc/self/fd/N/attach.sock names the same file in a few bytes.
    """
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        call(f"{sc.fd_path(fd)}/{ATTACH_SOCKET}")
    finally:
        os.close(fd)


def _is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    sc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag))
    return bool(flag.value)


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


# -- the monitor's side -----------------------------------------------------------------


def _become_monitor(spec: MonitorSpec, report_r: int, report_w: int) -> NoReturn:
    """In the intermediate child: fork M, which runs the monitor; never returns."""
    code = 0
    report = report_w
    monitor: _Monitor | None = None
    try:
        os.close(report_r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        report = _detach(report_w)
        monitor = _Monitor(spec, report)
        code = monitor.run()
    except BaseException as e:  # every failure must reach the caller or the error file
        code = 1
        if monitor is None or not monitor.reported:
            text = (f"error {type(e).__name__} {e}" if isinstance(e, DockyardError)
                    else f"error SystemFailure monitor: {type(e).__name__}: {e}")
            with contextlib.suppress(OSError):
                os.write(report, text.encode())
        else:
            with contextlib.suppress(OSError), \
                    open(os.path.join(spec.state_dir, ERROR_FILE), "a") as f:
                f.write(traceback.format_exc())
    finally:
        os._exit(code)


def _detach(report: int) -> int:
    """Make M a daemon; returns the report pipe's new fd.

    The objects the caller left (its files, sockets) are never freed in M: their fds
    are closed below and a later fd of M's may get the same number, which an object's
    finalizer would then close. gc.freeze moves them out of the collector's reach (and
    keeps the collector from writing to every page, which would copy them all).
    """
    gc.freeze()
    os.chdir("/")  # pin no mount of the caller's
    devnull = os.open("/dev/null", os.O_RDWR)
    # Above stdio, which /dev/null replaces next (a caller without fd 0 gave it 0).
    moved = fcntl.fcntl(report, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(report)
    report = moved
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _close_all_but(report)
    # Python's handler would raise KeyboardInterrupt in the loop; a daemon has no use
    # of SIGINT or SIGHUP (the caller's terminal, if any, is no longer ours).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return report


def _close_all_but(*keep: int) -> None:
    """Close every fd above stdio but ``keep``."""
    first = 3
    for fd in sorted(keep):
        if fd > first:
            sc.close_range(first, fd - 1)
        first = max(first, fd + 1)
    sc.close_range(first)


# W's program: "done" from M, or the end of the pipe (M died): kill the container then.
_WATCHDOG = 'read -r word; [ "$word" = done ] || exec "$@" >/dev/null 2>&1'


def _start_watchdog(spec: MonitorSpec) -> int:
    """Start W (see the module docstring); returns the pipe on which M says "done"."""
    argv = ["dy-watchdog", "-c", _WATCHDOG, "dy-watchdog",
            *open_runtime(spec.runtime, spec.runtime_root).kill_all_argv(spec.container_id)]
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid != 0:
        os.close(r)
        return w
    try:
        os.dup2(r, 0)  # not close-on-exec: sh's stdin
        os.execv("/bin/sh", argv)
    finally:
        os._exit(127)


def _go_duration(seconds: float) -> str:
    """A duration as Go prints one (``30s``, ``1.5s``, ``200ms``), for Docker's messages."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    return (f"{int(minutes)}m" if minutes else "") + f"{rest:g}s"


_MADV_DONTNEED = 4


def _return_free_memory() -> None:
    """Give the kernel back the heap pages the caller and the create freed (~1.5 MiB),
    and drop the file pages M inherited but does not use (~3 MiB of RSS).

    glibc keeps freed memory for later mallocs; M idles from now on and needs little.
    The caller (a CLI) had its libraries' code and data paged in, and the fork mapped
    it all in M too. A private file mapping without an anonymous page (one never
    written to: code, read-only data) holds nothing but the file's content, so
    ``MADV_DONTNEED`` loses nothing: the pages M touches again fault back in from the
    page cache, and the rest leaves M's resident set.
    """
    libc = ctypes.CDLL(None)
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for start, end in _clean_file_mappings():
        madvise(start, end - start, _MADV_DONTNEED)  # best effort: a failure costs RSS


def _clean_file_mappings() -> list[tuple[int, int]]:
    """The address ranges of M's file mappings that hold no anonymous page."""
    found: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    with open("/proc/self/smaps", "rb") as smaps:
        for line in smaps:
            if line[:1] in b"0123456789abcdef" and b"-" in line.split(b" ", 1)[0]:
                fields = line.split()
                # A file mapping has a path; [heap], [stack], [vdso]... are the kernel's.
                path = fields[5] if len(fields) > 5 else b""
                if path.startswith(b"/"):
                    low, high = fields[0].split(b"-")
                    current = (int(low, 16), int(high, 16))
                else:
                    current = None
            elif current is not None and line.startswith(b"Anonymous:"):
                if int(line.split()[1]) == 0:
                    found.append(current)
                current = None
    return found


class _Probe:
    """A healthcheck probe that runs: its process, the pipe of its output."""

    __slots__ = ("deadline", "fd", "output", "pid", "started_ns")

    def __init__(self, pid: int, fd: int, started_ns: int, deadline: float) -> None:
        self.pid = pid
        self.fd = fd
        self.started_ns = started_ns
        self.deadline = deadline
        self.output = b""


class _Client:
    """One attach connection."""

    __slots__ = ("inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""


class _Monitor:
    """M's state and its poll loop. One thread: every event is a ready fd."""

    def __init__(self, spec: MonitorSpec, report: int) -> None:
        self.spec = spec
        self.report = report
        self.reported = False
        self.rt = open_runtime(spec.runtime, spec.runtime_root)
        self.poller = select.poll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.clients: dict[int, _Client] = {}
        self.outputs: dict[int, str] = {}  # fd -> stream name, for the current run
        self.stdin = -1                    # the container's stdin (pipe or pty master)
        self.stdin_pending = b""
        self.stdin_closing = False         # a client ended the input: close once written
        self.terminal: Terminal | None = None
        self.init_pid = 0
        self.cgroup: cgroups.Cgroup | None = None
        self.oom_before = 0
        self.started_ns = 0
        self.started_mono = 0.0
        self.restarts = 0
        self.delay = _RESTART_FIRST_DELAY
        self.stop_requested = False
        self.kill_at: float | None = None
        self.restart_at: float | None = None
        self.last: ExitStatus | None = None
        self.done = False
        self.log = JsonFileLog(spec.log_path, spec.max_size, spec.max_files)
        self.held: bytes | None = b"" if spec.hold_output else None  # frames
        # The past probes of an earlier run are kept, as dockerd keeps them.
        self.health: dict[str, Any] = {"Status": "starting", "FailingStreak": 0, "Log": [],
                                       **(read_health(spec.state_dir) or {})}
        self.health_at: float | None = None  # when the next probe runs
        self.probe: _Probe | None = None
        self.probe_process: Any = None
        self.trim_at: float | None = None  # when M gives its free memory back

    # -- setup and the loop ------------------------------------------------------------

    def run(self) -> int:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        sc.set_name("dy-monitor")
        _write_atomically(os.path.join(self.spec.state_dir, PID_FILE),
                          f"{os.getpid()} {proc_start_time(os.getpid())}\n".encode())
        watchdog = _start_watchdog(self.spec)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # SIGCHLD wakes poll through this pipe; the handler itself does nothing.
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._watch(wake_r, select.POLLIN, lambda _: self._on_sigchld(wake_r))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.spec.state_dir, ATTACH_SOCKET))
        _at_dir(self.spec.state_dir, listener.bind)
        listener.listen(16)
        listener.setblocking(False)
        self._watch(listener.fileno(), select.POLLIN, lambda _: self._accept(listener))
        self._start_container()
        os.write(self.report, f"ok {os.getpid()}".encode())
        os.close(self.report)
        self.reported = True
        # Once the container has run a moment: one that ends at once (``run --rm IMAGE
        # true``) has its exit handled without the ~3 ms of this in the way.
        self.trim_at = time.monotonic() + _TRIM_AFTER
        while not self.done:
            self._poll_once()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.spec.state_dir, ATTACH_SOCKET))
        self._answer_late_clients(listener)
        self.log.close()
        os.write(watchdog, b"done\n")
        return 0

    def _poll_once(self) -> None:
        probe_deadline = self.probe.deadline if self.probe is not None else None
        deadlines = [t for t in (self.kill_at, self.restart_at, self.health_at,
                                 probe_deadline, self.trim_at) if t is not None]
        timeout = None
        if deadlines:
            timeout = max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)
        for fd, events in self.poller.poll(timeout):
            handler = self.handlers.get(fd)
            if handler is not None:  # an earlier handler of this round may have closed it
                handler(events)
        now = time.monotonic()
        if self.trim_at is not None and now >= self.trim_at:
            self.trim_at = None
            _return_free_memory()
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            with contextlib.suppress(DockyardError, OSError):
                self.rt.kill(self.spec.container_id, signal.SIGKILL, all=True)
        if self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self._restart()
        if self.probe is not None and now >= self.probe.deadline:
            self._probe_timed_out()
        if self.health_at is not None and now >= self.health_at:
            self.health_at = None
            self._start_probe()

    def _watch(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        self.poller.register(fd, events)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    # -- the container's life ----------------------------------------------------------

    def _start_container(self) -> None:
        """Create and start one run of the container, its stdio on our pipes or pty."""
        spec = self.spec
        created = False
        try:
            self._create()
            created = True
            if self.terminal is not None:
                self._take_terminal(self.terminal)
            self.cgroup = self.rt.cgroup(spec.container_id)
            self.oom_before = self.cgroup.oom_kill_count()
            self.started_ns = time.time_ns()
            self.started_mono = time.monotonic()
            self.rt.start(spec.container_id)
            if spec.healthcheck is not None:
                # As dockerd at each start: starting again, the past probes kept.
                self.health.update(Status="starting", FailingStreak=0)
                self._write_health()
                self.health_at = self.started_mono + self._probe_interval()
        except BaseException:
            self._close_stdio()
            if created:
                with contextlib.suppress(DockyardError):
                    self.rt.delete(spec.container_id)
            raise

    def _create(self) -> None:
        spec = self.spec
        theirs: list[int] = []  # the container's ends, closed here once it has them
        try:
            if spec.terminal:
                self.terminal = Terminal()
                stdio = None
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                if spec.stdin:
                    in_r, self.stdin = os.pipe()
                    os.set_blocking(self.stdin, False)
                else:
                    in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                theirs = [in_r, out_w, err_w]
                stdio = Stdio(in_r, out_w, err_w)
                self._add_output(out_r, "stdout")
                self._add_output(err_r, "stderr")
            self.init_pid = self.rt.create(
                spec.container_id, spec.bundle, stdio=stdio,
                console_socket=self.terminal.socket if self.terminal else None)
        finally:
            for fd in theirs:
                os.close(fd)

    def _take_terminal(self, terminal: Terminal) -> None:
        try:
            # Sent by the init during create: it is already there, or never comes.
            terminal.receive(timeout=0)
        except SystemFailure:
            raise InvalidArgument("terminal is set but the bundle's process.terminal is "
                                  "false") from None
        self._add_output(terminal.master, "stdout")
        if self.spec.stdin:
            self.stdin = terminal.master

    def _add_output(self, fd: int, stream: str) -> None:
        os.set_blocking(fd, False)
        self.outputs[fd] = stream
        self._watch(fd, select.POLLIN, lambda events: self._on_output(fd, events))

    def _on_output(self, fd: int, events: int) -> None:
        if events & select.POLLOUT:  # a pty master that is also the stdin
            self._write_stdin()
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            self._read_output(fd)

    def _read_output(self, fd: int) -> bool:
        """Copy what the container wrote to the log and the clients; False at its end."""
        stream = self.outputs[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: a pty whose every slave fd is closed
                raise
            data = b""
        if not data:
            self._unwatch(fd)
            del self.outputs[fd]
            self.log.end(stream)
            if self.terminal is None:  # the terminal's master is closed with it
                os.close(fd)
            return False
        self.log.write(stream, data)
        kind = Frame.STDOUT if stream == "stdout" else Frame.STDERR
        if self.held is not None and len(self.held) < MAX_BUFFER:
            self.held += HEADER.pack(kind, len(data)) + data
        for client in list(self.clients.values()):
            self._send(client, kind, data)
        return True

    def _on_sigchld(self, wake_r: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(wake_r, 64):
                pass
        # Orphans of a container without its own pid namespace are adopted by M (a
        # subreaper) and reaped here too.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.init_pid:
                self._on_exit(status)
            elif self.probe is not None and pid == self.probe.pid:
                self._probe_exited(status)

    def _on_exit(self, status: int) -> None:
        """The init exited: record it, then restart the container or finish."""
        finished = time.time_ns()
        self.init_pid = 0
        self.kill_at = None
        self.health_at = None
        self._end_probe()
        # What the container wrote before it exited is still in the pipes.
        for fd in list(self.outputs):
            while self._read_output(fd):
                pass
        self._close_stdio()
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = 128 + sig if sig is not None else os.WEXITSTATUS(status)
        oom = self.cgroup is not None and self.cgroup.oom_kill_count() > self.oom_before
        with contextlib.suppress(DockyardError):
            self.rt.delete(self.spec.container_id)
        if oom:
            self._event("oom")
        self._event("die", exitCode=str(code),
                    execDuration=str(int(time.monotonic() - self.started_mono)))
        restart = self.spec.restart.restarts(code, self.restarts, self.stop_requested)
        self._record(ExitStatus(
            exit_code=code, signal=sig, oom_killed=oom, started_at=rfc3339nano(self.started_ns),
            finished_at=rfc3339nano(finished), restarts=self.restarts, restarting=restart,
            stop_requested=self.stop_requested))
        if restart:
            if time.monotonic() - self.started_mono >= _RESTART_RESET_AFTER:
                self.delay = _RESTART_FIRST_DELAY
            self.restart_at = time.monotonic() + self.delay
            self.delay = min(self.delay * 2, _RESTART_MAX_DELAY)
        else:
            self.done = True

    def _record(self, status: ExitStatus) -> None:
        """Write exit.json, then give every client the exit and close it."""
        self.last = status
        document = json.dumps(asdict(status)).encode()
        _write_atomically(os.path.join(self.spec.state_dir, EXIT_FILE), document)
        for client in list(self.clients.values()):
            self._send(client, Frame.EXIT, document)
            self._drop(client, flush=True)

    def _restart(self) -> None:
        self.restarts += 1
        try:
            self._start_container()
            self._event("start")
        except DockyardError as e:
            assert self.last is not None
            self._record(ExitStatus(
                exit_code=e.exit_code, signal=None, oom_killed=False,
                started_at=self.last.started_at, finished_at=rfc3339nano(time.time_ns()),
                restarts=self.restarts, stop_requested=self.stop_requested))
            self.done = True

    def _close_stdio(self) -> None:
        for fd in list(self.outputs):
            self._unwatch(fd)
            self.log.end(self.outputs.pop(fd))
            if self.terminal is None:
                os.close(fd)
        if self.terminal is not None:
            self.terminal.close()  # the master too, which was also stdin
            self.terminal = None
        elif self.stdin >= 0:
            self._unwatch(self.stdin)
            os.close(self.stdin)
        self.stdin = -1
        self.stdin_pending = b""
        self.stdin_closing = False

    # -- events and healthchecks -------------------------------------------------------

    def _event(self, action: str, **attributes: str) -> None:
        if self.spec.events_path is None:
            return
        current = {**self.spec.event_attributes, **attributes}
        with contextlib.suppress(OSError), \
                open(os.path.join(self.spec.state_dir, NAME_FILE)) as f:
            current["name"] = f.read()  # renamed since it started
        eventlog.record(self.spec.events_path, "container", action, self.spec.container_id,
                        current)

    def _probe_interval(self) -> float:
        """dockerd's: every start_interval while starting within the start period."""
        check = self.spec.healthcheck
        assert check is not None
        if self.health["Status"] == "starting" and \
                time.monotonic() - self.started_mono < check.start_period:
            return check.start_interval
        return check.interval

    def _start_probe(self) -> None:
        """Run the healthcheck's command in the container, as ``exec`` does."""
        check = self.spec.healthcheck
        if check is None or not self.init_pid or self.probe is not None:
            return
        started = time.time_ns()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid = self.rt.exec(self.spec.container_id, self._probe_process(check),
                               stdio=Stdio(null, out_w, out_w), detach=True)
        except (DockyardError, OSError) as e:
            os.close(out_r)
            self._health_result(started, -1, str(e).encode())
            return
        finally:
            os.close(null)
            os.close(out_w)
        os.set_blocking(out_r, False)
        self.probe = _Probe(pid, out_r, started, time.monotonic() + check.timeout)
        self._watch(out_r, select.POLLIN, lambda _: self._read_probe())

    def _probe_process(self, check: HealthSpec) -> Any:
        """The probe's OCI process: the container's, running the test (made once)."""
        if self.probe_process is None:
            # Only a container with a healthcheck pays for the OCI models (memory, time).
            import msgspec

            from dockyard.oci import runtime as oci

            base = oci.load_spec(self.rt.config(self.spec.container_id)).process
            self.probe_process = msgspec.structs.replace(
                base or oci.Process(cwd="/"), args=list(check.test), terminal=None,
                console_size=None)
        return self.probe_process

    def _read_probe(self) -> None:
        probe = self.probe
        assert probe is not None
        try:
            while data := os.read(probe.fd, 65536):
                # Docker keeps the first 4096 bytes.
                probe.output = (probe.output + data)[:_HEALTH_OUTPUT_MAX]
        except BlockingIOError:
            return
        self._unwatch(probe.fd)  # its end: the probe and its children closed the pipe

    def _probe_exited(self, status: int) -> None:
        probe = self.probe
        assert probe is not None
        with contextlib.suppress(OSError):
            self._read_probe()
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        self._end_probe()
        self._health_result(probe.started_ns, code, probe.output)

    def _probe_timed_out(self) -> None:
        probe = self.probe
        check = self.spec.healthcheck
        assert probe is not None and check is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(probe.pid, signal.SIGKILL)  # reaped as any orphan of ours
        self._end_probe()
        self._health_result(probe.started_ns, -1, (
            f"Health check exceeded timeout ({_go_duration(check.timeout)})").encode())

    def _end_probe(self) -> None:
        if self.probe is not None:
            self._unwatch(self.probe.fd)
            os.close(self.probe.fd)
            self.probe = None

    def _health_result(self, started_ns: int, code: int, output: bytes) -> None:
        """Record one probe's result, as dockerd's handleProbeResult; schedule the next."""
        check = self.spec.healthcheck
        assert check is not None
        health = self.health
        before = health["Status"]
        health["Log"] = [*health["Log"], {
            "Start": rfc3339nano(started_ns), "End": rfc3339nano(time.time_ns()),
            "ExitCode": code, "Output": output.decode(errors="replace")}
        ][-_HEALTH_LOG_ENTRIES:]
        if code == 0:
            health.update(Status="healthy", FailingStreak=0)
        elif not (before == "starting" and (started_ns - self.started_ns) / 1e9
                  < check.start_period):
            health["FailingStreak"] += 1
            if health["FailingStreak"] >= check.retries:
                health["Status"] = "unhealthy"
        self._write_health()
        if health["Status"] != before:
            self._event(f"health_status: {health['Status']}")
        if self.init_pid:
            self.health_at = time.monotonic() + self._probe_interval()

    def _write_health(self) -> None:
        _write_atomically(os.path.join(self.spec.state_dir, HEALTH_FILE),
                          json.dumps(self.health).encode())

    # -- attach clients ----------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = listener.accept()
            sock.setblocking(False)
            client = _Client(sock)
            if self.held is not None:
                client.outbuf, self.held = self.held, None
            self.clients[sock.fileno()] = client
            self._watch(sock.fileno(), self._interest(client),
                        lambda events: self._on_client(client, events))

    def _answer_late_clients(self, listener: socket.socket) -> None:
        """Give the clients that connected while the final exit was being recorded what
        the others got (the held output, the exit), not a bare end of connection."""
        assert self.last is not None  # done only once the final exit is recorded
        document = json.dumps(asdict(self.last)).encode()
        late = (self.held or b"") + HEADER.pack(Frame.EXIT, len(document)) + document
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, OSError):
                return
            with sock, contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(late)

    def _interest(self, client: _Client) -> int:
        # While the container's stdin is full, stop reading clients: backpressure.
        events = select.POLLIN if len(self.stdin_pending) < MAX_BUFFER else 0
        return events | (select.POLLOUT if client.outbuf else 0)

    def _on_client(self, client: _Client, events: int) -> None:
        if events & select.POLLOUT:
            self._flush(client)
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(client)
                return
            client.inbuf += data
            while len(client.inbuf) >= HEADER.size:
                kind, length = HEADER.unpack_from(client.inbuf)
                if length > MAX_FRAME:
                    self._drop(client)
                    return
                if len(client.inbuf) < HEADER.size + length:
                    break
                payload = client.inbuf[HEADER.size:HEADER.size + length]
                client.inbuf = client.inbuf[HEADER.size + length:]
                if kind == Frame.STDIN:
                    self._input(payload)
                elif kind == Frame.CONTROL:
                    self._control(client, payload)

    def _input(self, data: bytes) -> None:
        if self.stdin < 0 or self.stdin_closing:
            return
        if data:
            self.stdin_pending += data
        elif self.terminal is not None:
            self.stdin_pending += b"\x04"  # the client's end of input: the EOF character
        else:
            self.stdin_closing = True
        self._write_stdin()

    def _write_stdin(self) -> None:
        """Write what clients sent to the container's stdin, as much as it takes now."""
        try:
            while self.stdin_pending:
                n = os.write(self.stdin, self.stdin_pending)
                self.stdin_pending = self.stdin_pending[n:]
        except BlockingIOError:
            pass
        except OSError:  # the container closed its stdin: what it did not read is lost
            self.stdin_pending = b""
        want_out = select.POLLOUT if self.stdin_pending else 0
        if self.terminal is not None:
            if self.stdin in self.handlers:  # the master, watched for output too
                self.poller.modify(self.stdin, select.POLLIN | want_out)
        elif self.stdin_closing and not self.stdin_pending:
            self._unwatch(self.stdin)
            os.close(self.stdin)
            self.stdin = -1
        elif want_out:
            if self.stdin not in self.handlers:
                self._watch(self.stdin, want_out, lambda _: self._write_stdin())
        else:
            self._unwatch(self.stdin)
        for other in self.clients.values():
            self.poller.modify(other.sock.fileno(), self._interest(other))

    def _control(self, client: _Client, payload: bytes) -> None:
        try:
            request = json.loads(payload)
            op = request.get("op")
            if op == "stop":
                self._stop(int(request.get("signal") or self.spec.stop_signal),
                           float(request.get("timeout", self.spec.stop_timeout)))
            elif op == "resize":
                if self.terminal is None:
                    raise Conflict("the container has no terminal to resize")
                fcntl.ioctl(self.terminal.master, termios.TIOCSWINSZ,
                            sc.pack_winsize(int(request["rows"]), int(request["cols"])))
            else:
                raise InvalidArgument(f"unknown control operation {op!r}")
            reply: dict[str, object] = {"ok": True}
        except (DockyardError, ValueError, KeyError, TypeError, AttributeError,
                OSError) as e:
            reply = {"error": str(e)}
        self._send(client, Frame.CONTROL, json.dumps(reply).encode())

    def _stop(self, sig: int, timeout: float) -> None:
        self.stop_requested = True
        if self.restart_at is not None:
            # Between two runs: the last exit becomes the final one.
            self.restart_at = None
            assert self.last is not None
            self._record(ExitStatus(**{**asdict(self.last), "restarting": False,
                                       "stop_requested": True}))
            self.done = True
            return
        if self.init_pid and self.kill_at is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, sig)
            self.kill_at = time.monotonic() + timeout

    def _send(self, client: _Client, kind: int, payload: bytes) -> None:
        client.outbuf += HEADER.pack(kind, len(payload)) + payload
        self._flush(client)
        if len(client.outbuf) > MAX_BUFFER:
            self._drop(client)

    def _flush(self, client: _Client) -> None:
        try:
            while client.outbuf:
                n = client.sock.send(client.outbuf)
                client.outbuf = client.outbuf[n:]
        except BlockingIOError:
            pass
        except OSError:  # the client went away
            client.outbuf = b""
        if client.sock.fileno() in self.handlers:
            self.poller.modify(client.sock.fileno(), self._interest(client))

    def _drop(self, client: _Client, flush: bool = False) -> None:
        """Close a client; with ``flush``, after a last blocking try to send its output."""
        fd = client.sock.fileno()
        if fd < 0:
            return
        if flush and client.outbuf:
            with contextlib.suppress(OSError):
                client.sock.settimeout(1.0)
                client.sock.sendall(client.outbuf)
        self._unwatch(fd)
        self.clients.pop(fd, None)
        client.sock.close()
