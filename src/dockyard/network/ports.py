"""Published ports: parsing ``-p`` as Docker does, and checking a host port is free.

Publishing itself is kernel NAT (``firewall``): no process listens on the host port, so
a port taken by another of dockyard's containers is seen in the engine's database, not
here; ``check_free`` sees the host's other programs, by trying to bind the port.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass, replace

from dockyard.errors import Conflict, InvalidArgument

PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class PortBinding:
    """One container port published on the host.

    ``host_ip`` is ``""`` for every address of the host; ``host_port`` 0 means "a free
    port chosen at start", and with ``host_port_end`` set, ``host_port``-``host_port_end``
    is the range to choose it in (``-p 8000-8010:80``).
    """

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0


def _port_range(text: str) -> tuple[int, int]:
    """``"80"`` or ``"8000-8010"`` to (first, last); ValueError if malformed."""
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise ValueError(text)
    low, high = int(first), int(last) if sep else int(first)
    if high > 65535 or low > high:
        raise ValueError(text)
    return low, high


def parse_publish(spec: str) -> list[PortBinding]:
    """The bindings of one ``-p``/``--publish`` value, one per container port.

    ``PORT``, ``HOSTPORT:PORT``, ``IP:HOSTPORT:PORT``, ``IP::PORT``, ranges on both sides
    (of equal length; or a host range with one container port: a free port among them),
    ``/tcp`` (the default), ``/udp`` or ``/sctp``, IPv6 host addresses in brackets.
    """
    rest, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid proto: {proto}")
    host_ip = host_port = ""
    container_port = rest
    if rest.startswith("["):  # [IPv6]:HOSTPORT:PORT
        address, bracket, after = rest[1:].partition("]")
        if not bracket or not after.startswith(":"):
            raise InvalidArgument(f"invalid IP address: {rest}")
        host_ip = address
        host_port, sep, container_port = after[1:].rpartition(":")
        if not sep:
            raise InvalidArgument(f"invalid publish spec {spec!r}: a host address needs "
                                  "a host port (IP:HOSTPORT:PORT, or IP::PORT)")
    elif rest.count(":") >= 2:
        host_ip, host_port, container_port = rest.rsplit(":", 2)
    elif ":" in rest:
        host_port, container_port = rest.split(":")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise InvalidArgument(f"invalid IP address: {host_ip}") from None
        if host_ip in ("0.0.0.0", "::"):
            host_ip = ""
    if not container_port:
        raise InvalidArgument(f"no port specified: {spec}<empty>")
    try:
        first, last = _port_range(container_port)
        if first == 0:
            raise ValueError(container_port)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {container_port}") from None
    host_first = host_last = 0
    if host_port:
        try:
            host_first, host_last = _port_range(host_port)
        except ValueError:
            raise InvalidArgument(f"invalid hostPort: {host_port}") from None
    if host_port and first != last and host_last - host_first != last - first:
        raise InvalidArgument("invalid ranges specified for container and host Ports: "
                              f"{container_port} and {host_port}")
    if first == last:
        return [PortBinding(first, proto, host_ip, host_first,
                            host_last if host_last != host_first else 0)]
    return [PortBinding(port, proto, host_ip, host_first + i if host_first else 0)
            for i, port in enumerate(range(first, last + 1))]


def _family(host_ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host_ip else socket.AF_INET


def _socket(proto: str, host_ip: str) -> socket.socket | None:
    """A socket to try ``proto`` ports with; None for sctp on a kernel without it (its
    module not loaded), where no sctp port can be in use."""
    family = _family(host_ip)
    if proto == "udp":
        return socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM,
                             socket.IPPROTO_SCTP if proto == "sctp" else 0)
    except OSError as e:
        if proto == "sctp" and e.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
            return None
        raise
    # A connection in TIME_WAIT does not keep a server from listening on its port
    # (SO_REUSEADDR, as every server sets); a listening socket does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _bind(sock: socket.socket, host_ip: str, port: int) -> None:
    sock.bind((host_ip or "0.0.0.0", port))
    if sock.type == socket.SOCK_STREAM:
        sock.listen()


def free_port(proto: str = "tcp", host_ip: str = "") -> int:
    """A port of ``proto`` that nothing on the host uses now on ``host_ip`` (every
    address when ``""``), as the kernel picks one for a bind to port 0."""
    # Without sctp in the kernel any number is free: the kernel's pick for TCP will do.
    with _socket(proto, host_ip) or socket.socket(_family(host_ip)) as sock:
        _bind(sock, host_ip, 0)
        port: int = sock.getsockname()[1]
        return port


def check_free(binding: PortBinding) -> None:
    """Raise ``Conflict`` (Docker's message) if a program of the host holds the port.

    Binding the address Docker's proxy would bind is the only exact test: a listener
    on any address of the host takes the port from ``host_ip`` too.
    """
    sock = _socket(binding.proto, binding.host_ip)
    if sock is None:
        return
    with sock:
        try:
            _bind(sock, binding.host_ip, binding.host_port)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise InvalidArgument(f"cannot publish port {binding.host_port} on "
                                      f"{binding.host_ip or '0.0.0.0'}: {e.strerror}") from None
            raise _allocated(binding.host_ip, str(binding.host_port)) from None


def _allocated(host_ip: str, ports: str) -> Conflict:
    return Conflict(f"Bind for {host_ip or '0.0.0.0'}:{ports} failed: port is already "
                    "allocated")


def resolve(binding: PortBinding, taken: Collection[tuple[str, int]] = ()) -> PortBinding:
    """``binding`` with its host port decided: checked free if given, else the first free
    port of its range or a free port. ``taken`` holds the (proto, port) pairs that other
    containers of dockyard publish, which no socket of the host shows."""
    if binding.host_port and not binding.host_port_end:
        if (binding.proto, binding.host_port) in taken:
            raise _allocated(binding.host_ip, str(binding.host_port))
        check_free(binding)
        return binding
    if not binding.host_port:
        while True:
            port = free_port(binding.proto, binding.host_ip)
            if (binding.proto, port) not in taken:
                return replace(binding, host_port=port)
    for port in range(binding.host_port, binding.host_port_end + 1):
        candidate = replace(binding, host_port=port, host_port_end=0)
        with contextlib.suppress(Conflict):
            return resolve(candidate, taken)
    raise _allocated(binding.host_ip, f"{binding.host_port}-{binding.host_port_end}")
