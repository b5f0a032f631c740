"""The embedded DNS server of user networks, like podman's aardvark-dns.

No daemon runs, so each user network with containers has its own small server process
(``python -m dockyard.network.dns``), listening on the network's gateway addresses. The
engine keeps its records file up to date (``write_records``) and starts and stops it
(``start``, ``stop``) under its network lock.

The records file (JSON, replaced atomically; the server re-reads it when its inode,
mtime or size changes, and exits when it is deleted)::

    {"records": {"web": ["172.18.0.2", "fd00::2"], ...},
     "upstreams": ["192.168.1.1", "10.0.0.53:5353", "[fd00::53]:53"],
     "search": ["example.org"],
     "clients": {"172.18.0.3": {"records": {"db": ["172.19.0.2"]},
                                "upstreams": ["192.0.2.53"]}}}

``clients`` (optional) gives a client, by its source address, names of its own after
the network's (a container on several networks asks the server of its first one: the
names of its other networks are its own) and upstreams of its own (its ``--dns``, as
Docker's resolver forwards to them); ``[]`` means the file's.

What the server answers, like Docker's embedded resolver:

- A, AAAA (and ANY) of a record's name, matched case-insensitively, with or without a
  trailing dot, also as ``name.DOMAIN`` for each search domain: authoritative, TTL 600.
  Any other type of a record's name (AAAA of a name with IPv4 addresses only, MX...) is
  NOERROR without answers: an NXDOMAIN from upstream would tell the resolver the name
  does not exist at all, and it would cache that for the A query too.
- PTR of a record's address: the first name listed with that address.
- Everything else is forwarded to the upstreams in order (UDP; TCP when the answer is
  truncated or the client asked over TCP; the next upstream on a timeout, an error,
  SERVFAIL or REFUSED), and the answer relayed; SERVFAIL when none answers. NXDOMAIN
  comes only from an upstream.
- Over UDP an answer larger than the client takes (512 bytes, or its EDNS payload size)
  is sent truncated (TC, no records): the client asks again over TCP.
- A packet that is not a query is dropped; a malformed query gets FORMERR, an opcode
  other than QUERY NOTIMP. No packet stops the server.
- Only the network's containers (the addresses of its records, and ``clients``) and
  the host itself (any address of its own) are answered; others get REFUSED.
  The gateway address is reachable from other networks and maybe other hosts: they
  must neither learn this network's names nor use the server as an open resolver
  (Docker's resolver, inside each container's namespace, has no such neighbours).

Forwarding loops: an upstream that is one of the server's own addresses and port is
left out, and a query is forwarded with the client's ID, so a query that comes back
(the same ID and question while it is still being forwarded: a loop through another
resolver) is dropped instead of forwarded once more.

The process: one thread serves the UDP sockets and accepts TCP connections; forwarded
UDP queries and TCP connections are served by threads started as needed and ended once
idle (``_Workers``: at most 64 of each; beyond that UDP queries wait in a bounded queue,
then are dropped, which the client retries, and a connection is closed).
It imports only small modules of the standard library (no dataclasses, typing or
asyncio), so it starts in about 35 ms and takes about 13 MiB, 8 of which are the
interpreter's own.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import ipaddress
import json
import os
import re
import select
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from dockyard.errors import Conflict, DockyardError, InvalidArgument, NotFound, SystemFailure

__all__ = ["record_pid", "running", "start", "stop", "write_records"]

_TTL = 600  # Docker's
_UPSTREAM_TIMEOUT = 2.0   # seconds for each upstream; resolvers give up after 5
_TCP_IDLE_TIMEOUT = 10.0  # a client connection with no query this long is closed
_MAX_THREADS = 64     # forwarding UDP queries; as many for TCP connections
_MAX_QUEUED = 1024    # UDP queries waiting for a forwarding thread
_START_TIMEOUT = 10.0
_STOP_GRACE = 2.0
_IP_FREEBIND, _IPV6_FREEBIND = 15, 78  # <linux/in.h>, <linux/in6.h>; not in socket
_OUR_UDP_SIZE = 1232  # the EDNS payload size we announce: no IP fragmentation (DNS flag day 2020)

# -- the wire format (RFC 1035; EDNS: RFC 6891) ---------------------------------------

_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
_RR = struct.Struct("!HHIH")        # type, class, ttl, rdlength (after the owner name)
_QR, _AA, _TC, _RD, _RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
_OPCODE_MASK = 0x7800
_NOERROR, _FORMERR, _SERVFAIL, _NOTIMP, _REFUSED = 0, 1, 2, 4, 5
_A, _PTR, _AAAA, _OPT, _ANY = 1, 12, 28, 41, 255
_IN = 1
_CLASS_ANY = 255
_POINTER_TO_QUESTION = b"\xc0\x0c"  # the question's name starts right after the header


class _Malformed(Exception):
    """A packet that does not parse as a DNS query."""


# Plain classes, not dataclasses: those import inspect, which costs the server's start
# 8 ms and its memory 4 MiB.
class _Query:
    """A parsed query."""

    __slots__ = ("edns_size", "flags", "id", "name", "qclass", "qtype", "question")

    def __init__(self, qid: int, flags: int, name: str | None, qtype: int, qclass: int,
                 question: bytes, edns_size: int | None) -> None:
        self.id = qid
        self.flags = flags
        self.name = name  # lower case, dotted, no trailing dot; None if no record can match
        self.qtype = qtype
        self.qclass = qclass
        self.question = question  # as received: a resolver may check the case it sent
        self.edns_size = edns_size  # the client's EDNS UDP payload size, None without EDNS

    def udp_limit(self) -> int:
        """The largest UDP answer the client takes."""
        return 512 if self.edns_size is None else max(512, self.edns_size)


def _parse_query(data: bytes) -> _Query:
    """The query in ``data``; raises ``_Malformed``."""
    if len(data) < _HEADER.size:
        raise _Malformed("shorter than a header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if qdcount != 1:
        raise _Malformed(f"{qdcount} questions")
    labels: list[bytes] = []
    pos = _HEADER.size
    while True:
        if pos >= len(data):
            raise _Malformed("the question's name runs past the end")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:  # a compression pointer or a reserved label type
            raise _Malformed("a compressed or extended label in the question")
        labels.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length
    if pos + 4 > len(data) or pos - _HEADER.size > 255:
        raise _Malformed("a truncated or too long question")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    pos += 4
    question = data[_HEADER.size:pos]
    edns_size = None
    for _ in range(ancount + nscount + arcount):
        rtype, rclass, pos = _skip_rr(data, pos)
        if rtype == _OPT:
            edns_size = rclass
    # A '.' inside a label or a byte beyond ASCII: a name no record has.
    name = None
    if all(label.isascii() and b"." not in label for label in labels):
        name = b".".join(labels).decode("ascii").lower()
    return _Query(qid, flags, name, qtype, qclass, question, edns_size)


def _skip_rr(data: bytes, pos: int) -> tuple[int, int, int]:
    """Type and class of the resource record at ``pos``, and where the next begins."""
    while True:
        if pos >= len(data):
            raise _Malformed("a record's name runs past the end")
        length = data[pos]
        if length >= 0xC0:  # a compression pointer ends the name
            pos += 2
            break
        pos += 1 + length
        if length == 0:
            break
    if pos + _RR.size > len(data):
        raise _Malformed("a truncated record")
    rtype, rclass, _, rdlength = _RR.unpack_from(data, pos)
    pos += _RR.size + rdlength
    if pos > len(data):
        raise _Malformed("a record's data runs past the end")
    return rtype, rclass, pos


def _encode_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def _opt(query: _Query) -> bytes:
    """Our OPT record when the client sent one (RFC 6891 6.1.1), else nothing."""
    return b"" if query.edns_size is None else b"\0" + _RR.pack(_OPT, _OUR_UDP_SIZE, 0, 0)


def _answer(query: _Query, rcode: int, records: list[tuple[int, bytes]]) -> bytes:
    """An answer to ``query``, authoritative unless an error: ``records`` are (type,
    rdata) of its name."""
    flags = _QR | _RA | (query.flags & _RD) | rcode | (0 if rcode else _AA)
    opt = _opt(query)
    head = _HEADER.pack(query.id, flags, 1, len(records), 0, 1 if opt else 0)
    body = b"".join(_POINTER_TO_QUESTION + _RR.pack(rtype, _IN, _TTL, len(rdata)) + rdata
                    for rtype, rdata in records)
    return head + query.question + body + opt


def _error(data: bytes, rcode: int) -> bytes:
    """A bare error answer (no question) to the packet ``data``, which may not parse."""
    qid, flags = struct.unpack_from("!HH", data)
    return _HEADER.pack(qid, _QR | _RA | (flags & (_RD | _OPCODE_MASK)) | rcode, 0, 0, 0, 0)


def _truncated(query: _Query, reply: bytes) -> bytes:
    """``reply``, too large for UDP, as its header with TC set and the question only."""
    flags = struct.unpack_from("!H", reply, 2)[0] | _TC
    opt = _opt(query)
    return _HEADER.pack(query.id, flags, 1, 0, 0, 1 if opt else 0) + query.question + opt


def _rcode(reply: bytes) -> int:
    return reply[3] & 0x0F


# -- the records file -------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_-]{1,63}")


def _dns_name(name: str) -> str | None:
    """``name`` in lower case without a trailing dot, or None if it is no DNS name."""
    normal = name.lower().removesuffix(".")
    if len(normal) > 253 or not all(_LABEL.fullmatch(label) for label in normal.split(".")):
        return None
    return normal


def _check_name(name: str, what: str) -> str:
    """``_dns_name(name)``; raises if it is no DNS name."""
    normal = _dns_name(name)
    if normal is None:
        raise InvalidArgument(f"invalid DNS {what} {name!r}: use labels of 1 to 63 letters, "
                              "digits, '_' and '-', separated by dots")
    return normal


def _parse_upstream(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` as (address, port)."""
    host, port = text, "53"
    bracketed = re.fullmatch(r"\[(.+)\](?::(\d{1,5}))?", text)
    if bracketed:
        host, port = bracketed[1], bracketed[2] or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address: str | None = str(ipaddress.ip_address(host))
    except ValueError:
        address = None
    if address is None or not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidArgument(f"invalid DNS upstream {text!r}: use IP, IP:PORT or "
                              "[IPv6]:PORT")
    return address, int(port)


