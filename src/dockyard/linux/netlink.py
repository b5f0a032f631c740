"""Route netlink (rtnetlink): links, addresses and routes, over a plain socket.

Only what the bridge driver needs: bridges and veth pairs (the peer made directly in
another network namespace), the attributes of a link (up, MTU, master, MAC address,
name), hairpin mode of a bridge port, IPv4/IPv6 addresses and default routes. Written
with ``socket`` and ``struct`` from the kernel's uapi headers (``linux/netlink.h``,
``rtnetlink.h``, ``if_link.h``, ``if_addr.h``, ``veth.h``), because a netlink library
costs more to import (0.1-0.3 s) than all the requests of a container's start take.

The protocol, as used here: a request is a ``nlmsghdr`` (length, type, flags, sequence
number, port id) followed by a fixed header of its family (``ifinfomsg``, ``ifaddrmsg``,
``rtmsg``) and attributes (type-length-value, 4-byte aligned; nested ones hold more
attributes). Every request asks for an acknowledgement (``NLM_F_ACK``): the kernel
answers with its result messages, if any, then an ``NLMSG_ERROR`` whose error is 0 or
``-errno``; a dump (``NLM_F_DUMP``) ends with ``NLMSG_DONE`` instead. Each failure is an
``OSError`` with that errno (``EEXIST``, ``ENODEV``, ``EPERM``...), and the kernel's own
explanation when it gives one (extended ACK); what a request cannot carry (a name with a
NUL in it, a malformed MAC address) is a ``ValueError``, and nothing is sent.

A netlink socket acts in the network namespace it was created in, whatever namespace
its user is in later: ``RouteSocket(netns_fd=...)`` is one made inside another.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import TypeVar

from dockyard.linux import syscalls as sc

T = TypeVar("T")

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: only the request's header is echoed
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: attributes follow the echoed request
NLA_F_NESTED = 1 << 15
NLA_TYPE_MASK = ~((1 << 15) | (1 << 14))  # without NLA_F_NESTED, NLA_F_NET_BYTEORDER
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1

# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTN_UNICAST = 1
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_TABLE_MAIN = 254
RTA_OIF = 4
RTA_GATEWAY = 5
RTEXT_FILTER_SKIP_STATS = 1 << 3

# linux/if_link.h, linux/veth.h
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_PROTINFO = 12
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_BRPORT_MODE = 4
VETH_INFO_PEER = 1
IFF_UP = 0x1

# linux/if_addr.h
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_F_NODAD = 0x02

_CREATE = NLM_F_CREATE | NLM_F_EXCL  # a new object, or EEXIST

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol,
#                                       scope, type, flags
_NLATTR = struct.Struct("=HH")  # length, type
_ERRNO = struct.Struct("=i")

# Dumps come in datagrams the kernel sizes to the reader's buffer, at most 32 KiB.
_RECV_SIZE = 64 * 1024


@dataclass(frozen=True)
class Link:
    """A network interface as RTM_GETLINK describes it."""

    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "bridge", "veth"...; None for a physical one, lo
    mtu: int


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _name(kind: int, name: str) -> bytes:
    # The kernel reads a name up to its first NUL: "a\0b" would make "a".
    if "\0" in name:
        raise ValueError(f"embedded null character in the interface name {name!r}")
    return _attr(kind, name.encode() + b"\0")


def _mac(mac: str) -> bytes:
    try:
        return _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
    except ValueError:
        raise ValueError(f"invalid MAC address {mac!r}") from None


def _link_attrs(*, name: str | None = None, mtu: int | None = None,
                master: int | None = None, mac: str | None = None,
                netns_fd: int | None = None) -> bytes:
    """The IFLA_* attributes of what is given."""
    attrs = b""
    if name is not None:
        attrs += _name(IFLA_IFNAME, name)
    if mtu is not None:
        attrs += _u32(IFLA_MTU, mtu)
    if master is not None:
        attrs += _u32(IFLA_MASTER, master)
    if mac is not None:
        attrs += _mac(mac)
    if netns_fd is not None:
        attrs += _u32(IFLA_NET_NS_FD, netns_fd)
    return attrs


def _attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in ``data`` from ``offset``, by type (the last of a repeated one)."""
    found = {}
    while offset + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _NLATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _link(payload: bytes) -> Link:
    _, _, index, _, _ = _IFINFOMSG.unpack_from(payload)
    attrs = _attrs(payload, _IFINFOMSG.size)
    kind = _attrs(attrs.get(IFLA_LINKINFO, b"")).get(IFLA_INFO_KIND)
    return Link(index=index, name=attrs[IFLA_IFNAME].rstrip(b"\0").decode(),
                kind=kind.rstrip(b"\0").decode() if kind is not None else None,
                mtu=struct.unpack("=I", attrs[IFLA_MTU])[0])


