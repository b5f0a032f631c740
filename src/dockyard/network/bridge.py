"""The bridge driver: a Linux bridge per network, a veth pair per container endpoint.

Everything is netlink through pyroute2, in this process: no ``ip`` command is run. The
container's end of a veth pair is created directly inside its network namespace (the
namespace's file descriptor goes in the request), so no interface ever has the
container's name (``eth0``) in the host's namespace, where it would clash with the
host's own. Its addresses and routes are then set through a netlink socket opened
inside that namespace (a socket belongs to the namespace of the thread that created
it: a short thread ``setns``es there, opens it and ends).

Names: the default network's bridge is ``dockyard0``, a user network's ``dy-`` + 12 hex
chars of its ID; host ends of veth pairs are ``dy`` + 11 hex chars of a hash of
(container ID, network ID): stable across restarts, and recognisable for leak checks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TYPE_CHECKING, Any

from dockyard.errors import (
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SystemFailure,
)
from dockyard.linux import syscalls as sc

if TYPE_CHECKING:
    from pyroute2 import IPRoute

DEFAULT_BRIDGE = "dockyard0"
VETH_PREFIX = "dy"
NETLINK_ROUTE = 0
_IFA_F_NODAD = 0x02
_BRIDGE_MODE_HAIRPIN = 1


def bridge_name(network_id: str) -> str:
    """The bridge of a user network (without ``com.docker.network.bridge.name``)."""
    return "dy-" + network_id[:12]


def host_ifname(container_id: str, network_id: str) -> str:
    """The host end of the veth pair of a container on a network."""
    digest = hashlib.sha256(f"{container_id}\0{network_id}".encode()).hexdigest()
    return VETH_PREFIX + digest[:11]


def _route() -> IPRoute:
    # pyroute2 imports all of itself and asyncio: 0.1-0.2 s on an idle host, the
    # largest part by far of what a network costs a ``run``; so only when one is needed.
    from pyroute2 import IPRoute

    return IPRoute()


def _errno(e: Exception) -> int:
    code = getattr(e, "code", None)  # pyroute2's NetlinkError
    return code if isinstance(code, int) else getattr(e, "errno", 0) or 0


@contextlib.contextmanager
def _failing(what: str) -> Iterator[None]:
    """Netlink errors as ``SystemFailure`` naming the step that failed."""
    try:
        yield
    except DockyardError:
        raise
    except Exception as e:
        code = _errno(e)
        if not code:
            raise
        if code in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(f"{what}: {os.strerror(code)} (networking needs "
                                   "root, or CAP_NET_ADMIN)") from e
        raise SystemFailure(f"{what}: {os.strerror(code)}") from e


@contextlib.contextmanager
def _unless(code: int) -> Iterator[None]:
    """Ignore the failure ``code`` (an errno) of a netlink request: the state wanted."""
    try:
        yield
    except Exception as e:
        if _errno(e) != code:
            raise


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "r+") as f:
        if f.read().strip() != value:
            f.seek(0)
            f.write(value)


def ensure_bridge(name: str, addresses: Sequence[IPv4Interface | IPv6Interface],
                  mtu: int | None = None) -> None:
    """Make the bridge ``name`` exist, with ``addresses`` (the gateways, with their
    prefix) and ``mtu``, up; idempotent. Also turns on what routing to containers
    needs: IPv4 (and, with an IPv6 address, IPv6) forwarding, and ``route_localnet`` on
    the bridge so that a port published on 127.0.0.1 can be DNATed out of it."""
    if not 0 < len(name) < 16 or name in (".", "..") or any(
            c in "/:" or c.isspace() for c in name):
        raise InvalidArgument(f"invalid bridge name {name!r}: an interface name has 1 to "
                              "15 characters, none of them '/', ':' or white space")
    with _route() as ipr, _failing(f"cannot set up the bridge {name}"):
        index = _index(ipr, name)
        if index is None:
            with _unless(errno.EEXIST):  # made meanwhile by another process
                ipr.link("add", ifname=name, kind="bridge", **({"mtu": mtu} if mtu else {}))
            index = _index(ipr, name)
        else:
            (link,) = ipr.get_links(index)
            info = link.get_attr("IFLA_LINKINFO")
            if info is None or info.get_attr("IFLA_INFO_KIND") != "bridge":
                raise Conflict(f"cannot use {name} as a network's bridge: an interface "
                               "of that name exists and is not a bridge")
            if mtu and link.get_attr("IFLA_MTU") != mtu:
                ipr.link("set", index=index, mtu=mtu)
        present = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
        for address in addresses:
            if (str(address.ip), address.network.prefixlen) not in present:
                with _unless(errno.EEXIST):
                    ipr.addr("add", index=index, address=str(address.ip),
                             prefixlen=address.network.prefixlen, **_nodad(address))
        ipr.link("set", index=index, state="up")
    _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")
    if any(a.version == 6 for a in addresses):
        _write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")


def _nodad(address: IPv4Interface | IPv6Interface) -> dict[str, Any]:
    # Duplicate address detection would keep a new IPv6 address "tentative", unusable,
    # for a second or more; on a bridge whose addresses dockyard hands out it is moot.
    return {"flags": _IFA_F_NODAD} if address.version == 6 else {}


def _delete_link(name: str, what: str) -> None:
    with _route() as ipr, _failing(what):
        index = _index(ipr, name)
        if index is not None:
            with _unless(errno.ENODEV):  # gone meanwhile
                ipr.link("del", index=index)


def delete_bridge(name: str) -> None:
    """Remove the bridge ``name`` (its addresses and routes go with it); idempotent."""
    _delete_link(name, f"cannot delete the bridge {name}")


def links(prefix: str) -> list[str]:
    """The names of the host's interfaces that start with ``prefix``."""
    return sorted(name for _, name in socket.if_nameindex() if name.startswith(prefix))