def _parse_names(records: object) -> tuple[dict[str, tuple[list[bytes], list[bytes]]],
                                            dict[str, bytes]]:
    """The (A, AAAA) rdata by name and the PTR rdata by reverse name of a records
    mapping ``{name: [IP, ...]}``; raises InvalidArgument."""
    if not (isinstance(records, dict) and all(isinstance(ips, list)
                                              for ips in records.values())):
        raise InvalidArgument("DNS records must be {name: [IP, ...]}")
    addresses: dict[str, tuple[list[bytes], list[bytes]]] = {}
    pointers: dict[str, bytes] = {}
    for name, ips in records.items():
        normal = _check_name(str(name), "name")
        v4, v6 = addresses.setdefault(normal, ([], []))
        for text in ips:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise InvalidArgument(f"invalid IP address {text!r} for the DNS name "
                                      f"{name!r}") from None
            (v4 if ip.version == 4 else v6).append(ip.packed)
            pointers.setdefault(ip.reverse_pointer, _encode_name(normal))
    return addresses, pointers


class _View:
    """What one client (or every client) is answered: names, and the upstreams."""

    __slots__ = ("addresses", "pointers", "upstreams")

    def __init__(self, records: object, upstreams: object) -> None:
        self.addresses, self.pointers = _parse_names(records)
        if not isinstance(upstreams, list):
            raise InvalidArgument("DNS upstreams must be a list")
        self.upstreams = [_parse_upstream(str(u)) for u in upstreams]


