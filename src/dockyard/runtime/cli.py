"""``dockyard-runtime``: runc's command line over ``dockyard.runtime.Runtime``.

containerd's shim, podman and dockerd call a runtime this way, so flags, output and
the JSON log format follow runc. Errors are one line on stderr (and a JSON record in
``--log`` when ``--log-format json``, where the shim looks for them); the exit status
is 1, or the container's own for ``run`` and ``exec``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dockyard import __version__
from dockyard.errors import CannotExecute, CommandNotFound, DockyardError, InvalidArgument
from dockyard.runtime.container import DEFAULT_ROOT, OCI_VERSION, Runtime

if TYPE_CHECKING:
    from dockyard.oci import runtime as oci


def _id(c: argparse.ArgumentParser) -> None:
    c.add_argument("id")


def _bundle_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--bundle", "-b", default=".")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--preserve-fds", type=int, default=0, help=argparse.SUPPRESS)
    c.add_argument("id")


def _run_args(c: argparse.ArgumentParser) -> None:
    _bundle_args(c)
    c.add_argument("--detach", "-d", action="store_true")
    c.add_argument("--keep", action="store_true", help="do not delete the container after")


def _kill_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--all", "-a", action="store_true")
    c.add_argument("id")
    c.add_argument("signal", nargs="?", default="SIGTERM")


def _delete_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--force", "-f", action="store_true")
    c.add_argument("id")


def _exec_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--process", "-p", help="a JSON file with the OCI process")
    c.add_argument("--tty", "-t", action="store_true")
    c.add_argument("--detach", "-d", action="store_true")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--cwd")
    c.add_argument("--env", "-e", action="append", default=[])
    c.add_argument("--user", "-u", help="UID[:GID]")
    c.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    c.add_argument("--cap", "-c", action="append", default=[])
    c.add_argument("--no-new-privs", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0, help=argparse.SUPPRESS)
    c.add_argument("id")
    c.add_argument("args", nargs=argparse.REMAINDER)


def _ps_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--format", "-f", choices=("table", "json"), default="table")
    c.add_argument("id")
    c.add_argument("ps_args", nargs=argparse.REMAINDER)


def _list_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--format", "-f", choices=("table", "json"), default="table")
    c.add_argument("--quiet", "-q", action="store_true")


def _update_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--resources", "-r", help="a JSON file of OCI linux.resources, or -")
    for flag in ("memory", "memory-swap", "memory-reservation", "cpu-shares", "cpu-quota",
                 "cpu-period", "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight"):
        c.add_argument(f"--{flag}")
    c.add_argument("id")


def _spec_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--bundle", "-b", default=".")
    c.add_argument("--rootless", action="store_true")


# Each command, its help and the function that declares its arguments. Only the
# invoked command's parser is built: building all of them costs ~10 ms, which every
# container start would pay.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "create": ("create a container; its process waits for start", _bundle_args),
    "run": ("create and start a container, and wait for it unless --detach", _run_args),
    "start": ("start a created container", _id),
    "state": ("print the OCI state of a container", _id),
    "pause": ("freeze every process of a container", _id),
    "resume": ("thaw a paused container", _id),
    "kill": ("send a signal to a container's init (or all its processes)", _kill_args),
    "delete": ("delete a stopped container and everything it left", _delete_args),
    "exec": ("run another process in a running container", _exec_args),
    "ps": ("list the processes of a container", _ps_args),
    "list": ("list containers", _list_args),
    "update": ("change the resource limits of a container", _update_args),
    "features": ("print what this runtime implements, as JSON", lambda c: None),
    "spec": ("write a new config.json with Docker's defaults", _spec_args),
}
# Global options that take a value, to find the command word without a parser.
_VALUED = {"--root", "--log", "--log-format", "--rootless", "--criu"}


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``, or None when help is asked or it is unclear."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-h", "--help"):
            return None
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in _COMMANDS and "-h" not in argv and "--help" not in argv \
                else None
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockyard-runtime",
                                description="Run OCI bundles, with runc's command line.")
    p.add_argument("--version", "-v", action="version",
                   version=f"dockyard-runtime version {__version__}\nspec: {OCI_VERSION}")
    p.add_argument("--root", default=os.environ.get("DOCKYARD_RUNTIME_ROOT", DEFAULT_ROOT),
                   help="where container state is kept")
    p.add_argument("--log", help="write errors to this file as well")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    # Accepted for compatibility with callers that always pass them.
    p.add_argument("--systemd-cgroup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rootless", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--criu", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, declare) in _COMMANDS.items():
        if only is None or only == name:
            declare(sub.add_parser(name, help=text, description=text))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dockyard-runtime``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(_command_word(argv)).parse_args(argv)
    if args.debug:
        # The container's setup processes print their tracebacks too.
        os.environ["DOCKYARD_DEBUG"] = "1"
    try:
        return _dispatch(args) or 0
    except DockyardError as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        _report(args, str(e))
        return e.exit_code if isinstance(e, CannotExecute | CommandNotFound) else 1
    except OSError as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        _report(args, f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}")
        return 1
    except KeyboardInterrupt:
        return 130


def _report(args: argparse.Namespace, message: str) -> None:
    print(f"dockyard-runtime: {message}", file=sys.stderr)
    if args.log:
        with open(args.log, "a") as f:
            if args.log_format == "json":
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                f.write(json.dumps({"level": "error", "msg": message, "time": stamp}) + "\n")
            else:
                f.write(f"level=error msg={json.dumps(message)}\n")


def _dispatch(args: argparse.Namespace) -> int | None:
    rt = Runtime(args.root)
    command = args.command
    if command == "create":
        _create(rt, args, reap=False)
    elif command == "run":
        return _run(rt, args)
    elif command == "start":
        rt.start(args.id)
    elif command == "state":
        from dockyard.oci.runtime import dump

        sys.stdout.write(dump(rt.state(args.id), indent=2).decode() + "\n")
    elif command == "kill":
        rt.kill(args.id, parse_signal(args.signal), all=args.all)
    elif command == "delete":
        rt.delete(args.id, force=args.force)
    elif command == "pause":
        rt.pause(args.id)
    elif command == "resume":
        rt.resume(args.id)
    elif command == "exec":
        return _exec(rt, args)
    elif command == "ps":
        _ps(rt, args)
    elif command == "list":
        _list(rt, args)
    elif command == "update":
        rt.update(args.id, _resources(args))
    elif command == "features":
        from dockyard.oci.runtime import dump
        from dockyard.runtime.features import features

        sys.stdout.write(dump(features(), indent=2).decode() + "\n")
    elif command == "spec":
        _spec(args)
    return None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read {path}: {e.strerror}") from None


def parse_signal(value: str) -> int:
    """A signal given as a number, ``TERM`` or ``SIGTERM``."""
    if value.isdigit():
        return int(value)
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"unknown signal {value!r}") from None


def _connect(path: str | None) -> socket.socket | None:
    if path is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise InvalidArgument(f"cannot connect to console socket {path}: {e.strerror}") from None
    return sock


def _create(rt: Runtime, args: argparse.Namespace, *, reap: bool,
            console: socket.socket | None = None) -> int:
    console = console or _connect(args.console_socket)
    try:
        return rt.create(args.id, args.bundle, console_socket=console, pid_file=args.pid_file,
                         no_pivot=args.no_pivot, reap=reap)
    finally:
        if console is not None:
            console.close()


def _run(rt: Runtime, args: argparse.Namespace) -> int:
    from dockyard.oci import runtime as oci
    from dockyard.runtime.terminal import Terminal

    if args.detach:
        _create(rt, args, reap=False)
        rt.start(args.id)
        return 0
    spec = oci.load_spec(_read(os.path.join(args.bundle, "config.json")))
    terminal = None
    if spec.process is not None and spec.process.terminal and args.console_socket is None:
        terminal = Terminal()
    try:
        pid = _create(rt, args, reap=True, console=terminal.socket if terminal else None)
    except BaseException:
        if terminal is not None:
            terminal.close()
        raise
    try:
        with _forward_signals(pid):
            if terminal is not None:
                terminal.receive()
            rt.start(args.id)
            if terminal is not None:
                terminal.proxy(pid)
            status = rt.wait(args.id)
    finally:
        if terminal is not None:
            terminal.close()
        if not args.keep:
            try:
                rt.delete(args.id, force=True)
            except DockyardError as e:
                print(f"dockyard-runtime: {e}", file=sys.stderr)
    return status


class _forward_signals:
    """Pass the signals a user sends to ``run`` on to the container's init, as runc does."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
               signal.SIGUSR2, signal.SIGWINCH)

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.saved: dict[int, object] = {}

    def _forward(self, signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def __enter__(self) -> None:
        for sig in self.SIGNALS:
            self.saved[sig] = signal.signal(sig, self._forward)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _exec(rt: Runtime, args: argparse.Namespace) -> int:
    from dockyard.oci import runtime as oci

    record_spec = oci.load_spec(rt.config(args.id))
    if args.process:
        process = oci.convert(json.loads(_read(args.process)), oci.Process,
                              "process.json")
    else:
        if not args.args:
            raise InvalidArgument("exec needs a command or --process")
        base = record_spec.process or oci.Process(cwd="/")
        user = base.user
        if args.user:
            uid, _, gid = args.user.partition(":")
            user = oci.User(uid=int(uid), gid=int(gid or 0),
                            additional_gids=args.additional_gids or None)
        caps = base.capabilities
        if args.cap and caps is not None:
            caps = oci.LinuxCapabilities(**{
                name: sorted(set(getattr(caps, name) or ()) | set(args.cap))
                for name in ("bounding", "effective", "permitted")
            }, inheritable=caps.inheritable, ambient=caps.ambient)
        process = oci.Process(
            args=list(args.args), env=list(base.env or ()) + args.env,
            cwd=args.cwd or base.cwd, user=user, terminal=args.tty, capabilities=caps,
            no_new_privileges=args.no_new_privs or base.no_new_privileges,
            rlimits=base.rlimits, apparmor_profile=base.apparmor_profile,
        )
    from dockyard.runtime.terminal import Terminal

    terminal = None
    console = _connect(args.console_socket)
    if process.terminal and console is None:
        if args.detach:
            raise InvalidArgument("exec --tty --detach needs --console-socket")
        terminal = Terminal()
        console = terminal.socket
    try:
        if terminal is None:
            status = rt.exec(args.id, process, console_socket=console,
                             pid_file=args.pid_file, detach=args.detach)
            # Detached, exec returns the process's pid: the command itself succeeded.
            return 0 if args.detach else status
        pid = rt.exec(args.id, process, console_socket=console, pid_file=args.pid_file,
                      detach=True)
        terminal.receive()
        terminal.proxy(pid)
        return rt.reap(pid)
    finally:
        if console is not None:
            console.close()
        if terminal is not None:
            terminal.close()


def _ps(rt: Runtime, args: argparse.Namespace) -> None:
    pids = rt.pids(args.id)
    if args.format == "json":
        print(json.dumps(pids))
        return
    import subprocess

    out = subprocess.run(["ps", *(args.ps_args or ["-ef"])], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    header = out[0].split()
    try:
        column = header.index("PID")
    except ValueError:
        raise InvalidArgument("the ps output has no PID column") from None
    print(out[0])
    for line in out[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
            print(line)


def _list(rt: Runtime, args: argparse.Namespace) -> None:
    rows = rt.list()
    if args.quiet:
        for record, _ in rows:
            print(record.id)
        return
    if args.format == "json":
        print(json.dumps([
            {"ociVersion": OCI_VERSION, "id": r.id, "pid": r.pid if s != "stopped" else 0,
             "status": str(s), "bundle": r.bundle, "rootfs": r.rootfs, "created": r.created,
             "owner": r.owner or "root", "annotations": r.annotations}
            for r, s in rows]))
        return
    table = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    table += [(r.id, str(r.pid if s != "stopped" else 0), str(s), r.bundle, r.created,
               r.owner or "root") for r, s in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(value: str) -> int:
    """A size like ``512m`` or ``1g`` (binary units, as Docker reads them) in bytes."""
    text = value.strip().lower().removesuffix("b") if value.lower() not in ("-1",) else value
    if text == "-1":
        return -1
    number, unit = text.rstrip("kmgt"), text[len(text.rstrip("kmgt")):]
    try:
        return int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise InvalidArgument(f"invalid size {value!r}: use a number with b, k, m or g") from None


def _resources(args: argparse.Namespace) -> oci.LinuxResources:
    from dockyard.oci import runtime as oci

    if args.resources:
        raw = sys.stdin.buffer.read() if args.resources == "-" else \
            _read(args.resources)
        return oci.convert(json.loads(raw or b"{}"), oci.LinuxResources, "resources")
    memory = cpu = None
    if args.memory or args.memory_swap or args.memory_reservation:
        memory = oci.LinuxMemory(
            limit=parse_bytes(args.memory) if args.memory else None,
            swap=parse_bytes(args.memory_swap) if args.memory_swap else None,
            reservation=parse_bytes(args.memory_reservation) if args.memory_reservation
            else None)
    if args.cpu_shares or args.cpu_quota or args.cpu_period or args.cpuset_cpus or \
            args.cpuset_mems:
        cpu = oci.LinuxCPU(
            shares=int(args.cpu_shares) if args.cpu_shares else None,
            quota=int(args.cpu_quota) if args.cpu_quota else None,
            period=int(args.cpu_period) if args.cpu_period else None,
            cpus=args.cpuset_cpus, mems=args.cpuset_mems)
    return oci.LinuxResources(
        memory=memory, cpu=cpu,
        pids=oci.LinuxPids(limit=int(args.pids_limit)) if args.pids_limit else None,
        block_io=oci.LinuxBlockIO(weight=int(args.blkio_weight)) if args.blkio_weight
        else None)


def _spec(args: argparse.Namespace) -> None:
    from dockyard.oci import runtime as oci
    from dockyard.runtime.spec import default_spec

    target = os.path.join(args.bundle, "config.json")
    try:
        with open(target, "xb") as f:
            f.write(oci.dump(default_spec(rootless=args.rootless), indent=2) + b"\n")
    except FileExistsError:
        raise InvalidArgument(f"{target} exists already: remove it first") from None


if __name__ == "__main__":
    sys.exit(main())
