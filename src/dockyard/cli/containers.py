"""The container commands: run, create, start, stop, kill, rm, wait, ps, logs,
inspect, pause, unpause, restart, rename, update, container prune, top, port and
stats, with docker's flags, output and exit codes.

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
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dockyard.cli.prompting import parse_bool, parse_filters, registries
from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound

if TYPE_CHECKING:
    import socket

    from dockyard.runtime.terminal import DetachKeys


def service(options: argparse.Namespace) -> Any:
    """The container service of the chosen root and run root."""
    from dockyard.engine.containers import ContainerService

    # $DOCKYARD_RUNTIME: the runtime of new containers (dockerd's --default-runtime).
    return ContainerService(options.root, options.runroot,
                            storage_driver=options.storage_driver, registries=registries(),
                            runtime=os.environ.get("DOCKYARD_RUNTIME") or None)


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
    "oom_score_adj", "ulimit", "volume", "volumes_from", "mount", "tmpfs", "device", "read_only",
    "privileged", "cap_add", "cap_drop", "security_opt", "group_add", "sysctl", "init",
    "network", "add_host", "dns", "dns_option", "dns_search", "ipc", "pid", "uts",
    "cgroupns", "restart", "rm", "runtime", "log_driver", "log_opt", "publish",
    "publish_all", "network_alias", "ip", "ip6", "mac_address", "link",
    "health_cmd", "health_interval", "health_timeout", "health_start_period",
    "health_start_interval", "health_retries", "no_healthcheck",
)


def _config(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The Config, HostConfig and NetworkingConfig of ``run``/``create``'s flags."""
    from dockyard.engine.options import RunFlags, networking_config, to_config

    flags = RunFlags(image=args.image, command=list(args.command),
                     **{name: getattr(args, name) for name in _FLAG_FIELDS})
    return (*to_config(flags), networking_config(flags))


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
    from dockyard.runtime.terminal import DetachKeys

    try:
        keys = DetachKeys(args.detach_keys)
        config, host, networking = _config(args)
    except DockyardError as e:
        print(f"dockyard: {e}.\nSee 'dockyard run --help'.", file=sys.stderr)
        return 125
    try:
        containers = service(options)
        _pull_if_missing(options, args, containers)
        cid = containers.run(config, host, args.name, attached=not args.detach,
                             networking=networking)
    except DockyardError as e:
        return _daemon_error(e)
    if args.detach:
        print(cid)
        return 0
    if args.tty and args.interactive:
        return _attach_terminal(containers, cid, stdin=True, keys=keys, remove=bool(args.rm))
    # Without a terminal to type in, the output comes from the log, which has it all
    # from the start (an attach connection made now could miss the first of it).
    return _attach_until_exit(containers, cid, interactive=bool(args.interactive),
                              remove=bool(args.rm), sig_proxy=args.sig_proxy and not args.tty)