class _Records:
    """What one version of the records file says, ready for lookups."""

    __slots__ = ("clients", "common", "search", "views")

    def __init__(self, common: _View, views: dict[str, _View], search: list[str]) -> None:
        self.common = common  # the network's names, for all its containers
        self.views = views    # a client's own: its other networks' names, its upstreams
        self.search = search
        # The containers of the network, by the addresses the kernel reports for them.
        self.clients = {socket.inet_ntop(socket.AF_INET if len(rdata) == 4
                                         else socket.AF_INET6, rdata)
                        for v4, v6 in common.addresses.values()
                        for rdata in (*v4, *v6)} | set(views)

    @classmethod
    def parse(cls, document: object) -> _Records:
        """The records of a records file's JSON ``document``; raises InvalidArgument."""
        if not isinstance(document, dict):
            raise InvalidArgument("a DNS records file must hold a JSON object")
        search = document.get("search", [])
        clients = document.get("clients", {})
        if not (isinstance(search, list) and isinstance(clients, dict)
                and all(isinstance(c, dict) for c in clients.values())):
            raise InvalidArgument("a DNS records file needs {name: [IP, ...]} records, "
                                  "lists of upstreams and search domains, and "
                                  "{IP: {records, upstreams}} clients")
        common = _View(document.get("records", {}), document.get("upstreams", []))
        views = {}
        for address, client in clients.items():
            try:
                key = str(ipaddress.ip_address(address))
            except ValueError:
                raise InvalidArgument(f"invalid DNS client address {address!r}") from None
            view = _View(client.get("records", {}), client.get("upstreams", []))
            if not view.upstreams:
                view.upstreams = common.upstreams
            views[key] = view
        return cls(common, views, [_check_name(str(d), "search domain") for d in search])

    def view(self, client: str) -> _View | None:
        """The client's own view, if it has one."""
        return self.views.get(client)

    def lookup(self, name: str, client: str) -> tuple[list[bytes], list[bytes]] | None:
        """The (A, AAAA) rdata of ``name`` or of ``name`` less a search domain, among
        the network's names, then the client's own."""
        views = [self.common, *filter(None, [self.view(client)])]
        candidates = [name, *(name[:-len(domain) - 1] for domain in self.search
                              if name.endswith("." + domain))]
        for candidate in candidates:
            for view in views:
                found = view.addresses.get(candidate)
                if found is not None:
                    return found
        return None

    def pointer(self, name: str, client: str) -> bytes | None:
        """The PTR rdata of the reverse name ``name`` for ``client``."""
        for view in (self.common, self.view(client)):
            if view is not None and name in view.pointers:
                return view.pointers[name]
        return None

    def upstreams(self, client: str) -> list[tuple[str, int]]:
        """Where the client's other queries go."""
        view = self.view(client)
        return view.upstreams if view is not None else self.common.upstreams


