"""The bridge driver: a Linux bridge per network, a veth pair per container endpoint.

Everything is netlink (``dockyard.linux.netlink``), in this process: no ``ip`` command
is run. The container's end of a veth pair is created directly inside its network
namespace (the namespace's file descriptor goes in the request), so no interface ever
has the container's name (``eth0``) in the host's namespace, where it would clash with
the host's own. Its addresses and routes are then set through a netlink socket opened
inside that namespace (a socket belongs to the namespace it was created in).

Names: the default network's bridge is ``dockyard0``, a user network's ``dy-`` + 12 hex
chars of its ID; host ends of veth pairs are ``dy`` + 11 hex chars of a hash of
(container ID, network ID): stable across restarts, and recognisable for leak checks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from dockyard.errors import (
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SystemFailure,
)
from dockyard.linux.netlink import IFA_F_NODAD, RouteSocket, in_netns

DEFAULT_BRIDGE = "dockyard0"
VETH_PREFIX = "dy"


def bridge_name(network_id: str) -> str:
    """The bridge of a user network (without ``com.docker.network.bridge.name``)."""
    return "dy-" + network_id[:12]


def host_ifname(container_id: str, network_id: str) -> str:
    """The host end of the veth pair of a container on a network."""
    digest = hashlib.sha256(f"{container_id}\0{network_id}".encode()).hexdigest()
    return VETH_PREFIX + digest[:11]


@contextlib.contextmanager
def _failing(what: str) -> Iterator[None]:
    """Netlink errors as ``SystemFailure`` naming the step that failed."""
    try:
        yield
    except DockyardError:
        raise
    except ValueError as e:  # what netlink cannot encode: a MAC address, a name
        raise InvalidArgument(f"{what}: {e}") from e
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{what}: {os.strerror(e.errno)} (networking needs "
                                   "root, or CAP_NET_ADMIN)") from e
        raise SystemFailure(f"{what}: {e.strerror}") from e


@contextlib.contextmanager
def _unless(code: int) -> Iterator[None]:
    """Ignore the failure ``code`` (an errno) of a netlink request: the state wanted."""
    try:
        yield
    except OSError as e:
        if e.errno != code:
            raise


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "r+") as f:
        if f.read().strip() != value:
            f.seek(0)
            f.write(value)


def _nodad(address: IPv4Interface | IPv6Interface) -> int:
    # Duplicate address detection would keep a new IPv6 address "tentative", unusable,
    # for a second or more; on a bridge whose addresses dockyard hands out it is moot.
    return IFA_F_NODAD if address.version == 6 else 0


def ensure_bridge(name: str, addresses: Sequence[IPv4Interface | IPv6Interface],
                  mtu: int | None = None) -> None:
    """Make the bridge ``name`` exist, with ``addresses`` (the gateways, with their
    prefix) and ``mtu``, up; idempotent. Also turns on what routing to containers
    needs: IPv4 (and, with an IPv6 address, IPv6) forwarding, and ``route_localnet`` on
    the bridge so that a port published on 127.0.0.1 can be DNATed out of it."""
    if not 0 < len(name) < 16 or name in (".", "..") or any(
            c in "/:" or c.isspace() or c == "\0" for c in name):
        raise InvalidArgument(f"invalid bridge name {name!r}: an interface name has 1 to "
                              "15 characters, none of them '/', ':', NUL or white space")
    with RouteSocket() as nl, _failing(f"cannot set up the bridge {name}"):
        link = nl.link(name)
        if link is None:
            with _unless(errno.EEXIST):  # made meanwhile by another process
                nl.new_bridge(name, mtu=mtu or None)
            link = nl.link(name)
            if link is None:  # deleted meanwhile by another process
                raise SystemFailure(f"cannot set up the bridge {name}: it was deleted "
                                    "while being set up; try again")
        elif link.kind != "bridge":
            raise Conflict(f"cannot use {name} as a network's bridge: an interface "
                           "of that name exists and is not a bridge")
        elif mtu and link.mtu != mtu:
            nl.set_link(link.index, mtu=mtu)
        for address in addresses:
            with _unless(errno.EEXIST):  # set up before
                nl.add_address(link.index, address, _nodad(address))
        nl.set_link(link.index, up=True)
    _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
    if any(a.version == 6 for a in addresses):
        _write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")


def _delete_link(name: str, what: str) -> None:
    with RouteSocket() as nl, _failing(what):
        link = nl.link(name)
        if link is not None:
            with _unless(errno.ENODEV):  # gone meanwhile
                nl.delete_link(link.index)


def delete_bridge(name: str) -> None:
    """Remove the bridge ``name`` (its addresses and routes go with it); idempotent."""
    _delete_link(name, f"cannot delete the bridge {name}")


def links(prefix: str) -> list[str]:
    """The names of the host's interfaces that start with ``prefix``."""
    with RouteSocket() as nl, _failing("cannot list the network interfaces"):
        return sorted(link.name for link in nl.links() if link.name.startswith(prefix))


