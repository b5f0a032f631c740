"""IP address management: which subnet a new network gets, which address a container gets.

Pure logic but for ``host_routes`` (one netlink dump): the engine keeps the allocated
addresses in its database and builds a ``Pool`` from them for each allocation, so
nothing here holds state between commands.

Like Docker, a network without ``--subnet`` takes the first of ``DEFAULT_POOLS`` that
overlaps neither another network nor a route or an address of the host, a container
takes the lowest free address of the subnet (or of ``--ip-range``), and the network
address, the IPv4 broadcast address and the gateway are never handed out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from dockyard.errors import Conflict, InvalidArgument, Unavailable

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Docker's default address pools: 172.17.0.0/16 to 172.31.0.0/16, then 192.168.0.0/16
# cut in /20s.
DEFAULT_POOLS: tuple[IPv4Network, ...] = (
    *(IPv4Network(f"172.{b}.0.0/16") for b in range(17, 32)),
    *IPv4Network("192.168.0.0/16").subnets(new_prefix=20),
)


def parse_subnet(text: str) -> IPNetwork:
    """``--subnet``/``--ip-range`` text to a network; host bits set are refused, as
    Docker does, since they hide a typing mistake."""
    if "/" not in text:
        raise InvalidArgument(f"invalid CIDR address: {text}")
    try:
        interface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {text}") from None
    network = interface.network
    if interface.ip != network.network_address:
        raise InvalidArgument(f"invalid subnet {text}: it should be {network}")
    return network


def parse_address(text: str) -> IPAddress:
    """An address given by the user (``--ip``, ``--gateway``)."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidArgument(f"invalid IP address: {text}") from None


def host_routes() -> list[IPNetwork]:
    """The destinations of the host's routes in the main table (default routes left
    out; a route exists for the subnet of each address), IPv4 and IPv6 but link-local
    and multicast: a new network must overlap none of them.

    Read from the kernel's text of the table in /proc (of this thread's network
    namespace): one file read, on the path of a ``run``.
    """
    found: set[IPNetwork] = set()
    with open("/proc/thread-self/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            destination, mask = (IPv4Address(int(v, 16).to_bytes(4, sys.byteorder))
                                 for v in (fields[1], fields[7]))
            if int(mask):
                found.add(IPv4Network(f"{destination}/{mask}", strict=False))
    with contextlib.suppress(FileNotFoundError), \
            open("/proc/thread-self/net/ipv6_route") as f:  # absent with ipv6.disable=1
        for line in f:
            destination, length = line.split()[:2]
            network = IPv6Network((int(destination, 16), int(length, 16)), strict=False)
            if network.prefixlen and not (network.is_link_local or network.is_multicast):
                found.add(network)
    return sorted(found, key=lambda n: (n.version, n))


def overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    """Whether two networks share an address (never across address families)."""
    return a.version == b.version and a.overlaps(b)  # type: ignore[arg-type]


def choose_subnet(taken: Iterable[IPNetwork], *,
                  host: Iterable[IPNetwork] | None = None) -> IPv4Network:
    """The first of ``DEFAULT_POOLS`` overlapping neither ``taken`` (the subnets of the
    other networks) nor ``host`` (``host_routes()`` when not given)."""
    used = [*taken, *(host_routes() if host is None else host)]
    for candidate in DEFAULT_POOLS:
        if not any(overlaps(candidate, other) for other in used):
            return candidate
    raise Unavailable("could not find an available, non-overlapping IPv4 address pool "
                      "among the defaults to assign to the network")


def default_gateway(subnet: IPNetwork) -> IPAddress:
    """Docker's gateway of a subnet given without ``--gateway``: its first address."""
    if subnet.num_addresses < 4:
        raise InvalidArgument(f"subnet {subnet} is too small for a network: "
                              "use a prefix of at most /30 (IPv4) or /126 (IPv6)")
    return subnet.network_address + 1


class Pool:
    """The addresses of one subnet of a network, and which of them are taken.

    ``gateway`` (the bridge's address, ``default_gateway(subnet)`` when ``None``) must be
    in the subnet and ``ip_range`` (where containers' addresses are taken from, the
    whole subnet when ``None``) inside it: ``InvalidArgument`` otherwise, with Docker's
    messages. ``allocated`` is not copied: ``allocate`` and ``release`` update it.
    """

    def __init__(self, subnet: IPNetwork, gateway: IPAddress | None = None,
                 ip_range: IPNetwork | None = None,
                 allocated: set[IPAddress] | None = None) -> None:
        self.gateway = default_gateway(subnet) if gateway is None else gateway
        if self.gateway.version != subnet.version or self.gateway not in subnet:
            raise InvalidArgument(f"no matching subnet for gateway {self.gateway}")
        if ip_range is not None and not (ip_range.version == subnet.version
                                         and ip_range.subnet_of(subnet)):  # type: ignore[arg-type]
            raise InvalidArgument(f"no matching subnet for range {ip_range}")
        self.subnet = subnet
        self.ip_range = subnet if ip_range is None else ip_range
        self.allocated: set[IPAddress] = set() if allocated is None else allocated

    def _reserved(self, address: IPAddress) -> bool:
        if address in (self.subnet.network_address, self.gateway):
            return True
        return self.subnet.version == 4 and address == self.subnet.broadcast_address

    def allocate(self, preferred: IPAddress | None = None) -> IPAddress:
        """Take ``preferred`` (``--ip``) or else the lowest free address of the range.

        ``preferred`` outside the subnet or the range is ``InvalidArgument``; taken, or
        one of the subnet's reserved addresses, is ``Conflict``; a full range is
        ``Unavailable``.
        """
        if preferred is not None:
            if preferred.version != self.subnet.version or preferred not in self.ip_range:
                raise InvalidArgument(f"Invalid address {preferred}: It does not belong to "
                                      "any of this network's subnets")
            if preferred in self.allocated or self._reserved(preferred):
                raise Conflict(f"Address already in use: {preferred}")
            self.allocated.add(preferred)
            return preferred
        # Walking from the start costs one step per taken address, which stays small
        # even for an IPv6 /64 where listing the hosts would never end.
        address = self.ip_range.network_address
        last = self.ip_range.broadcast_address
        while address <= last:
            if address not in self.allocated and not self._reserved(address):
                self.allocated.add(address)
                return address
            address += 1
        family = "IPv4" if self.subnet.version == 4 else "IPv6"
        raise Unavailable(f"no available {family} addresses on this network's address "
                          f"pools: {self.ip_range} is full")

    def release(self, address: IPAddress) -> None:
        """Give ``address`` back (nothing if it was not taken)."""
        self.allocated.discard(address)


def mac_for(ip: IPAddress) -> str:
    """Docker's MAC address of an endpoint: 02:42 then the four bytes of its IPv4
    address (the last four of an IPv6 one), locally administered and unicast."""
    tail = ip.packed[-4:]
    return "02:42:" + ":".join(f"{b:02x}" for b in tail)