@contextlib.contextmanager
def _proxy_signals(containers: Any, cid: str, enabled: bool) -> Iterator[None]:
    """Send SIGINT, SIGTERM and SIGHUP we get on to the container (``--sig-proxy``)."""
    if not enabled:
        yield
        return

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(DockyardError):
            containers.kill(cid, signum)

    previous = {signum: signal.signal(signum, forward)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _attach_until_exit(containers: Any, cid: str, *, interactive: bool,
                       remove: bool, sig_proxy: bool = True) -> int:
    """Print the container's output until it exits; its exit code."""
    try:
        with _proxy_signals(containers, cid, sig_proxy):
            if interactive:
                _forward_stdin(containers, cid)
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
    if remove:
        with contextlib.suppress(NotFound):
            containers.remove(cid, force=True, volumes=True)
    return code


def _attach_terminal(containers: Any, cid: str, *, stdin: bool, keys: DetachKeys,
                     remove: bool) -> int:
    """``run -it``: our terminal on the container's, until it exits (its exit code) or
    the user types the detach keys (0, and it runs on)."""
    try:
        sock = containers.attach(cid)
    except Conflict:
        sock = None  # it ended already: what it wrote is in the log
    if sock is None:
        for entry in containers.logs(cid):
            sys.stdout.buffer.write(entry.data)
        sys.stdout.flush()
    else:
        with sock:
            if not _session(sock, stdin=stdin, tty=True, keys=keys):
                return 0
    try:
        code = int(containers.wait(cid))
    except NotFound:
        return 0
    if remove:
        with contextlib.suppress(NotFound):
            containers.remove(cid, force=True, volumes=True)
    return code


def _session(sock: socket.socket, *, stdin: bool, tty: bool, keys: DetachKeys) -> bool:
    """Copy the monitor's output frames to our stdout and stderr and, with ``stdin``,
    what we read to the container, until it exits (True) or the user types the
    detach keys (False). With ``tty`` our terminal is raw and its size followed."""
    from dockyard.runtime import monitor
    from dockyard.runtime.terminal import on_resize, raw_mode, window_size

    # SIGWINCH only writes to a pipe: a frame sent from the handler could land in the
    # middle of another one.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def resize() -> None:
        size = window_size(0, 1)
        if size is not None:
            request = {"op": "resize", "rows": size[0], "cols": size[1]}
            monitor.send_frame(sock, monitor.Frame.CONTROL, json.dumps(request).encode())

    def wake() -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(wake_w, b"w")

    inputs = [sock, wake_r] + ([0] if stdin else [])
    try:
        with raw_mode(0) if tty and stdin else contextlib.nullcontext(False), \
                on_resize(wake) if tty else contextlib.nullcontext():
            if tty:
                resize()
            while True:
                ready, _, _ = select.select(inputs, [], [])
                if wake_r in ready:
                    os.read(wake_r, 64)
                    resize()
                if sock in ready:
                    frame = monitor.read_frame(sock)
                    if frame is None or frame[0] == monitor.Frame.EXIT:
                        return True
                    if frame[0] in (monitor.Frame.STDOUT, monitor.Frame.STDERR):
                        stream = sys.stderr if frame[0] == monitor.Frame.STDERR \
                            else sys.stdout
                        stream.buffer.write(frame[1])
                        stream.buffer.flush()
                if 0 in ready:
                    typed = os.read(0, 65536)
                    if not typed:  # the end of our input: an empty frame says so
                        monitor.send_frame(sock, monitor.Frame.STDIN, b"")
                        inputs.remove(0)
                        continue
                    data, detached = keys.feed(typed)
                    if data:
                        monitor.send_frame(sock, monitor.Frame.STDIN, data)
                    if detached:
                        return False
    finally:
        os.close(wake_r)
        os.close(wake_w)


def _forward_stdin(containers: Any, cid: str) -> None:
    """Copy our stdin to the container's, in a thread (``-i``)."""
    from dockyard.runtime import monitor

    try:
        sock = monitor.attach(containers.monitor_dir(cid))
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


def attach(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker attach``: our stdin, stdout and stderr on the running container's, until
    it exits (its exit code) or the user types the detach keys."""
    from dockyard.runtime.terminal import DetachKeys

    keys = DetachKeys(args.detach_keys)
    containers = service(options)
    try:
        cid = containers.resolve(args.container)
        config = containers.inspect(cid)["Config"]
        sock = containers.attach(cid)
    except DockyardError as e:
        print(f"Error response from daemon: {e}", file=sys.stderr)
        return 1
    tty = bool(config["Tty"])
    with sock, _proxy_signals(containers, cid, args.sig_proxy and not tty):
        if not _session(sock, stdin=bool(config["OpenStdin"]) and not args.no_stdin,
                        tty=tty, keys=keys):
            return 0
    try:
        return int(containers.wait(cid))
    except NotFound:
        return 0


def exec_(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker exec``: the process's exit code; 126 or 127 when it cannot run."""
    from dockyard.errors import CannotExecute, CommandNotFound
    from dockyard.runtime.container import Runtime, Stdio
    from dockyard.runtime.terminal import Terminal, window_size

    if not args.command:
        raise InvalidArgument('"dockyard exec" requires at least 2 arguments')
    containers = service(options)
    terminal = Terminal() if args.tty and not args.detach else None
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        if args.detach:
            stdio = Stdio(null, null, null)
        else:
            stdio = Stdio(0 if args.interactive else null, 1, 2)
        env: list[str] = []
        if args.env:  # engine.options costs ~25 ms to import: only when it is needed
            from dockyard.engine.options import env_value

            env = [env_value(entry) for entry in args.env]
        pid_or_code = containers.exec(
            args.container, args.command, user=args.user, env=env, workdir=args.workdir,
            privileged=args.privileged, tty=args.tty, console_size=window_size(0, 1),
            stdio=None if terminal else stdio,
            console_socket=terminal.socket if terminal else None,
            detach=args.detach or terminal is not None)
        if args.detach:
            return 0
        if terminal is None:
            return pid_or_code
        # A terminal: the process runs; copy between it and us, then reap it.
        terminal.receive()
        terminal.proxy(pid_or_code, stdin=args.interactive)
        return Runtime.reap(pid_or_code)
    except (CannotExecute, CommandNotFound) as e:
        print("OCI runtime exec failed: exec failed: unable to start container process: "
              f"{e}: unknown", file=sys.stderr)
        return e.exit_code
    except DockyardError as e:
        print(f"Error response from daemon: {e}", file=sys.stderr)
        return 1
    finally:
        os.close(null)
        if terminal is not None:
            terminal.close()


def create(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker create``: prints the new container's ID."""
    try:
        config, host, networking = _config(args)
    except DockyardError as e:
        print(f"dockyard: {e}.\nSee 'dockyard create --help'.", file=sys.stderr)
        return 125
    try:
        containers = service(options)
        _pull_if_missing(options, args, containers)
        print(containers.create(config, host, args.name, networking))
    except DockyardError as e:
        return _daemon_error(e)
    return 0


# --- lifecycle --------------------------------------------------------------------------


def _each(names: list[str], action: Callable[[str], Any], *, echo: bool = False) -> int:
    """Run ``action`` on each container (and print its name after, with ``echo``, as
    docker's stop, rm, pause... do); ``Error response from daemon`` for each failure,
    and exit 1 if one failed."""
    failed = False
    for name in names:
        try:
            action(name)
            if echo:
                print(name)
        except DockyardError as e:
            print(f"Error response from daemon: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def start(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker start``."""
    from dockyard.runtime.terminal import DetachKeys

    containers = service(options)
    if args.attach:
        if len(args.containers) > 1:
            raise InvalidArgument("you cannot start and attach multiple containers at once")
        cid = containers.resolve(args.containers[0])
        containers.start(cid)
        if containers.inspect(cid)["Config"]["Tty"]:
            return _attach_terminal(containers, cid, stdin=args.interactive,
                                    keys=DetachKeys(args.detach_keys), remove=False)
        return _attach_until_exit(containers, cid, interactive=args.interactive,
                                  remove=False)

    return _each(args.containers, containers.start, echo=True)


def stop(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker stop``."""
    containers = service(options)

    return _each(args.containers,
                 lambda name: containers.stop(name, args.time, args.signal), echo=True)


def kill(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker kill``."""
    containers = service(options)

    return _each(args.containers, lambda name: containers.kill(name, args.signal), echo=True)


def rm(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker rm``."""
    containers = service(options)

    return _each(args.containers, lambda name: containers.remove(
        name, force=args.force, volumes=args.volumes), echo=True)


def wait(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker wait``: prints each container's exit code."""
    containers = service(options)

    def one(name: str) -> None:
        print(containers.wait(name), flush=True)

    return _each(args.containers, one)


# --- pause, restart, rename, update, prune, top, port, stats ----------------------------


def pause(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker pause``."""
    containers = service(options)

    return _each(args.containers, containers.pause, echo=True)


def unpause(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker unpause``."""
    containers = service(options)

    return _each(args.containers, containers.unpause, echo=True)


def restart(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker restart``."""
    containers = service(options)

    return _each(args.containers,
                 lambda name: containers.restart(name, args.time, args.signal), echo=True)


def rename(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker rename``: prints nothing."""
    containers = service(options)
    return _each([args.container], lambda name: containers.rename(name, args.new_name))


def update(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker update``: prints each container it changed."""
    from dockyard.engine.options import (
        _for_flag,
        _swap_size,
        parse_cpus,
        parse_restart,
        parse_size,
    )

    if all(value is None for value in (args.memory, args.memory_swap, args.cpus,
                                       args.cpu_shares, args.pids_limit, args.restart)):
        raise InvalidArgument("you must provide one or more flags when using this command")
    changes = {
        "memory": None if args.memory is None
        else _for_flag(parse_size, args.memory, "-m, --memory"),
        "memory_swap": None if args.memory_swap is None
        else _for_flag(_swap_size, args.memory_swap, "--memory-swap"),
        "nano_cpus": None if args.cpus is None else _for_flag(parse_cpus, args.cpus, "--cpus"),
        "cpu_shares": args.cpu_shares, "pids_limit": args.pids_limit,
        "restart": None if args.restart is None else parse_restart(args.restart),
    }
    containers = service(options)

    return _each(args.containers, lambda name: containers.update(name, **changes), echo=True)


def container_prune(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker container prune``: the removed IDs and the space reclaimed."""
    from dockyard.cli.formatting import human_size
    from dockyard.cli.prompting import confirm

    filters = parse_filters(args.filter)
    unknown = set(filters) - {"until", "label"}
    if unknown:
        raise InvalidArgument(f"invalid filter '{sorted(unknown)[0]}'")
    if len(filters.get("until", ())) > 1:
        raise InvalidArgument("more than one until filter specified")
    until = _since(filters["until"][0]) if "until" in filters else None
    if not args.force and not confirm("WARNING! This will remove all stopped containers."):
        return 0
    removed, reclaimed = service(options).prune(until=until, labels=filters.get("label", ()))
    if removed:
        print("Deleted Containers:\n" + "".join(f"{cid}\n" for cid in removed))
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0


def top(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker top CONTAINER [ps OPTIONS]``."""
    from dockyard.cli.formatting import table

    containers = service(options)

    def one(name: str) -> None:
        found = containers.top(name, args.ps_args)
        # docker's tabwriter has a minimum cell width of 20 (17 + the 3 of padding).
        print(table(found["Processes"], [title.ljust(17) for title in found["Titles"]]))

    return _each([args.container], one)


def port(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker port``: ``80/tcp -> 0.0.0.0:8080`` lines, or the addresses of one port."""
    found: list[dict[str, Any]] = []
    if _each([args.container], lambda name: found.append(service(options).inspect(name))):
        return 1
    ports = found[0]["NetworkSettings"]["Ports"]
    published = {key: bindings for key, bindings in ports.items() if bindings}
    if args.private_port is not None:
        private = args.private_port if "/" in args.private_port else \
            args.private_port + "/tcp"
        if private not in published:
            # docker's CLI makes this check itself: main's "Error: ...", exit 1.
            raise NotFound(f"No public port '{private}' published for {args.container}")
        published = {private: published[private]}
    for key in sorted(published, key=lambda k: (int(k.partition("/")[0]), k)):
        for binding in published[key]:
            address = f"{binding['HostIp']}:{binding['HostPort']}"
            if ":" in binding["HostIp"]:
                address = f"[{binding['HostIp']}]:{binding['HostPort']}"
            print(address if args.private_port is not None else f"{key} -> {address}")
    return 0


def stats(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker stats``: one table with ``--no-stream``, else one a second until ^C."""
    from dockyard.cli.formatting import format_rows, human_size

    containers = service(options)
    columns = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
               "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")
    headers = {"ID": "CONTAINER ID", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
               "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O"}
    while True:
        rows = [{
            "ID": s["ID"] if args.no_trunc else s["ID"][:12], "Name": s["Name"],
            "Container": s["ID"], "CPUPerc": f"{s['CPUPerc']:.2f}%",
            "MemUsage": f"{human_size(s['MemUsage'], binary=True)} / "
                        f"{human_size(s['MemLimit'], binary=True)}",
            "MemPerc": f"{s['MemUsage'] * 100 / s['MemLimit'] if s['MemLimit'] else 0:.2f}%",
            "NetIO": f"{human_size(s['NetRx'])} / {human_size(s['NetTx'])}",
            "BlockIO": f"{human_size(s['BlockRead'])} / {human_size(s['BlockWrite'])}",
            "PIDs": str(s["PIDs"]),
        } for s in containers.stats(args.containers, all=args.all)]
        text = format_rows(rows, args.format, columns, headers)
        if args.no_stream:
            print(text)
            return 0
        # As docker: clear the screen and draw the table again.
        print("\033[2J\033[H" + text, flush=True)
        time.sleep(0.5)


# --- ps, logs, inspect ------------------------------------------------------------------


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _ports_column(ports: list[dict[str, Any]]) -> str:
    """docker ps's PORTS: ``0.0.0.0:8080->80/tcp, 443/tcp``, consecutive ports of one
    kind folded into ranges as docker does."""
    items: list[tuple[str, int, int, str]] = sorted(
        (p.get("IP", ""), p.get("PublicPort", 0), p["PrivatePort"], p["Type"]) for p in ports)
    groups: list[list[tuple[str, int, int, str]]] = []
    for item in items:
        last = groups[-1][-1] if groups else None
        if last is not None and (last[0], last[3]) == (item[0], item[3]) and \
                item[2] == last[2] + 1 and (item[1] == last[1] + 1 if item[1] else not last[1]):
            groups[-1].append(item)
        else:
            groups.append([item])
    shown = []
    for group in groups:
        (ip, public, private, proto), end = group[0], group[-1]
        inner = f"{private}" if len(group) == 1 else f"{private}-{end[2]}"
        if public:
            outer = f"{public}" if len(group) == 1 else f"{public}-{end[1]}"
            host = f"[{ip}]" if ":" in ip else ip
            shown.append(f"{host}:{outer}->{inner}/{proto}")
        else:
            shown.append(f"{inner}/{proto}")
    return ", ".join(shown)


def ps(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker ps`` / ``docker container ls``."""
    from dockyard.cli.formatting import ago, format_rows

    summaries = service(options).list(all=args.all or bool(args.last) or args.latest,
                                      filters=parse_filters(args.filter))
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
            "RunningFor": ago(s["CreatedUnix"]), "Ports": _ports_column(s["Ports"]),
            "Status": s["Status"],
            "State": s["State"], "Names": ",".join(n.lstrip("/") for n in s["Names"]),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(s["Labels"].items())),
            "Mounts": ",".join(m["Source"] for m in s["Mounts"]),
            "Networks": ",".join(s["NetworkSettings"]["Networks"])
            or s["HostConfig"]["NetworkMode"],
            "Size": "",
        })
    columns = ("{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
               "{{.Ports}}\t{{.Names}}")
    print(format_rows(rows, args.format, f"table {columns}",
                      {"ID": "CONTAINER ID", "RunningFor": "CREATED", "CreatedAt": "CREATED AT"}))
    return 0


def _since(value: str | None) -> float | None:
    """``--since``/``--until`` (Docker's formats: ``events.parse_time``) as unix time."""
    if value is None:
        return None
    from dockyard.engine.events import parse_time

    return parse_time(value) / 1e9


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


def inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker inspect``: containers first, then images, like docker."""
    from dockyard.cli.formatting import print_inspected

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
    return print_inspected(found, failed, args.format)


def container_inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker container inspect``."""
    from dockyard.cli.formatting import print_inspected

    containers = service(options)
    found, failed = [], []
    for name in args.names:
        try:
            found.append(containers.inspect(name))
        except NotFound as e:
            failed.append(str(e))
    return print_inspected(found, failed, args.format)


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
    _attach_flags(p)
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
    add("--volumes-from", **many)
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
    add("-p", "--publish", **many)
    add("-P", "--publish-all", action="store_true")
    add("--network-alias", "--net-alias", **many)
    add("--ip")
    add("--ip6")
    add("--mac-address")
    add("--link", **many)
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
    add("--health-cmd")
    add("--health-interval")
    add("--health-timeout")
    add("--health-start-period")
    add("--health-start-interval")
    add("--health-retries", type=int)
    add("--no-healthcheck", action="store_true")
    add("--log-driver")
    add("--log-opt", **many)
    add("image", metavar="IMAGE")
    add("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _detach_keys_flag(p: argparse.ArgumentParser) -> None:
    from dockyard.runtime.terminal import DEFAULT_DETACH_KEYS

    p.add_argument("--detach-keys", default=DEFAULT_DETACH_KEYS,
                   help="the keys that leave the container running (ctrl-p,ctrl-q)")


def _attach_flags(p: argparse.ArgumentParser) -> None:
    _detach_keys_flag(p)
    p.add_argument("--sig-proxy", type=parse_bool, default=True, nargs="?", const=True,
                   help="send the signals we get to the container (without -t)")


def _attach_args(p: argparse.ArgumentParser) -> None:
    _attach_flags(p)
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("container", metavar="CONTAINER")


def _exec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-u", "--user")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _names(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def _start_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--attach", action="store_true")
    _detach_keys_flag(p)
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


def _rename_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")


def _update_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--memory")
    p.add_argument("--memory-swap")
    p.add_argument("--cpus")
    p.add_argument("-c", "--cpu-shares", type=int)
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--restart")
    _names(p)


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])


def _top_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="ps OPTIONS")


def _port_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")


def _stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": _run_args, "create": _run_args, "start": _start_args, "stop": _stop_args,
    "kill": _kill_args, "rm": _rm_args, "wait": _names, "ps": _ps_args, "logs": _logs_args,
    "inspect": _inspect_args, "container-inspect": _one_kind_inspect_args,
    "image-inspect": _one_kind_inspect_args, "exec": _exec_args, "attach": _attach_args,
    "pause": _names, "unpause": _names, "restart": _stop_args, "rename": _rename_args,
    "update": _update_args, "container-prune": _prune_args, "top": _top_args,
    "port": _port_args, "stats": _stats_args,
}
