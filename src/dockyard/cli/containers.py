"""The container commands: run, create, start, stop, kill, rm, wait, ps, logs and
inspect, with docker's flags, output and exit codes.

``run`` exits with the container's code; an error of the engine (no such image, a bad
flag value) is 125, a command that cannot be executed 126, one not found 127, as with
docker. The other commands print one line per container they handled and exit 1 when
one of them failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dockyard.errors import DockyardError, InvalidArgument, NotFound


def service(options: argparse.Namespace) -> Any:
    """The container service of the chosen root and run root."""
    from dockyard.cli.images import registries
    from dockyard.engine.containers import ContainerService

    return ContainerService(options.root, options.runroot,
                            storage_driver=options.storage_driver, registries=registries())


def _daemon_error(e: DockyardError) -> int:
    """Print an engine error of ``run``/``create`` as docker does; the exit code."""
    print(f"dockyard: Error response from daemon: {e}", file=sys.stderr)
    return e.exit_code if e.exit_code in (126, 127) else 125


# --- run and create ---------------------------------------------------------------------

# RunFlags fields set from argparse destinations of the same name.
_FLAG_FIELDS = (
    "entrypoint", "user", "workdir", "hostname", "domainname", "tty", "interactive", "env",
    "env_file", "label", "label_file", "expose", "stop_signal", "stop_timeout", "memory",
    "memory_swap", "memory_reservation", "shm_size", "cpus", "cpu_shares", "cpu_period",
    "cpu_quota", "cpuset_cpus", "cpuset_mems", "pids_limit", "oom_kill_disable",
    "oom_score_adj", "ulimit", "volume", "mount", "tmpfs", "device", "read_only",
    "privileged", "cap_add", "cap_drop", "security_opt", "group_add", "sysctl", "init",
    "network", "add_host", "dns", "dns_option", "dns_search", "ipc", "pid", "uts",
    "cgroupns", "restart", "rm", "runtime", "log_driver", "log_opt",
)


def _config(args: argparse.Namespace) -> tuple[Any, Any]:
    from dockyard.engine.options import RunFlags, to_config

    if args.tty:
        raise InvalidArgument("-t, --tty is not supported yet: run without a terminal")
    flags = RunFlags(image=args.image, command=list(args.command),
                     **{name: getattr(args, name) for name in _FLAG_FIELDS})
    return to_config(flags)


def _pull_if_missing(options: argparse.Namespace, args: argparse.Namespace,
                     containers: Any) -> None:
    """docker's ``--pull missing``: pull the image when it is not here."""
    try:
        containers.images.resolve(args.image)
        if args.pull != "always":
            return
    except NotFound:
        if args.pull == "never":
            raise
        print(f"Unable to find image '{_tagged(args.image)}' locally", file=sys.stderr)
    from dockyard.cli.images import pull

    # docker run shows the pull on stderr: stdout is the container's.
    with contextlib.redirect_stdout(sys.stderr):
        pull(options, argparse.Namespace(name=args.image, platform=None, quiet=False))


def _tagged(image: str) -> str:
    from dockyard.images import reference

    try:
        return reference.parse(image).familiar()
    except DockyardError:
        return image