def _normal(records: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """``records`` with the names no DNS query can ask for left out, and names that
    differ only in case merged."""
    names: dict[str, list[str]] = {}
    for name, ips in records.items():
        normal = _dns_name(name)
        if normal is not None:
            merged = names.setdefault(normal, [])
            merged += [ip for ip in ips if ip not in merged]
    return names


def write_records(path: str, records: Mapping[str, list[str]], upstreams: list[str],
                  search: Iterable[str] = (),
                  clients: Mapping[str, tuple[Mapping[str, list[str]], list[str]]]
                  | None = None) -> None:
    """Replace the records file at ``path`` atomically.

    ``records`` maps names (container names, aliases, short IDs) to their IPv4 and IPv6
    addresses; the first name listed with an address answers its PTR query.
    ``upstreams`` are the resolvers other names are forwarded to (``IP``, or
    ``IP:PORT`` / ``[IPv6]:PORT``); a name is also answered as ``name.DOMAIN`` for each
    ``search`` domain. ``clients`` gives some clients, by address, more names (after
    ``records``: those of the other networks a container is on) and upstreams of their
    own (``[]``: ``upstreams``); a client's address is a container's on the network,
    or one of ``clients``. A running server reads the new file at its next query.

    Names and search domains that no DNS query can ask for (``my alias``, ``a..b``: Docker
    takes them as container names and aliases) are left out, as Docker's resolver never
    matches them; names that differ only in case are merged. Raises ``InvalidArgument``
    for a malformed address or upstream.
    """
    from dockyard.storage.durable import replace_file  # not needed by the server

    domains = [d for d in map(_dns_name, search) if d is not None]
    document: dict[str, object] = {"records": _normal(records), "upstreams": list(upstreams),
                                   "search": domains}
    if clients:
        document["clients"] = {address: {"records": _normal(names),
                                         "upstreams": list(own)}
                               for address, (names, own) in clients.items()}
    _Records.parse(document)  # refuse now what the server would refuse later
    replace_file(path, json.dumps(document, indent=1).encode() + b"\n")


# -- the server -------------------------------------------------------------------------


def _log(message: str) -> None:
    """A line in the server's log (its stderr, the log file next to the pidfile)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


def _log_bug() -> None:
    """Log the exception being handled: a bug must cost one query, not the network its
    DNS."""
    import traceback  # only once a bug shows

    _log(f"error, the query is dropped:\n{traceback.format_exc()}")


def _read_message(stream: io.BufferedReader) -> bytes | None:
    """One message of a DNS TCP stream (a 2-byte length first: RFC 1035 4.2.2), or None
    at its end."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    size = struct.unpack("!H", head)[0]
    data = stream.read(size)
    return data if len(data) == size else None


def _tcp_frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def _is_local(address: str) -> bool:
    """Whether ``address`` is one of the host's: the kernel lets a socket bind it.

    The host's own queries may come from any of its addresses: the kernel picks the
    source, and a masquerade rule may change it. (Where net.ipv4.ip_nonlocal_bind is set,
    every address passes: the server then answers anyone, as a plain resolver does.)
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _file_key(path: str) -> tuple[int, int, int]:
    """What changes when the file at ``path`` is replaced or written."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


class _Workers:
    """Runs jobs on up to ``size`` threads, each started for a job when all are busy and
    ended when no job waits: an idle server keeps its main thread only."""

    def __init__(self, size: int, queued: int) -> None:
        self.size = size
        self.queued = queued
        self.running = 0
        self.waiting: collections.deque[tuple[Callable[..., None], tuple[object, ...]]] = \
            collections.deque()
        self.lock = threading.Lock()

    def submit(self, job: Callable[..., None], *args: object) -> bool:
        """Run ``job(*args)`` now or later; False if it cannot be taken (too many)."""
        with self.lock:
            if self.running < self.size:
                try:
                    threading.Thread(target=self._run, args=(job, args), daemon=True).start()
                except RuntimeError:  # no thread to be had (memory, pids limit)
                    return False
                self.running += 1
            elif len(self.waiting) < self.queued:
                self.waiting.append((job, args))
            else:
                return False
        return True

    def _run(self, job: Callable[..., None], args: tuple[object, ...]) -> None:
        while True:
            try:
                job(*args)
            except Exception:
                _log_bug()
            # Under the lock that submit takes: no job is left waiting with no thread.
            with self.lock:
                if not self.waiting:
                    self.running -= 1
                    return
                job, args = self.waiting.popleft()


class _Server:
    """The server's state: sockets, the current records, queries being forwarded."""

    def __init__(self, records_path: str, listen: list[str], port: int) -> None:
        self.records_path = records_path
        self.own = {(str(ipaddress.ip_address(address)), port) for address in listen}
        self.records_key = _file_key(records_path)
        self.records = self._read()
        self.udp_workers = _Workers(_MAX_THREADS, _MAX_QUEUED)
        self.tcp_workers = _Workers(_MAX_THREADS, 0)
        self.forwarding: set[tuple[int, bytes]] = set()
        self.forwarding_lock = threading.Lock()
        self.failing: set[tuple[str, int]] = set()  # the upstreams that did not answer
        self.udp: list[socket.socket] = []
        self.tcp: list[socket.socket] = []
        for address in sorted(self.own):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                sock = self._bind(address, kind)
                (self.udp if kind == socket.SOCK_DGRAM else self.tcp).append(sock)

    @staticmethod
    def _bind(address: tuple[str, int], kind: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, kind)
        try:
            # The gateway address of a bridge that just got it may still be tentative
            # (IPv6 duplicate address detection) or not there yet: bind anyway, the
            # kernel delivers to the socket once the address is up.
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            if kind == socket.SOCK_STREAM:
                sock.listen(64)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            where = f"{address[0]} port {address[1]}"
            if e.errno == errno.EADDRINUSE:
                raise Conflict(f"cannot serve DNS on {where}: the port is taken") from None
            raise SystemFailure(f"cannot serve DNS on {where}: {e.strerror}") from None
        return sock

    def _read(self) -> _Records:
        with open(self.records_path, "rb") as f:
            records = _Records.parse(json.loads(f.read()))
        # The upstreams that are this server: forwarding to them would loop.
        for view in (records.common, *records.views.values()):
            view.upstreams = [u for u in view.upstreams if u not in self.own]
        return records

    def current(self) -> _Records:
        """The records for the next query: read again when the file changed."""
        try:
            key = _file_key(self.records_path)
        except OSError:
            return self.records  # deleted: the main loop exits within a second
        if key != self.records_key:
            self.records_key = key  # a bad version is reported once, not at each query
            try:
                self.records = self._read()
            except (OSError, ValueError, DockyardError) as e:
                _log(f"keeping the previous records: {self.records_path}: {e}")
        return self.records

    # -- answering ----------------------------------------------------------------------

    def local_answer(self, data: bytes, client: str) -> tuple[_Query | None, bytes | None]:
        """(query, answer) for a packet from the address ``client``: no query to drop it,
        no answer to forward it."""
        if len(data) < _HEADER.size or data[2] & 0x80:  # too short, or a response: drop
            return None, None
        records = self.current()
        if client not in records.clients and not _is_local(client):
            return None, _error(data, _REFUSED)
        try:
            query = _parse_query(data)
        except _Malformed:
            return None, _error(data, _FORMERR)
        if query.flags & _OPCODE_MASK:
            return None, _error(data, _NOTIMP)
        if query.name is None or query.qclass not in (_IN, _CLASS_ANY):
            return query, None
        pointer = records.pointer(query.name, client) if query.qtype == _PTR else None
        if pointer is not None:
            return query, _answer(query, _NOERROR, [(_PTR, pointer)])
        found = records.lookup(query.name, client)
        if found is None:
            return query, None
        v4, v6 = found
        answers = []
        if query.qtype in (_A, _ANY):
            answers += [(_A, rdata) for rdata in v4]
        if query.qtype in (_AAAA, _ANY):
            answers += [(_AAAA, rdata) for rdata in v6]
        return query, _answer(query, _NOERROR, answers)

    def forward(self, query: _Query, data: bytes, tcp: bool, client: str) -> bytes | None:
        """The answer of the upstreams of ``client`` to ``data``, SERVFAIL if none
        answers, None if looping."""
        key = (query.id, query.question.lower())
        with self.forwarding_lock:
            if key in self.forwarding:
                return None
            self.forwarding.add(key)
        try:
            for upstream in self.records.upstreams(client):
                try:
                    reply = self._ask(upstream, data, tcp)
                except OSError as e:
                    # Once while it fails, not at each query: the log would grow without end.
                    if upstream not in self.failing:
                        self.failing.add(upstream)
                        _log(f"upstream {upstream[0]} port {upstream[1]} fails: {e}")
                    continue
                if upstream in self.failing:
                    self.failing.discard(upstream)
                    _log(f"upstream {upstream[0]} port {upstream[1]} answers again")
                if reply is not None and _rcode(reply) not in (_SERVFAIL, _REFUSED):
                    return reply
            return _answer(query, _SERVFAIL, [])
        finally:
            with self.forwarding_lock:
                self.forwarding.discard(key)

    def _ask(self, upstream: tuple[str, int], data: bytes, tcp: bool) -> bytes | None:
        """The answer of one upstream: over TCP if asked so or if the UDP one is
        truncated (that one, if TCP fails: the client may try TCP itself)."""
        if tcp:
            return self._ask_tcp(upstream, data)
        reply = self._ask_udp(upstream, data)
        if reply[2] & (_TC >> 8):
            with contextlib.suppress(OSError):
                return self._ask_tcp(upstream, data) or reply
        return reply

    @staticmethod
    def _ask_udp(upstream: tuple[str, int], data: bytes) -> bytes:
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            # Connected: the kernel drops datagrams from any other address and port, and
            # turns an ICMP "port unreachable" into an error at once.
            sock.connect(upstream)
            sock.send(data)
            deadline = time.monotonic() + _UPSTREAM_TIMEOUT
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                reply = sock.recv(65535)
                # Not ours (a late answer to a retry): wait on for ours.
                if len(reply) >= _HEADER.size and reply[:2] == data[:2] and reply[2] & 0x80:
                    return reply

    @staticmethod
    def _ask_tcp(upstream: tuple[str, int], data: bytes) -> bytes | None:
        with socket.create_connection(upstream, timeout=_UPSTREAM_TIMEOUT) as sock, \
                sock.makefile("rb") as stream:
            sock.sendall(_tcp_frame(data))
            reply = _read_message(stream)
        return reply if reply is not None and reply[:2] == data[:2] else None

    # -- the loop and the workers -------------------------------------------------------

    def serve(self) -> None:
        """Serve until SIGTERM or the records file is deleted."""
        selector = selectors.DefaultSelector()
        for sock in self.udp:
            selector.register(sock, selectors.EVENT_READ, self._on_udp)
        for sock in self.tcp:
            selector.register(sock, selectors.EVENT_READ, self._on_tcp)
        while os.path.exists(self.records_path):
            for key, _ in selector.select(timeout=1.0):
                try:
                    key.data(key.fileobj)
                except Exception:
                    _log_bug()
        _log(f"{self.records_path} was deleted: exiting")

    def _on_udp(self, sock: socket.socket) -> None:
        while True:
            try:
                data, client = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error of an earlier reply: nothing to do
                continue
            query, answer = self.local_answer(data, client[0])
            if answer is not None:
                self._send_udp(sock, client, query, answer)
            elif query is not None:
                self.udp_workers.submit(self._forward_udp, sock, client, query, data)

    def _send_udp(self, sock: socket.socket, client: tuple[str, int],
                  query: _Query | None, answer: bytes) -> None:
        if query is not None and len(answer) > query.udp_limit():
            answer = _truncated(query, answer)
        with contextlib.suppress(OSError):
            sock.sendto(answer, client)

    def _forward_udp(self, sock: socket.socket, client: tuple[str, int], query: _Query,
                     data: bytes) -> None:
        answer = self.forward(query, data, tcp=False, client=client[0])
        if answer is not None:
            self._send_udp(sock, client, query, answer)

    def _on_tcp(self, listener: socket.socket) -> None:
        try:
            conn, client = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if not self.tcp_workers.submit(self._serve_connection, conn, client[0]):
            conn.close()

    def _serve_connection(self, conn: socket.socket, client: str) -> None:
        """Answer the queries of one TCP connection until it closes or idles."""
        try:
            with conn, conn.makefile("rb") as stream:
                conn.settimeout(_TCP_IDLE_TIMEOUT)
                while (data := _read_message(stream)) is not None:
                    query, answer = self.local_answer(data, client)
                    if answer is None and query is not None:
                        answer = self.forward(query, data, tcp=True, client=client)
                    if answer is None:
                        return
                    conn.sendall(_tcp_frame(answer))
        except OSError:
            pass


def _serve(records_path: str, listen: list[str], port: int, ready: int) -> int:
    """The server process's main: report "ok PID" or "error KIND TEXT" on ``ready``."""
    try:
        server = _Server(records_path, listen, port)
    except (OSError, ValueError, DockyardError) as e:
        kind = type(e).__name__ if isinstance(e, DockyardError) else "SystemFailure"
        os.write(ready, f"error {kind} {e}".encode())
        return 1
    # execve keeps the caller's blocked and ignored signals: undo what it may have set.
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    threading.stack_size(256 * 1024)  # the workers need little: less memory mapped
    os.write(ready, f"ok {os.getpid()}".encode())
    os.close(ready)
    _log(f"serving {records_path} on port {port} of {', '.join(listen)}")
    server.serve()
    return 0


# -- the engine's side ------------------------------------------------------------------


def running(pidfile: str) -> int | None:
    """The pid of the live process recorded in ``pidfile`` (pid and start time, as
    ``record_pid`` writes them), or None."""
    from dockyard.runtime.state import proc_start_time  # not needed by the server

    try:
        with open(pidfile) as f:
            pid, started = (int(word) for word in f.read().split())
    except (FileNotFoundError, ValueError):
        return None
    return pid if proc_start_time(pid) == started else None


def start(records_path: str, listen: list[str], *, port: int = 53, pidfile: str) -> int:
    """Start the server of ``records_path`` on UDP and TCP ``port`` of each ``listen``
    address, unless the process of ``pidfile`` runs already; returns the server's pid.

    The server is a new interpreter, in its own session, with no parent but init
    (double fork), stdin and stdout on /dev/null and stderr on its log,
    ``<pidfile less .pid>.log``. Returns once it listens; a failure to listen raises
    (``Conflict`` when the port is taken). The server exits on SIGTERM or when the
    records file is deleted.
    """
    server = running(pidfile)
    if server is not None:
        return server
    if not os.path.isfile(records_path):
        raise NotFound(f"no DNS records file {records_path}: write the records first")
    for address in listen:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise InvalidArgument(f"invalid DNS listen address {address!r}") from None
    log = os.open(pidfile.removesuffix(".pid") + ".log",
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe()
    argv = [sys.executable, "-m", "dockyard.network.dns", records_path, str(port),
            str(ready_w), *listen]
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            try:
                os.setsid()
                if os.fork() == 0:
                    os.dup2(devnull, 0)
                    os.dup2(devnull, 1)
                    os.dup2(log, 2)
                    # Nothing else of the caller's: an inherited fd of its lock file
                    # would hold the engine's network lock as long as the server runs.
                    os.closerange(3, ready_w)
                    os.closerange(ready_w + 1, 1 << 20)
                    os.set_inheritable(ready_w, True)
                    os.chdir("/")
                    os.execv(sys.executable, argv)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.waitpid(pid, 0)
        message = _read_report(ready_r)
    finally:
        for fd in (log, devnull, ready_r):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.close(ready_w)
    kind, _, rest = message.partition(" ")
    if kind == "ok":
        server = int(rest)
        record_pid(pidfile, server)
        return server
    name, _, text = rest.partition(" ")
    error = {"Conflict": Conflict, "InvalidArgument": InvalidArgument}.get(name, SystemFailure)
    raise error(text or f"the DNS server of {records_path} exited before it listened: see "
                f"{pidfile.removesuffix('.pid')}.log")


def record_pid(pidfile: str, pid: int) -> None:
    """Write ``pidfile`` for the process ``pid``: its pid and start time, so that a
    pid reused meanwhile is never taken for it."""
    from dockyard.runtime.state import proc_start_time
    from dockyard.storage.durable import replace_file

    replace_file(pidfile, f"{pid} {proc_start_time(pid)}\n".encode())


def _read_report(fd: int) -> str:
    """What the server wrote on its report pipe, up to EOF: it closes the pipe once it
    listens, or exits."""
    data = b""
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise SystemFailure(f"the DNS server did not start in {_START_TIMEOUT:.0f}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk


def stop(pidfile: str) -> None:
    """Stop the process of ``pidfile`` (a server's, or another one ``record_pid``
    wrote) with SIGTERM, then SIGKILL after a grace period, wait for its end and remove
    the pidfile; nothing happens when none runs."""
    pid = running(pidfile)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            # A pidfd: its exit is seen even though it is not our child, and a pid
            # reused meanwhile is never signalled.
            pidfd = os.pidfd_open(pid)
            try:
                if running(pidfile) == pid:
                    signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                    if not select.select([pidfd], [], [], _STOP_GRACE)[0]:
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                        select.select([pidfd], [], [], _STOP_GRACE)
            finally:
                os.close(pidfd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)


def _main(argv: list[str]) -> int:
    records_path, port, ready, *listen = argv
    return _serve(records_path, listen, int(port), int(ready))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
