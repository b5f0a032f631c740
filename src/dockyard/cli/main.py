"""The ``dockyard`` command: docker's verbs, flags, output and exit codes.

Commands are found in a table and their modules imported only when invoked, so that
``dockyard --version`` or ``dockyard run`` pay for nothing else (pip does the same).
Errors are printed in one place as one line, ``Error: ...``, with docker's exit
codes: 125 for a bad command line, 1 for a failed command, 126 and 127 passed on;
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

from dockyard import __version__
from dockyard.errors import DockyardError

DEFAULT_ROOT = "/var/lib/dockyard"
DEFAULT_RUNROOT = "/run/dockyard"


class Command(NamedTuple):
    """Where a command lives: ``module.function(args)`` runs it, ``module.arguments``
    (a dict of name to declaring function) declares its flags."""

    module: str
    help: str


# Top-level verbs, and the management commands ("image ls") that lead to the same code.
_IMAGES = "dockyard.cli.images"
_VOLUMES = "dockyard.cli.volumes"
_NETWORKS = "dockyard.cli.networks"
_FILES = "dockyard.cli.container_files"
_CONTAINERS = "dockyard.cli.containers"
COMMANDS: dict[str, Command] = {
    "version": Command("dockyard.cli.system", "Show the dockyard version information"),
    "build": Command("dockyard.cli.build", "Build an image from a Dockerfile"),
    "pull": Command(_IMAGES, "Download an image from a registry"),
    "push": Command(_IMAGES, "Upload an image to a registry"),
    "images": Command(_IMAGES, "List images"),
    "inspect": Command(_CONTAINERS, "Return low-level information on containers or images"),
    "history": Command(_IMAGES, "Show the history of an image"),
    "tag": Command(_IMAGES, "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "rmi": Command(_IMAGES, "Remove one or more images"),
    "save": Command(_IMAGES, "Save one or more images to a tar archive"),
    "load": Command(_IMAGES, "Load an image from a tar archive or STDIN"),
    "import": Command(_IMAGES, "Import the contents from a tarball to create an image"),
    "login": Command(_IMAGES, "Log in to a registry"),
    "logout": Command(_IMAGES, "Log out from a registry"),
    "image-prune": Command(_IMAGES, "Remove unused images"),
    "image-bootstrap": Command(_IMAGES, "Build busybox or debian without a registry"),
    "system-check": Command(_IMAGES, "Check the image store for damage"),
    "image-inspect": Command(_CONTAINERS, "Display detailed information on images"),
    "run": Command(_CONTAINERS, "Create and run a new container from an image"),
    "create": Command(_CONTAINERS, "Create a new container"),
    "start": Command(_CONTAINERS, "Start one or more stopped containers"),
    "stop": Command(_CONTAINERS, "Stop one or more running containers"),
    "kill": Command(_CONTAINERS, "Kill one or more running containers"),
    "rm": Command(_CONTAINERS, "Remove one or more containers"),
    "wait": Command(_CONTAINERS, "Block until containers stop, then print their exit codes"),
    "ps": Command(_CONTAINERS, "List containers"),
    "logs": Command(_CONTAINERS, "Fetch the logs of a container"),
    "exec": Command(_CONTAINERS, "Execute a command in a running container"),
    "attach": Command(_CONTAINERS, "Attach local standard input, output, and error streams "
                      "to a running container"),
    "container-inspect": Command(_CONTAINERS, "Display detailed information on containers"),
    "pause": Command(_CONTAINERS, "Pause all processes within one or more containers"),
    "unpause": Command(_CONTAINERS, "Unpause all processes within one or more containers"),
    "restart": Command(_CONTAINERS, "Restart one or more containers"),
    "rename": Command(_CONTAINERS, "Rename a container"),
    "update": Command(_CONTAINERS, "Update configuration of one or more containers"),
    "container-prune": Command(_CONTAINERS, "Remove all stopped containers"),
    "top": Command(_CONTAINERS, "Display the running processes of a container"),
    "port": Command(_CONTAINERS, "List port mappings or a specific mapping for the "
                    "container"),
    "stats": Command(_CONTAINERS, "Display a live stream of container(s) resource usage "
                     "statistics"),
    "volume-create": Command(_VOLUMES, "Create a volume"),
    "volume-ls": Command(_VOLUMES, "List volumes"),
    "volume-inspect": Command(_VOLUMES, "Display detailed information on one or more volumes"),
    "volume-rm": Command(_VOLUMES, "Remove one or more volumes"),
    "volume-prune": Command(_VOLUMES, "Remove unused local volumes"),
    "network-create": Command(_NETWORKS, "Create a network"),
    "network-ls": Command(_NETWORKS, "List networks"),
    "network-inspect": Command(_NETWORKS, "Display detailed information on one or more "
                               "networks"),
    "network-rm": Command(_NETWORKS, "Remove one or more networks"),
    "network-prune": Command(_NETWORKS, "Remove all unused networks"),
    "network-connect": Command(_NETWORKS, "Connect a container to a network"),
    "network-disconnect": Command(_NETWORKS, "Disconnect a container from a network"),
    "cp": Command(_FILES, "Copy files/folders between a container and the local filesystem"),
    "diff": Command(_FILES, "Inspect changes to files or directories on a container's "
                    "filesystem"),
    "commit": Command(_FILES, "Create a new image from a container's changes"),
    "export": Command(_FILES, "Export a container's filesystem as a tar archive"),
    "events": Command("dockyard.cli.events", "Get real time events from the server"),
}
MANAGEMENT: dict[str, dict[str, str]] = {
    "network": {"create": "network-create", "ls": "network-ls", "list": "network-ls",
                "inspect": "network-inspect", "rm": "network-rm", "remove": "network-rm",
                "prune": "network-prune", "connect": "network-connect",
                "disconnect": "network-disconnect"},
    "volume": {"create": "volume-create", "ls": "volume-ls", "list": "volume-ls",
               "inspect": "volume-inspect", "rm": "volume-rm", "remove": "volume-rm",
               "prune": "volume-prune"},
    "image": {"ls": "images", "list": "images", "pull": "pull", "push": "push",
              "inspect": "image-inspect", "history": "history", "tag": "tag", "rm": "rmi",
              "save": "save", "load": "load", "import": "import", "prune": "image-prune",
              "bootstrap": "image-bootstrap", "build": "build"},
    "system": {"check": "system-check", "events": "events"},
    "container": {"ls": "ps", "list": "ps", "ps": "ps", "run": "run", "create": "create",
                  "start": "start", "stop": "stop", "kill": "kill", "rm": "rm",
                  "remove": "rm", "wait": "wait", "logs": "logs",
                  "inspect": "container-inspect", "exec": "exec", "attach": "attach",
                  "pause": "pause", "unpause": "unpause", "restart": "restart",
                  "rename": "rename", "update": "update", "prune": "container-prune",
                  "top": "top", "port": "port", "stats": "stats", "cp": "cp",
                  "diff": "diff", "commit": "commit", "export": "export"},
}


class UsageError(Exception):
    """A bad command line: docker prints it with the usage hint and exits 125."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # docker's flags take the next word as their value even when it starts with "-"
        # (`events --until -1m`); argparse does so only for plain negative numbers, and
        # this matcher is how it tells them from options: any "-" and a digit is a value.
        self._negative_number_matcher = re.compile(r"^-\d")

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _global_parser() -> _Parser:
    p = _Parser(prog="dockyard", add_help=False,
                description="A container engine with docker's command line.")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("-D", "--debug", action="store_true", help="show tracebacks")
    p.add_argument("--root", default=os.environ.get("DOCKYARD_ROOT", DEFAULT_ROOT),
                   help="where images, containers and volumes are kept")
    p.add_argument("--runroot", default=os.environ.get("DOCKYARD_RUNROOT", DEFAULT_RUNROOT),
                   help="state that dies with a reboot")
    p.add_argument("--storage-driver", default=os.environ.get("DOCKYARD_STORAGE_DRIVER"),
                   choices=("overlay", "vfs"), help="snapshotter (default: overlay if it works)")
    return p


