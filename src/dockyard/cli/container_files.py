"""The commands on a container's files: cp, diff, commit and export, with docker's
flags, output and exit codes.

``cp`` follows docker's rules for its destination: an existing directory receives the
source by its name (or, for a source ending in ``/.``, its contents); an existing file
is replaced by a file; a missing path is the new name of the source, in a parent
directory that must exist. A path in the container is resolved in its root, always.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable
from typing import Any

from dockyard.cli.containers import service
from dockyard.cli.prompting import parse_bool, write_archive
from dockyard.errors import DockyardError, InvalidArgument


def _split_spec(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` as (container, path); a local path as (None, path). As docker,
    an argument starting with ``/`` or ``.`` is local even with a colon in it."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    container, _, path = arg.partition(":")
    return container, path


def _in_container(path: str) -> str:
    """A container path as docker reads it: relative to the container's root."""
    return path if path.startswith("/") else "/" + path


def _daemon_error(e: DockyardError) -> int:
    print(f"Error response from daemon: {e}", file=sys.stderr)
    return 1


def cp(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker cp CONTAINER:SRC DEST`` and ``docker cp SRC CONTAINER:DEST``."""
    src_container, src = _split_spec(args.src)
    dest_container, dest = _split_spec(args.dest)
    if src_container is not None and dest_container is not None:
        raise InvalidArgument("copying between containers is not supported")
    if src_container is None and dest_container is None:
        raise InvalidArgument("must specify at least one container source")
    containers = service(options)
    try:
        if src_container is not None:
            _copy_out(containers, src_container, _in_container(src), dest, args)
        else:
            assert dest_container is not None
            _copy_in(containers, src, dest_container, _in_container(dest), args)
    except DockyardError as e:
        return _daemon_error(e)
    return 0


def _copy_out(containers: Any, container: str, src: str, dest: str,
              args: argparse.Namespace) -> None:
    """From the container to ``dest`` on the host, or to stdout as a tar for ``-``."""
    from dockyard.engine import container_files as files

    if dest == "-":
        files.copy_from(containers, container, src, sys.stdout.buffer,
                        follow_link=args.follow_link)
        return
    with tempfile.TemporaryFile() as spool:
        found = files.copy_from(containers, container, src, spool,
                                follow_link=args.follow_link)
        spool.seek(0)
        if os.path.isdir(dest):
            # Into the directory: by its own name, or its contents for "SRC/.".
            files.unpack(spool, dest, keep_owner=True)
            return
        if os.path.lexists(dest):
            if found.is_dir:
                raise InvalidArgument(f'cannot overwrite non-directory "{dest}" with '
                                      f'directory "{src}"')
        elif dest.endswith("/") and not found.is_dir:
            raise InvalidArgument(f"destination directory {dest} does not exist: make it "
                                  "first, or name the file without a trailing /")
        parent, name = os.path.split(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise InvalidArgument(f"destination directory {parent} does not exist")
        files.unpack(spool, parent, keep_owner=True, rename=(found.name, name))


def _copy_in(containers: Any, src: str, container: str, dest: str,
             args: argparse.Namespace) -> None:
    """From ``src`` on the host (a tar on stdin for ``-``) into the container."""
    from dockyard.engine import container_files as files
    from dockyard.errors import NotFound

    if src == "-":
        files.copy_to(containers, container, dest, sys.stdin.buffer, keep_owner=args.archive)
        return
    if not os.path.lexists(src):
        raise InvalidArgument(f'could not find the file {src}: no such file or directory')
    src_is_dir = os.path.isdir(src) and (args.follow_link or not os.path.islink(src))
    try:
        target = files.stat_path(containers, container, dest, follow_link=True)
    except NotFound:
        target = None
    if target is not None and target.is_dir:
        directory = dest
        name = "." if src.endswith(("/.", "/./")) and src_is_dir else \
            os.path.basename(os.path.normpath(src))
    elif target is not None and src_is_dir:
        raise InvalidArgument(f'cannot overwrite non-directory "{dest}" with directory '
                              f'"{src}"')
    elif target is None and dest.endswith("/") and not src_is_dir:
        raise NotFound(f"Could not find the file {dest} in container {container}")
    else:
        directory, name = os.path.split(dest.rstrip("/") or "/")
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT,
                          dereference=args.follow_link) as tar:
            tar.add(src, arcname=name)
        spool.seek(0)
        files.copy_to(containers, container, directory or "/", spool,
                      keep_owner=args.archive)


def diff(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker diff``: ``A``, ``C`` and ``D`` lines, one per changed path."""
    from dockyard.engine.container_files import changes

    for change in changes(service(options), args.container):
        print(change)
    return 0


def commit(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker commit``: prints the new image's ID."""
    from dockyard.engine.container_files import commit as commit_container

    info = commit_container(service(options), args.container, args.reference,
                            changes=args.change, message=args.message, author=args.author,
                            pause=args.pause)
    print(info.id)
    return 0


def export(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker export``: to ``-o FILE`` or to a redirected stdout."""
    from dockyard.engine.container_files import export as export_container

    containers = service(options)
    write_archive(args.output, lambda out: export_container(containers, args.container, out))
    return 0


# --- flags ------------------------------------------------------------------------------


def _cp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--archive", action="store_true",
                   help="keep the owners (uid:gid) of the files copied")
    p.add_argument("-L", "--follow-link", action="store_true",
                   help="copy what a symlink in SRC points to")
    p.add_argument("-q", "--quiet", action="store_true", help="accepted; prints nothing")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")


def _diff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", metavar="CONTAINER")


def _commit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--author")
    p.add_argument("-c", "--change", action="append", default=[])
    p.add_argument("-m", "--message")
    p.add_argument("-p", "--pause", type=parse_bool, default=True, nargs="?", const=True,
                   help="pause the container while committing (default true)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output")
    p.add_argument("container", metavar="CONTAINER")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "cp": _cp_args, "diff": _diff_args, "commit": _commit_args, "export": _export_args,
}