def _netns_socket(ns_fd: int) -> socket.socket:
    """A netlink socket inside the network namespace ``ns_fd``.

    ``setns`` moves only the calling thread, and a socket stays in the namespace it was
    created in: a thread of its own moves, opens the socket and ends, so this process's
    other threads never leave the host's namespace, even on error.
    """
    result: list[socket.socket | BaseException] = []

    def enter_and_open() -> None:
        try:
            sc.setns(ns_fd, sc.CLONE_NEWNET)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=enter_and_open, name="dockyard-netns")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


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
        with _route() as ipr, _failing(f"cannot connect {host_ifname} to {bridge}"):
            master = _index(ipr, bridge)
            if master is None:
                raise NotFound(f"bridge {bridge} not found: the network must be set up first")
            if mtu is None:
                mtu = ipr.get_links(master)[0].get_attr("IFLA_MTU")
            peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": ns_fd, "mtu": mtu}
            if mac:
                peer["address"] = mac
            stale = _index(ipr, host_ifname)
            if stale is not None:
                ipr.link("del", index=stale)
            ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, master=master,
                     peer=peer)
            index = _index(ipr, host_ifname)
            ipr.brport("set", index=index, mode=_BRIDGE_MODE_HAIRPIN)
            ipr.link("set", index=index, state="up")
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
    from pyroute2 import IPRoute

    sock = _netns_socket(ns_fd)
    with IPRoute(fileno=sock.detach()) as ns, \
            _failing(f"cannot configure {ifname} in the container's namespace"):
        index = _index(ns, ifname)
        for address in addresses:
            ns.addr("add", index=index, address=str(address.ip),
                    prefixlen=address.network.prefixlen, **_nodad(address))
        ns.link("set", index=index, state="up")
        for gateway in gateways:
            family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
            with _unless(errno.EEXIST):
                ns.route("add", family=family, dst="0.0.0.0/0" if gateway.version == 4
                         else "::/0", gateway=str(gateway), oif=index)


def detach(host_ifname: str) -> None:
    """Remove the veth pair whose host end is ``host_ifname`` (deleting one end deletes
    both); idempotent."""
    _delete_link(host_ifname, f"cannot delete {host_ifname}")