def _usage() -> str:
    lines = ["Usage:  dockyard [OPTIONS] COMMAND", "",
             "A container engine with docker's command line.", "", "Commands:"]
    lines += [f"  {name:<12}{command.help}" for name, command in sorted(COMMANDS.items())
              if "-" not in name]
    if MANAGEMENT:
        lines += ["", "Management Commands:"]
        lines += [f"  {name:<12}Manage {name}s" for name in sorted(MANAGEMENT)]
    lines += ["", "Global Options:",
              "  --root DIR             where images and containers are kept "
              f"(default {DEFAULT_ROOT}, $DOCKYARD_ROOT)",
              "  --runroot DIR          state that dies with a reboot "
              f"(default {DEFAULT_RUNROOT}, $DOCKYARD_RUNROOT)",
              "  --storage-driver NAME  overlay or vfs (default: overlay where it works)",
              "  -D, --debug            show tracebacks",
              "  -v, --version          print the version and quit"]
    return "\n".join(lines) + "\n"


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Global options before the command word, and the rest from it on."""
    valued = {"--root", "--runroot", "--storage-driver"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in valued:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            break
    return argv[:i], argv[i:]


def _resolve(words: list[str]) -> tuple[str, list[str]]:
    """The command a command line names: ``image ls`` is ``images``, and so on."""
    first, rest = words[0], words[1:]
    if first in MANAGEMENT:
        if not rest or rest[0] in ("-h", "--help"):
            subs = ", ".join(sorted(MANAGEMENT[first]))
            raise UsageError(f'"dockyard {first}" requires a subcommand: {subs}')
        if rest[0] not in MANAGEMENT[first]:
            raise UsageError(f"unknown command \"{first} {rest[0]}\"")
        return MANAGEMENT[first][rest[0]], rest[1:]
    if first not in COMMANDS:
        raise UsageError(f"unknown command: \"{first}\"\nSee 'dockyard --help'")
    return first, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dockyard``; returns the exit status, or, run as the program
    (``argv`` None), exits with it (``_exit``)."""
    if argv is None:
        _exit(_command(sys.argv[1:]))
    return _command(list(argv))


