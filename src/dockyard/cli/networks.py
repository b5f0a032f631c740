"""The network commands: ``network create``, ``ls``, ``inspect``, ``rm``, ``prune``,
``connect`` and ``disconnect``, with docker's flags and output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dockyard.cli.formatting import format_rows, print_inspected
from dockyard.cli.prompting import confirm, parse_filters
from dockyard.errors import DockyardError, InvalidArgument, NotFound

if TYPE_CHECKING:
    from dockyard.engine.containers import ContainerService


def service(options: argparse.Namespace) -> ContainerService:
    """The container service of the chosen root (its ``networks`` is the network
    service; connecting a container needs both)."""
    from dockyard.engine.containers import ContainerService

    return ContainerService(options.root, options.runroot,
                            storage_driver=options.storage_driver)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise InvalidArgument(f'invalid argument "{value}" for "{flag}" flag: '
                                  "a KEY=VALUE pair is expected")
        pairs[key] = item
    return pairs


def _split_by_family(values: list[str], flag: str) -> tuple[str | None, str | None]:
    """The IPv4 and the IPv6 value of a flag given once per family (``--subnet``)."""
    import ipaddress

    found: dict[int, str] = {}
    for value in values:
        try:
            version = ipaddress.ip_network(value, strict=False).version
        except ValueError:
            try:
                version = ipaddress.ip_address(value).version
            except ValueError:
                raise InvalidArgument(f"invalid {flag} {value}") from None
        if version in found:
            raise InvalidArgument(f"dockyard takes one {flag} per address family")
        found[version] = value
    return found.get(4), found.get(6)


def network_create(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network create``: prints the network's ID."""
    subnet, subnet6 = _split_by_family(args.subnet, "--subnet")
    gateway, gateway6 = _split_by_family(args.gateway, "--gateway")
    ip_range, _ = _split_by_family(args.ip_range, "--ip-range")
    network_id = service(options).networks.create(
        args.name, driver=args.driver, subnet=subnet, gateway=gateway, ip_range=ip_range,
        internal=args.internal, ipv6=args.ipv6, subnet6=subnet6, gateway6=gateway6,
        options=_pairs(args.opt, "-o, --opt"), labels=_pairs(
            [v if "=" in v else v + "=" for v in args.label], "--label"))
    print(network_id)
    return 0


def network_ls(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network ls``."""
    networks = service(options).networks.ls(parse_filters(args.filter))
    if args.quiet:
        for network in networks:
            print(network["Id"] if args.no_trunc else network["Id"][:12])
        return 0
    rows = [{"ID": n["Id"] if args.no_trunc else n["Id"][:12], "Name": n["Name"],
             "Driver": n["Driver"], "Scope": n["Scope"],
             "IPv6": str(n["EnableIPv6"]).lower(), "Internal": str(n["Internal"]).lower(),
             "CreatedAt": n["Created"],
             "Labels": ",".join(f"{k}={v}" for k, v in sorted(n["Labels"].items()))}
            for n in networks]
    output = format_rows(rows, args.format,
                         "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
                         {"ID": "NETWORK ID"})
    if output:
        print(output)
    return 0


def network_inspect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network inspect``: a JSON array, or ``--format`` per network."""
    networks = service(options).networks
    found, failed = [], []
    for name in args.names:
        try:
            found.append(networks.inspect(name))
        except DockyardError as e:
            failed.append(str(e))
    return print_inspected(found, failed, args.format)


def network_rm(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network rm``: each in turn; a failure does not stop the others."""
    networks = service(options).networks
    status = 0
    for name in args.names:
        try:
            networks.remove(name)
            print(name)
        except DockyardError as e:
            if args.force and isinstance(e, NotFound):
                continue
            print(f"Error response from daemon: {e}", file=sys.stderr)
            status = 1
    return status


def network_prune(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network prune``: the user networks no container uses."""
    filters = parse_filters(args.filter)
    for key in filters:
        if key != "label":
            raise InvalidArgument(f"invalid filter '{key}'")
    if not args.force and not confirm("WARNING! This will remove all custom networks not "
                                      "used by at least one container."):
        return 0
    removed = service(options).networks.prune(filters.get("label", []))
    if removed:
        print("Deleted Networks:")
        print("\n".join(removed))
    return 0


def network_connect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network connect``."""
    from dockyard.engine.options import RunFlags, networking_config

    settings = networking_config(RunFlags(network=args.network, ip=args.ip, ip6=args.ip6,
                                          network_alias=args.alias))
    service(options).connect(args.container, args.network,
                             settings.endpoints_config[args.network]
                             if settings and settings.endpoints_config else None)
    return 0


def network_disconnect(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker network disconnect``."""
    service(options).disconnect(args.container, args.network, force=args.force)
    return 0


# --- flags -------------------------------------------------------------------------------


def _create_args(p: argparse.ArgumentParser) -> None:
    many: dict[str, Any] = {"action": "append", "default": []}
    p.add_argument("-d", "--driver", default="bridge")
    p.add_argument("--subnet", **many, help="CIDR, once per address family")
    p.add_argument("--gateway", **many)
    p.add_argument("--ip-range", **many)
    p.add_argument("--internal", action="store_true", help="no way out of the network")
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--label", **many, metavar="KEY=VALUE")
    p.add_argument("-o", "--opt", **many, metavar="KEY=VALUE",
                   help="com.docker.network.bridge.name=, com.docker.network.driver.mtu=")
    p.add_argument("--attachable", action="store_true", help="accepted; no effect")
    p.add_argument("name", metavar="NETWORK")


def _ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only network IDs")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="driver=, id=, label=, name=, scope=, type=custom|builtin")
    p.add_argument("--format", help="a Go template, 'table ...' or json")
    p.add_argument("--no-trunc", action="store_true")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format")
    p.add_argument("-v", "--verbose", action="store_true", help="accepted; no effect")
    p.add_argument("names", nargs="+", metavar="NETWORK")


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true",
                   help="no error for a network that does not exist")
    p.add_argument("names", nargs="+", metavar="NETWORK")


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="do not ask")
    p.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE]")


def _connect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--ip")
    p.add_argument("--ip6")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")


def _disconnect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "network-create": _create_args, "network-ls": _ls_args,
    "network-inspect": _inspect_args, "network-rm": _rm_args,
    "network-prune": _prune_args, "network-connect": _connect_args,
    "network-disconnect": _disconnect_args,
}
