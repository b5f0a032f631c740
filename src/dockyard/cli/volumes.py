"""The volume commands: ``volume create``, ``ls``, ``inspect``, ``rm`` and ``prune``,
with docker's flags and output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from dockyard.cli.formatting import format_rows, human_size, print_inspected
from dockyard.cli.prompting import confirm, parse_filters
from dockyard.errors import DockyardError, InvalidArgument

if TYPE_CHECKING:
    from dockyard.engine.volumes import VolumeService


def service(options: argparse.Namespace) -> VolumeService:
    """The volume service of the chosen root; it knows which volumes containers use, so
    that ``volume rm`` and ``volume prune`` leave those alone."""
    from dockyard.engine.containers import ContainerService

    return ContainerService(options.root, options.runroot,
                            storage_driver=options.storage_driver).volumes


def _pairs(values: list[str]) -> dict[str, str]:
    # docker's map options: `key=value`, or a bare `key` for an empty value.
    return {key: value for key, _, value in (v.partition("=") for v in values)}


def volume_create(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker volume create``: prints the volume's name."""
    if args.name and args.volume and args.name != args.volume:
        raise InvalidArgument("conflicting options: either specify --name or provide "
                              "positional arg, not both")
    volume = service(options).create(args.name or args.volume, driver=args.driver,
                                      options=_pairs(args.opt), labels=_pairs(args.label))
    print(volume["Name"])
    return 0


def volume_ls(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker volume ls``."""
    volumes = service(options).ls(parse_filters(args.filter))
    if args.quiet:
        for volume in volumes:
            print(volume["Name"])
        return 0
    rows = [{"Name": v["Name"], "Driver": v["Driver"], "Scope": v["Scope"],
             "Mountpoint": v["Mountpoint"],
             "Labels": ",".join(f"{k}={value}" for k, value in v["Labels"].items()),
             "Links": "N/A", "Size": "N/A"} for v in volumes]
    output = format_rows(rows, args.format, "table {{.Driver}}\t{{.Name}}",
                         {"Name": "VOLUME NAME"})
    if output:
        print(output)
    return 0


def volume_inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker volume inspect``: a JSON array, or ``--format`` per volume."""
    volumes = service(options)
    found, failed = [], []
    for name in args.names:
        try:
            found.append(volumes.inspect(name))
        except DockyardError as e:
            failed.append(str(e))
    return print_inspected(found, failed, args.format)


def volume_rm(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker volume rm``: each volume in turn; a failure does not stop the others."""
    volumes = service(options)
    status = 0
    for name in args.names:
        try:
            volumes.remove(name, force=args.force)
            print(name)
        except DockyardError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def volume_prune(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker volume prune``: anonymous volumes no container uses, or all with -a."""
    what = "all local volumes" if args.all else "anonymous local volumes"
    if not args.force and not confirm(f"WARNING! This will remove {what} not used by at "
                                       "least one container."):
        return 0
    deleted, reclaimed = service(options).prune(all=args.all, filters=parse_filters(args.filter))
    if deleted:
        print("Deleted Volumes:")
        print("\n".join(deleted))
        print()
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0


# --- flags -------------------------------------------------------------------------------


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="the volume's name (or give it as the argument)")
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="driver options: type=, device=, o=")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("volume", nargs="?", metavar="VOLUME")


def _ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only volume names")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="dangling=true|false, name=, driver=, label=KEY[=VALUE]")
    p.add_argument("--format", help="a Go template, 'table ...' or json")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format")
    p.add_argument("names", nargs="+", metavar="VOLUME")


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true",
                   help="no error for a volume that does not exist")
    p.add_argument("names", nargs="+", metavar="VOLUME")


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true",
                   help="named volumes too, not only anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="do not ask")
    p.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE]")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "volume-create": _create_args, "volume-ls": _ls_args, "volume-inspect": _inspect_args,
    "volume-rm": _rm_args, "volume-prune": _prune_args,
}