def _exit(code: int) -> NoReturn:
    """End the program with ``code``, without the interpreter's teardown.

    That teardown (freeing every module and object of the command, and closing the
    state database, which makes SQLite checkpoint its WAL into the database file with
    fsyncs) took ~20 ms of a 100 ms ``exec``. Nothing is lost without it: every
    transaction is committed (the WAL is part of the database; a later commit
    checkpoints it once it grows), the exit handlers run (temporary directories...), threads other
    than daemons are waited for, and our output is flushed.
    """
    # No threading module imported, no thread to wait for.
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


def _command(args: list[str]) -> int:
    """Run the command line ``args``; its exit status."""
    debug = False
    try:
        head, words = _split(args)
        options = _global_parser().parse_args(head)
        debug = options.debug
        if options.version:
            print(f"dockyard version {__version__}")
            return 0
        if options.help or not words:
            print(_usage(), end="")
            return 0
        name, rest = _resolve(words)
        module = importlib.import_module(COMMANDS[name].module)
        parser = _Parser(prog=f"dockyard {name}", description=COMMANDS[name].help)
        declare: Callable[[argparse.ArgumentParser], None] = module.ARGUMENTS[name]
        declare(parser)
        command_args = parser.parse_args(rest)
        function = name.replace("-", "_")
        # `import` is a Python keyword: its function is `import_`.
        run: Callable[[argparse.Namespace, argparse.Namespace], int | None] = \
            getattr(module, function, None) or getattr(module, function + "_")
        return run(options, command_args) or 0
    except UsageError as e:
        print(f"dockyard: {e}", file=sys.stderr)
        return 125
    except DockyardError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"Error: {e}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `dockyard images | head`: the reader went away; that is not an error.
        sys.stderr.close()
        return 0


def exit_code(error: DockyardError) -> int:
    """The status a failed command exits with: docker's 1, or the error's own 64 (a
    template that does not parse), 126 or 127."""
    return error.exit_code if error.exit_code in (64, 126, 127) else 1