def attach(netns_path: str, bridge: str, *, host_ifname: str, ifname: str = "eth0",
           addresses: Sequence[IPv4Interface | IPv6Interface],
           gateways: Sequence[IPv4Address | IPv6Address], mac: str | None = None,
           mtu: int | None = None) -> None:
    """Connect the network namespace bind-mounted at ``netns_path`` to ``bridge``.

    A veth pair: ``host_ifname`` on the host, enslaved to the bridge with hairpin mode
    on, up; ``ifname`` in the namespace with ``mac``, ``mtu`` (the bridge's when not
    given) and ``addresses``, up, and a default route via each of ``gateways`` (none for
    an internal network; a default route the namespace has already, from another
    network, is kept). A stale pair of the same name (left by a crash) is replaced. On
    failure nothing is left.
    """
    try:
        ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NotFound(f"cannot attach to the network namespace {netns_path}: "
                       f"{e.strerror}") from None
    try:
        with RouteSocket() as nl, _failing(f"cannot connect {host_ifname} to {bridge}"):
            master = nl.link(bridge)
            if master is None:
                raise NotFound(f"bridge {bridge} not found: the network must be set up first")
            mtu = mtu or master.mtu
            stale = nl.link(host_ifname)
            if stale is not None:
                nl.delete_link(stale.index)
            nl.new_veth(host_ifname, ifname, peer_netns_fd=ns_fd, mtu=mtu, peer_mtu=mtu,
                        master=master.index, peer_mac=mac or None)
            veth = nl.link(host_ifname)
            if veth is None:  # deleted meanwhile by another process
                raise SystemFailure(f"cannot connect {host_ifname} to {bridge}: it was "
                                    "deleted while being set up; try again")
            nl.set_hairpin(veth.index, True)
            nl.set_link(veth.index, up=True)
        _configure_inside(ns_fd, ifname, addresses, gateways)
    except BaseException:
        with contextlib.suppress(Exception):
            detach(host_ifname)
        raise
    finally:
        os.close(ns_fd)


def _configure_inside(ns_fd: int, ifname: str,
                      addresses: Sequence[IPv4Interface | IPv6Interface],
                      gateways: Sequence[IPv4Address | IPv6Address]) -> None:
    with RouteSocket(ns_fd) as ns, \
            _failing(f"cannot configure {ifname} in the container's namespace"):
        link = ns.link(ifname)
        if link is None:
            raise SystemFailure(f"cannot configure {ifname} in the container's namespace: "
                                "it is gone")
        if any(address.version == 6 for address in addresses):
            _enable_ipv6(ns_fd, ifname)
        for address in addresses:
            ns.add_address(link.index, address, _nodad(address))
        ns.set_link(link.index, up=True)
        for gateway in gateways:
            with _unless(errno.EEXIST):
                ns.add_default_route(link.index, gateway)


def _enable_ipv6(ns_fd: int, ifname: str) -> None:
    """Turn IPv6 on for ``ifname`` in the namespace ``ns_fd``: a namespace made for
    IPv4 networks only has it off for new interfaces (``default/disable_ipv6``), and a
    network with IPv6 connected later needs it (an IPv6 address is refused there).

    Netlink cannot set IPv6's sysctls: the file is written from inside.
    """
    in_netns(ns_fd, lambda: _write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6",
                                          "0"))


def detach(host_ifname: str) -> None:
    """Remove the veth pair whose host end is ``host_ifname`` (deleting one end deletes
    both); idempotent."""
    _delete_link(host_ifname, f"cannot delete {host_ifname}")