def run(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker run``."""
    try:
        config, host = _config(args)
    except DockyardError as e:
        print(f"dockyard: {e}.\nSee 'dockyard run --help'.", file=sys.stderr)
        return 125
    try:
        containers = service(options)
        _pull_if_missing(options, args, containers)
        cid = containers.run(config, host, args.name, attached=not args.detach)
    except DockyardError as e:
        return _daemon_error(e)
    if args.detach:
        print(cid)
        return 0
    return _attach_until_exit(containers, cid, interactive=bool(args.interactive),
                              remove=bool(args.rm))


def _attach_until_exit(containers: Any, cid: str, *, interactive: bool,
                       remove: bool) -> int:
    """Print the container's output until it exits; its exit code."""
    previous = {}

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(DockyardError):
            containers.kill(cid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, forward)
    if interactive:
        _forward_stdin(containers, cid)
    try:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        for entry in containers.logs(cid, follow=True):
            stream = err if entry.stream == "stderr" else out
            stream.write(entry.data)
            stream.flush()
        code = int(containers.wait(cid))
    except NotFound:
        code = 0  # removed meanwhile by someone else (--rm seen by another command)
    except DockyardError as e:
        return _daemon_error(e)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if remove:
        with contextlib.suppress(NotFound):
            containers.remove(cid, force=True)
    return code


def _forward_stdin(containers: Any, cid: str) -> None:
    """Copy our stdin to the container's, in a thread (``-i``)."""
    from dockyard.runtime import monitor

    try:
        sock = monitor.attach(containers._monitor_dir(cid))
    except DockyardError:
        return

    def copy() -> None:
        with sock:
            try:
                while data := os.read(0, 65536):
                    monitor.send_frame(sock, monitor.Frame.STDIN, data)
                monitor.send_frame(sock, monitor.Frame.STDIN, b"")
                while sock.recv(65536):  # keep the connection until the monitor ends it
                    pass
            except OSError:
                pass

    threading.Thread(target=copy, daemon=True).start()


def create(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker create``: prints the new container's ID."""
    try:
        config, host = _config(args)
    except DockyardError as e:
        print(f"dockyard: {e}.\nSee 'dockyard create --help'.", file=sys.stderr)
        return 125
    try:
        containers = service(options)
        _pull_if_missing(options, args, containers)
        print(containers.create(config, host, args.name))
    except DockyardError as e:
        return _daemon_error(e)
    return 0


# --- lifecycle --------------------------------------------------------------------------


def _each(names: list[str], action: Callable[[str], Any]) -> int:
    """Run ``action`` on each container; docker's ``Error response from daemon`` for
    each failure, and exit 1 if one failed."""
    failed = False
    for name in names:
        try:
            action(name)
        except DockyardError as e:
            print(f"Error response from daemon: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def start(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker start``."""
    containers = service(options)
    if args.attach:
        if len(args.containers) > 1:
            raise InvalidArgument("you cannot start and attach multiple containers at once")
        cid = containers.resolve(args.containers[0])
        containers.start(cid)
        return _attach_until_exit(containers, cid, interactive=args.interactive,
                                  remove=False)

    def one(name: str) -> None:
        containers.start(name)
        print(name)

    return _each(args.containers, one)


def stop(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker stop``."""
    containers = service(options)

    def one(name: str) -> None:
        containers.stop(name, args.time, args.signal)
        print(name)

    return _each(args.containers, one)


def kill(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker kill``."""
    containers = service(options)

    def one(name: str) -> None:
        containers.kill(name, args.signal)
        print(name)

    return _each(args.containers, one)


def rm(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker rm``."""
    containers = service(options)

    def one(name: str) -> None:
        containers.remove(name, force=args.force)
        print(name)

    return _each(args.containers, one)


def wait(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker wait``: prints each container's exit code."""
    containers = service(options)

    def one(name: str) -> None:
        print(containers.wait(name), flush=True)

    return _each(args.containers, one)


# --- ps, logs, inspect ------------------------------------------------------------------


def _filters(values: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {value}")
        filters.setdefault(key.strip().lower(), []).append(wanted)
    return filters


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def ps(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker ps`` / ``docker container ls``."""
    from dockyard.cli.formatting import ago, format_rows

    summaries = service(options).list(all=args.all or bool(args.last) or args.latest,
                                      filters=_filters(args.filter))
    if args.latest:
        summaries = summaries[:1]
    elif args.last and args.last > 0:
        summaries = summaries[:args.last]
    if args.quiet:
        for s in summaries:
            print(s["Id"] if args.no_trunc else s["Id"][:12])
        return 0
    rows = []
    for s in summaries:
        command = s["Command"] if args.no_trunc else _ellipsis(s["Command"], 20)
        rows.append({
            "ID": s["Id"] if args.no_trunc else s["Id"][:12], "Image": s["Image"],
            "Command": json.dumps(command, ensure_ascii=False),
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z",
                                       time.localtime(s["CreatedUnix"])),
            "RunningFor": ago(s["CreatedUnix"]), "Ports": "", "Status": s["Status"],
            "State": s["State"], "Names": ",".join(n.lstrip("/") for n in s["Names"]),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(s["Labels"].items())),
            "Mounts": ",".join(m["Source"] for m in s["Mounts"]), "Networks": "",
            "Size": "",
        })
    columns = ("{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
               "{{.Ports}}\t{{.Names}}")
    print(format_rows(rows, args.format, f"table {columns}",
                      {"ID": "CONTAINER ID", "RunningFor": "CREATED", "CreatedAt": "CREATED AT"}))
    return 0


def _since(value: str | None) -> float | None:
    """``--since``/``--until``: an RFC 3339 time, a unix time or a duration before now."""
    if value is None:
        return None
    from dockyard.engine.containers import parse_timestamp
    from dockyard.engine.options import parse_duration

    with contextlib.suppress(ValueError):
        return float(value)
    with contextlib.suppress(InvalidArgument):
        return time.time() - parse_duration(value) / 1e9
    if "T" not in value:
        value += "T00:00:00Z"
    elif not value.endswith("Z") and "+" not in value[10:] and "-" not in value[10:]:
        value += "Z"
    return parse_timestamp(value)


def logs(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker logs``."""
    tail = None
    if args.tail not in (None, "all"):
        try:
            tail = int(args.tail)
        except ValueError:
            raise InvalidArgument(f"invalid value for \"tail\": {args.tail}") from None
        tail = None if tail < 0 else tail
    entries = service(options).logs(args.container, follow=args.follow, tail=tail,
                                    since=_since(args.since), until=_since(args.until))
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for entry in entries:
        stream = err if entry.stream == "stderr" else out
        if args.timestamps:
            stream.write(entry.time.encode() + b" ")
        stream.write(entry.data)
        if args.follow:
            stream.flush()
    out.flush()
    return 0


def _print_inspected(found: list[dict[str, Any]], failed: list[str], fmt: str | None) -> int:
    from dockyard.cli.formatting import render

    if fmt:
        for item in found:
            print(render(fmt, item))
    else:
        print(json.dumps(found, indent=4))
    for message in failed:
        print(f"Error: {message}", file=sys.stderr)
    return 1 if failed else 0


def inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker inspect``: containers first, then images, like docker."""
    containers = service(options)
    found, failed = [], []
    for name in args.names:
        try:
            if args.type in (None, "container"):
                try:
                    found.append(containers.inspect(name))
                    continue
                except NotFound:
                    if args.type == "container":
                        raise
            if args.type in (None, "image"):
                found.append(containers.images.inspect(name))
                continue
            raise InvalidArgument(f'"{args.type}" is not a valid value for --type')
        except NotFound as e:
            failed.append(str(e) if args.type else f"No such object: {name}")
    return _print_inspected(found, failed, args.format)


def container_inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker container inspect``."""
    containers = service(options)
    found, failed = [], []
    for name in args.names:
        try:
            found.append(containers.inspect(name))
        except NotFound as e:
            failed.append(str(e))
    return _print_inspected(found, failed, args.format)


def image_inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker image inspect`` (images only)."""
    from dockyard.cli import images

    return int(images.inspect(options, args) or 0)


# --- flags ------------------------------------------------------------------------------


def _run_args(p: argparse.ArgumentParser) -> None:
    # docker's -h is --hostname: take -h from --help (which keeps --help).
    if "-h" in p._option_string_actions:
        p._handle_conflict_resolve(None, [("-h", p._option_string_actions["-h"])])  # type: ignore[arg-type]
    add = p.add_argument
    many: dict[str, Any] = {"action": "append", "default": []}
    add("-d", "--detach", action="store_true")
    add("--name")
    add("--rm", action="store_true")
    add("--pull", choices=("missing", "always", "never"), default="missing")
    add("-i", "--interactive", action="store_true")
    add("-t", "--tty", action="store_true")
    add("-e", "--env", **many)
    add("--env-file", **many)
    add("-l", "--label", **many)
    add("--label-file", **many)
    add("-w", "--workdir")
    add("-u", "--user")
    add("--entrypoint")
    add("-h", "--hostname")
    add("--domainname")
    add("--expose", **many)
    add("--stop-signal")
    add("--stop-timeout", type=int)
    add("-m", "--memory")
    add("--memory-swap")
    add("--memory-reservation")
    add("--shm-size")
    add("--cpus")
    add("-c", "--cpu-shares", type=int)
    add("--cpu-period", type=int)
    add("--cpu-quota", type=int)
    add("--cpuset-cpus")
    add("--cpuset-mems")
    add("--pids-limit", type=int)
    add("--oom-kill-disable", action="store_true")
    add("--oom-score-adj", type=int)
    add("--ulimit", **many)
    add("-v", "--volume", **many)
    add("--mount", **many)
    add("--tmpfs", **many)
    add("--device", **many)
    add("--read-only", action="store_true")
    add("--privileged", action="store_true")
    add("--cap-add", **many)
    add("--cap-drop", **many)
    add("--security-opt", **many)
    add("--group-add", **many)
    add("--sysctl", **many)
    add("--init", action="store_true")
    add("--network", "--net")
    add("--add-host", **many)
    add("--dns", **many)
    add("--dns-option", **many)
    add("--dns-search", **many)
    add("--ipc")
    add("--pid")
    add("--uts")
    add("--cgroupns")
    add("--restart")
    add("--runtime")
    add("--log-driver")
    add("--log-opt", **many)
    add("image", metavar="IMAGE")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _names(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def _start_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    _names(p)


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", "--timeout", type=int, default=None)
    p.add_argument("-s", "--signal")
    _names(p)


def _kill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--signal", default="SIGKILL")
    _names(p)


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    _names(p)


def _ps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("-n", "--last", type=int, default=0)
    p.add_argument("-s", "--size", action="store_true")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--details", action="store_true")
    p.add_argument("container", metavar="CONTAINER")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format")
    p.add_argument("--type", choices=("container", "image"))
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("names", nargs="+", metavar="NAME|ID")


def _one_kind_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format")
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("names", nargs="+", metavar="NAME|ID")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": _run_args, "create": _run_args, "start": _start_args, "stop": _stop_args,
    "kill": _kill_args, "rm": _rm_args, "wait": _names, "ps": _ps_args, "logs": _logs_args,
    "inspect": _inspect_args, "container-inspect": _one_kind_inspect_args,
    "image-inspect": _one_kind_inspect_args,
}