def _ifinfo(index: int = 0, *, family: int = socket.AF_UNSPEC, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFOMSG.pack(family, 0, index, flags, 0 if up is None else IFF_UP)


def _family(address: IPv4Address | IPv6Address) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def in_netns(netns_fd: int, function: Callable[[], T]) -> T:
    """``function()``'s result, called in the network namespace ``netns_fd``.

    ``setns`` moves only the calling thread: a thread of its own moves, calls and ends,
    so this process's other threads never leave their namespace, even on error. What
    the namespace of a task decides is then the namespace's: a socket made there, the
    sysctls of /proc/sys/net opened there.
    """
    def enter_and_call() -> T:
        sc.setns(netns_fd, sc.CLONE_NEWNET)
        return function()

    return sc.call_in_thread(enter_and_call)


def _open_in_netns(netns_fd: int) -> socket.socket:
    """A netlink socket created inside the network namespace ``netns_fd``."""
    return in_netns(netns_fd, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                                    socket.NETLINK_ROUTE))


class RouteSocket:
    """A NETLINK_ROUTE socket in this thread's network namespace, or in the one of
    ``netns_fd``. Requests are made one at a time, each waiting for its answer.
    Use it as a context manager, or ``close()`` it."""

    def __init__(self, netns_fd: int | None = None) -> None:
        if netns_fd is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        else:
            self._sock = _open_in_netns(netns_fd)
        try:
            # Errors carry the kernel's message, and echo only the request's header.
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = itertools.count(1)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, kind: int, body: bytes, what: str, *, flags: int = 0,
                 dump: bool = False) -> list[bytes]:
        """Send one request; the payloads of the messages answering it.

        ``what`` names the request in an error: ``OSError(errno, "what: strerror...")``.
        """
        # (NLM_F_DUMP's bits mean NLM_F_EXCL... in a request that is not a GET.)
        flags |= NLM_F_REQUEST | NLM_F_ACK | (NLM_F_DUMP if dump else 0)
        while True:
            seq = next(self._seq)
            header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0)
            self._sock.send(header + body)
            answers, consistent = self._receive(seq, dump, what)
            if consistent:
                return answers

    def _receive(self, seq: int, dump: bool, what: str) -> tuple[list[bytes], bool]:
        """The payloads answering the request ``seq``, and whether they are consistent:
        a dump spans several datagrams, and when the objects changed in between the
        kernel marks it (something may be missing or seen twice); it is asked again."""
        answers: list[bytes] = []
        consistent = True
        while True:
            for msg_type, msg_flags, payload in self._messages(self._sock.recv(_RECV_SIZE), seq):
                consistent = consistent and not msg_flags & NLM_F_DUMP_INTR
                if msg_type not in (NLMSG_ERROR, NLMSG_DONE):
                    answers.append(payload)
                    continue
                code = -_ERRNO.unpack_from(payload)[0] if payload else 0
                if code:
                    raise self._error(code, msg_flags, payload, what)
                if msg_type == NLMSG_DONE or not dump:
                    return answers, consistent

    @staticmethod
    def _messages(data: bytes, seq: int) -> Iterator[tuple[int, int, bytes]]:
        """(type, flags, payload) of the messages in ``data`` that answer ``seq``; any
        other is a leftover of an earlier request that failed half way."""
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, msg_type, msg_flags, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size:
                break
            if msg_seq == seq:
                yield msg_type, msg_flags, data[offset + _NLMSGHDR.size:offset + length]
            offset += (length + 3) & ~3

    @staticmethod
    def _error(code: int, flags: int, payload: bytes, what: str) -> OSError:
        message = os.strerror(code)
        if flags & NLM_F_ACK_TLVS:
            # The error, the request's echoed header (or all of it, without CAP_ACK),
            # then the attributes.
            echoed = _NLMSGHDR.unpack_from(payload, _ERRNO.size)[0]
            skip = _NLMSGHDR.size if flags & NLM_F_CAPPED else echoed
            text = _attrs(payload, _ERRNO.size + skip).get(NLMSGERR_ATTR_MSG)
            if text:
                message += " (" + text.rstrip(b"\0").decode(errors="replace") + ")"
        return OSError(code, f"{what}: {message}")

    # -- links -----------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None when there is none."""
        try:
            (payload,) = self._request(RTM_GETLINK, _ifinfo() + _name(IFLA_IFNAME, name)
                                       + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS),
                                       f"get link {name}")
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return _link(payload)

    def links(self) -> list[Link]:
        """Every link of the namespace."""
        return [_link(payload) for payload in self._request(
            RTM_GETLINK, _ifinfo() + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS),
            "list links", dump=True)]

    def new_bridge(self, name: str, *, mtu: int | None = None) -> None:
        """Create the bridge ``name`` (down); ``EEXIST`` if a link has that name."""
        self._request(RTM_NEWLINK, _ifinfo() + _link_attrs(name=name, mtu=mtu)
                      + _attr(IFLA_LINKINFO, _name(IFLA_INFO_KIND, "bridge")),
                      f"create bridge {name}", flags=_CREATE)

    def new_veth(self, name: str, peer: str, *, peer_netns_fd: int | None = None,
                 mtu: int | None = None, peer_mtu: int | None = None,
                 master: int | None = None, peer_mac: str | None = None) -> None:
        """Create the veth pair ``name`` - ``peer`` (both down), the peer directly in the
        network namespace ``peer_netns_fd`` when given, so that its name never has to be
        free in this one; ``master`` is the index of a bridge to enslave ``name`` to."""
        # The peer's attributes follow an ifinfomsg of its own, inside the link's data.
        peer_info = _ifinfo() + _link_attrs(name=peer, netns_fd=peer_netns_fd, mtu=peer_mtu,
                                            mac=peer_mac)
        info = _name(IFLA_INFO_KIND, "veth") + _attr(IFLA_INFO_DATA,
                                                     _attr(VETH_INFO_PEER, peer_info))
        self._request(RTM_NEWLINK, _ifinfo() + _link_attrs(name=name, mtu=mtu, master=master)
                      + _attr(IFLA_LINKINFO, info), f"create veth pair {name}", flags=_CREATE)

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None,
                 master: int | None = None, mac: str | None = None,
                 name: str | None = None) -> None:
        """Change what is given of the link ``index``: up or down, MTU, master (a bridge's
        index; 0 to release it), MAC address, name."""
        self._request(RTM_NEWLINK, _ifinfo(index, up=up) + _link_attrs(
            name=name, mtu=mtu, master=master, mac=mac), f"set link {index}")

    def set_hairpin(self, index: int, on: bool) -> None:
        """Hairpin mode of the bridge port ``index``: whether the bridge may send a frame
        back out of the port it came in by (a container reaching itself through NAT)."""
        # A bridge port's own settings go through the bridge family's setlink, nested in
        # IFLA_PROTINFO (the kernel reads it as nested only with NLA_F_NESTED set).
        mode = _attr(IFLA_BRPORT_MODE, bytes([1 if on else 0]))
        self._request(RTM_SETLINK, _ifinfo(index, family=socket.AF_BRIDGE)
                      + _attr(IFLA_PROTINFO | NLA_F_NESTED, mode), f"set hairpin of link {index}")

    def delete_link(self, index: int) -> None:
        """Delete the link ``index`` (a veth's peer goes with it); ``ENODEV`` if gone."""
        self._request(RTM_DELLINK, _ifinfo(index), f"delete link {index}")

    # -- addresses and routes --------------------------------------------------------

    def add_address(self, index: int, address: IPv4Interface | IPv6Interface,
                    flags: int = 0) -> None:
        """Add ``address`` (with its prefix) to the link ``index``; ``flags`` are IFA_F_*
        (IFA_F_NODAD: an IPv6 address usable at once). ``EEXIST`` if it is there."""
        packed = address.ip.packed
        body = _IFADDRMSG.pack(_family(address.ip), address.network.prefixlen, flags,
                               RT_SCOPE_UNIVERSE, index)
        self._request(RTM_NEWADDR, body + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed),
                      f"add address {address} to link {index}", flags=_CREATE)

    def add_default_route(self, index: int, gateway: IPv4Address | IPv6Address) -> None:
        """A default route via ``gateway`` out of the link ``index``, in the main table;
        ``EEXIST`` if there is one already."""
        body = _RTMSG.pack(_family(gateway), 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        self._request(RTM_NEWROUTE, body + _attr(RTA_GATEWAY, gateway.packed)
                      + _u32(RTA_OIF, index), f"add default route via {gateway}", flags=_CREATE)
