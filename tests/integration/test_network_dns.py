"""The embedded DNS server of user networks, as a container's resolver meets it.

Each test starts a real server process (``dns.start``) on its own 127.x address and a
free port, beside a real upstream resolver of the test's own (``Upstream``: UDP and TCP,
in a thread of the test process). Queries are built and answers read by the small codec
below, written apart from the server's, and by busybox's ``nslookup``. After each test
the server is stopped and no process of the test may remain.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.network import dns
from dockyard.runtime.state import proc_start_time

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="adds addresses, links and namespaces: "
                       "needs root"),
]

A, NS, PTR, MX, TXT, AAAA, OPT = 1, 2, 12, 15, 16, 28, 41
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
QR, AA, TC, RD = 0x8000, 0x0400, 0x0200, 0x0100


# -- the test's own DNS codec -------------------------------------------------------------


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


def query(name: str, qtype: int = A, *, qid: int | None = None, edns: int | None = None
          ) -> bytes:
    """A query with RD set, and an OPT record when ``edns`` gives a UDP payload size."""
    qid = random.randrange(65536) if qid is None else qid
    opt = b"" if edns is None else b"\0" + struct.pack("!HHIH", OPT, edns, 0, 0)
    return (struct.pack("!HHHHHH", qid, RD, 1, 0, 0, 1 if opt else 0)
            + encode_name(name) + struct.pack("!HH", qtype, 1) + opt)


def read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The (possibly compressed) name at ``pos`` and the position after it."""
    labels, end = [], None
    while data[pos]:
        if data[pos] >= 0xC0:
            end = pos + 2 if end is None else end
            pos = struct.unpack_from("!H", data, pos)[0] & 0x3FFF
            continue
        labels.append(data[pos + 1:pos + 1 + data[pos]].decode())
        pos += 1 + data[pos]
    return ".".join(labels), pos + 1 if end is None else end


@dataclass
class Record:
    name: str
    rtype: int
    ttl: int
    value: str


@dataclass
class Reply:
    id: int
    flags: int
    question: tuple[str, int]
    answers: list[Record] = field(default_factory=list)
    has_opt: bool = False
    size: int = 0

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    def values(self, rtype: int = A) -> list[str]:
        return sorted(r.value for r in self.answers if r.rtype == rtype)


def parse(data: bytes) -> Reply:
    qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    pos, question = 12, ("", 0)
    for _ in range(qd):
        name, pos = read_name(data, pos)
        question = (name, struct.unpack_from("!H", data, pos)[0])
        pos += 4
    reply = Reply(qid, flags, question, size=len(data))
    for i in range(an + ns + ar):
        name, pos = read_name(data, pos)
        rtype, _, ttl, length = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        rdata = data[pos:pos + length]
        if rtype == A:
            value = socket.inet_ntop(socket.AF_INET, rdata)
        elif rtype == AAAA:
            value = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rtype == PTR:
            value = read_name(data, pos)[0]
        else:
            value = rdata.hex()
        reply.has_opt |= rtype == OPT
        if i < an:
            reply.answers.append(Record(name, rtype, ttl, value))
        pos += length
    return reply


def answer(request: bytes, rcode: int, ips: list[str], tc: bool = False) -> bytes:
    """The upstream's answer: A records of ``ips`` for the question of ``request``."""
    qid, flags = struct.unpack_from("!HH", request)
    _, end = read_name(request, 12)
    question = request[12:end + 4]
    head = struct.pack("!HHHHHH", qid, QR | 0x0080 | (flags & RD) | (TC if tc else 0) | rcode,
                       1, 0 if tc else len(ips), 0, 0)
    body = b"" if tc else b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", A, 1, 30, 4) + socket.inet_aton(ip) for ip in ips)
    return head + question + body


def tcp_frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def recv_frame(sock: socket.socket) -> bytes:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data
    return exact(struct.unpack("!H", exact(2))[0])


# -- the upstream resolver --------------------------------------------------------------

BIG = [f"192.0.2.{i}" for i in range(1, 61)]  # 60 A records: ~1 KB, over 512 bytes


def free_address() -> tuple[str, int]:
    """A 127.x address of this test's own, and a port free there for UDP and TCP (a
    socket bound to any address may hold it: try another)."""
    for _ in range(20):
        host = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                contextlib.suppress(OSError):
            t.bind((host, 0))
            u.bind((host, t.getsockname()[1]))
            return host, t.getsockname()[1]
    raise AssertionError("no free port found on 127.0.0.0/8")


class Upstream:
    """A real resolver on a 127.x address, UDP and TCP: ``*.up.test`` has an address,
    ``big.up.test`` sixty (truncated over UDP, like a real server without EDNS),
    ``gone.up.test`` is NXDOMAIN; in ``servfail`` mode every answer is SERVFAIL."""

    def __init__(self, servfail: bool = False, tcp: bool = True, delay: float = 0) -> None:
        self.servfail = servfail
        self.delay = delay
        self.seen: list[tuple[str, str]] = []  # (transport, name)
        self.host, self.port = free_address()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.host, self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.host, self.port))
        if tcp:
            self.tcp.listen(16)
        # Polled: closing a socket does not wake a thread blocked on it.
        self.udp.settimeout(0.05)
        self.tcp.settimeout(0.05)
        self.closing = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._serve_udp, self._serve_tcp)[:2 if tcp else 1]]
        for t in self.threads:
            t.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def respond(self, request: bytes, transport: str) -> bytes:
        name = read_name(request, 12)[0].lower()
        self.seen.append((transport, name))
        if self.servfail:
            return answer(request, SERVFAIL, [])
        if name == "big.up.test":
            return answer(request, NOERROR, BIG, tc=transport == "udp")
        if name.endswith(".up.test"):
            return answer(request, NOERROR, ["192.0.2.200"])
        return answer(request, NXDOMAIN, [])

    def _serve_udp(self) -> None:
        while not self.closing.is_set():
            with contextlib.suppress(TimeoutError):
                data, client = self.udp.recvfrom(4096)
                reply = self.respond(data, "udp")
                if self.delay:  # answered later, and meanwhile the next query is read
                    threading.Timer(self.delay, self.udp.sendto, (reply, client)).start()
                else:
                    self.udp.sendto(reply, client)

    def _serve_tcp(self) -> None:
        while not self.closing.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.tcp.accept()
                with conn:
                    conn.settimeout(5)
                    conn.sendall(tcp_frame(self.respond(recv_frame(conn), "tcp")))

    def close(self) -> None:
        self.closing.set()
        for t in self.threads:
            t.join()
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


# -- the server under test --------------------------------------------------------------


class Server:
    """A server of ``dns.start`` with its records file in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.records = str(home / "records.json")
        self.pidfile = str(home / "dns.pid")
        self.host, self.port = free_address()
        self.pid = 0

    def write(self, records: dict[str, list[str]], upstreams: list[str],
              search: tuple[str, ...] = ()) -> None:
        dns.write_records(self.records, records, upstreams, search)

    def start(self) -> int:
        self.pid = dns.start(self.records, [self.host], port=self.port, pidfile=self.pidfile)
        return self.pid

    def udp(self, message: bytes, timeout: float = 5.0) -> Reply | None:
        """The answer over UDP, or None when none came within ``timeout``."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(message, (self.host, self.port))
            try:
                return parse(s.recv(65535))
            except TimeoutError:
                return None

    def ask(self, name: str, qtype: int = A, **kwargs: int) -> Reply:
        message = query(name, qtype, **kwargs)
        reply = self.udp(message)
        assert reply is not None, f"no answer to {name}"
        assert reply.id == struct.unpack_from("!H", message)[0]
        return reply

    def tcp(self, *messages: bytes) -> list[Reply]:
        """The answers to ``messages`` sent on one TCP connection, all at once."""
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(b"".join(tcp_frame(m) for m in messages))
            return [parse(recv_frame(s)) for _ in messages]

    def running(self) -> bool:
        return self.pid > 0 and proc_start_time(self.pid) is not None


def processes_under(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
    return found


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def server(tmp_path: Path, upstream: Upstream) -> Iterator[Server]:
    """A running server: ``web`` (IPv4 and IPv6) and ``db`` (IPv4), search domain
    ``corp.example``, forwarding to ``upstream``."""
    srv = Server(tmp_path)
    srv.write({"web": ["172.30.0.2", "fd00:30::2"], "db": ["172.30.0.3"],
               "db-alias": ["172.30.0.3"]}, [upstream.address], ("corp.example",))
    srv.start()
    yield srv
    dns.stop(srv.pidfile)
    assert not srv.running()
    assert not os.path.exists(srv.pidfile)
    assert processes_under(tmp_path) == []


# -- the tests --------------------------------------------------------------------------


def test_names_are_answered_case_insensitively_with_ttl_600(server: Server) -> None:
    for name in ("web", "WeB", "web.", "WEB.corp.example", "web.CORP.example."):
        reply = server.ask(name)
        assert reply.rcode == NOERROR and reply.flags & QR and reply.flags & AA
        assert reply.values(A) == ["172.30.0.2"], name
        assert [r.ttl for r in reply.answers] == [600]
        assert reply.question[0] == name.rstrip(".")  # the question as sent, in its case
    assert server.ask("web", AAAA).values(AAAA) == ["fd00:30::2"]
    assert server.ask("db-alias").values(A) == ["172.30.0.3"]


def test_other_types_of_a_record_name_are_empty_not_nxdomain(server: Server,
                                                             upstream: Upstream) -> None:
    for qtype in (AAAA, MX, TXT):
        reply = server.ask("db", qtype)
        assert (reply.rcode, reply.answers) == (NOERROR, []), qtype
    assert upstream.seen == []


def test_ptr_of_a_record_address(server: Server) -> None:
    reply = server.ask("2.0.30.172.in-addr.arpa", PTR)
    assert reply.rcode == NOERROR and reply.values(PTR) == ["web"]
    # db and db-alias share an address: the first name listed answers.
    assert server.ask("3.0.30.172.IN-ADDR.ARPA", PTR).values(PTR) == ["db"]
    v6 = ".".join(reversed("fd000030000000000000000000000002")) + ".ip6.arpa"
    assert server.ask(v6, PTR).values(PTR) == ["web"]


def test_other_names_are_forwarded_with_the_clients_id(server: Server,
                                                       upstream: Upstream) -> None:
    reply = server.ask("www.up.test", qid=0xBEEF)
    assert reply.id == 0xBEEF and reply.rcode == NOERROR
    assert reply.values(A) == ["192.0.2.200"]
    assert not reply.flags & AA  # the upstream's answer, relayed as it is
    assert server.ask("nothing.example").rcode == NXDOMAIN  # the upstream's NXDOMAIN
    assert server.ask("2.0.0.10.in-addr.arpa", PTR).rcode == NXDOMAIN  # not our address
    # A name below a record's name is not the record: forwarded too.
    assert server.ask("x.web").rcode == NXDOMAIN
    assert upstream.seen == [("udp", "www.up.test"), ("udp", "nothing.example"),
                             ("udp", "2.0.0.10.in-addr.arpa"), ("udp", "x.web")]
    tcp = server.tcp(query("tcp.up.test", qid=7), query("web", qid=8))
    assert [(r.id, r.values(A)) for r in tcp] == [(7, ["192.0.2.200"]), (8, ["172.30.0.2"])]
    assert upstream.seen[-1] == ("tcp", "tcp.up.test")


def test_truncated_answers_over_udp(server: Server, upstream: Upstream) -> None:
    many = [f"172.30.1.{i}" for i in range(1, 41)]  # 40 A records: 660 bytes
    server.write({"svc": many}, [upstream.address])
    small = server.ask("svc")
    assert small.flags & TC and small.answers == [] and small.size <= 512
    assert server.ask("svc", edns=4096).values(A) == sorted(many)
    edns_small = server.ask("svc", edns=600)
    assert edns_small.flags & TC and edns_small.has_opt
    assert server.tcp(query("svc"))[0].values(A) == sorted(many)
    # The upstream truncates over UDP: the server asks it again over TCP.
    relayed = server.ask("big.up.test", edns=4096)
    assert relayed.values(A) == sorted(BIG) and not relayed.flags & TC
    assert upstream.seen[-2:] == [("udp", "big.up.test"), ("tcp", "big.up.test")]
    assert server.ask("big.up.test").flags & TC  # a client without EDNS: still too large
    assert server.tcp(query("big.up.test"))[0].values(A) == sorted(BIG)
    udp_only = Upstream(tcp=False)
    try:
        server.write({}, [udp_only.address])
        truncated = server.ask("big.up.test", edns=4096)  # relayed as the upstream sent it
        assert truncated.rcode == NOERROR and truncated.flags & TC
    finally:
        udp_only.close()


def test_the_server_holds_nothing_of_its_caller(tmp_path: Path, upstream: Upstream) -> None:
    """Not the caller's open files (its lock would stay held), nor its blocked signals."""
    srv = Server(tmp_path)
    srv.write({}, [upstream.address])
    lock = tmp_path / "network.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.set_inheritable(fd, True)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        srv.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(fd)
    try:
        held = {int(n): os.readlink(f"/proc/{srv.pid}/fd/{n}")
                for n in os.listdir(f"/proc/{srv.pid}/fd")}
        assert str(lock) not in held.values()
        assert [held[0], held[1], held[2]] == ["/dev/null", "/dev/null",
                                               str(tmp_path / "dns.log")]
        assert os.readlink(f"/proc/{srv.pid}/cwd") == "/"
        started = time.monotonic()
        dns.stop(srv.pidfile)
        assert time.monotonic() - started < 1  # SIGTERM did it: no wait for the SIGKILL
        assert not srv.running()
    finally:
        dns.stop(srv.pidfile)


def test_next_upstream_on_failure_and_servfail_when_all_fail(server: Server,
                                                             upstream: Upstream) -> None:
    failing = Upstream(servfail=True)
    try:
        dead = ":".join(map(str, free_address()))  # nothing listens there
        server.write({}, [dead, failing.address, upstream.address])
        reply = server.ask("www.up.test")
        assert (reply.rcode, reply.values(A)) == (NOERROR, ["192.0.2.200"])
        assert failing.seen == [("udp", "www.up.test")]
        server.write({}, [dead, failing.address])
        assert server.ask("www.up.test").rcode == SERVFAIL
        assert server.tcp(query("www.up.test"))[0].rcode == SERVFAIL
        server.write({}, [])
        assert server.ask("www.up.test").rcode == SERVFAIL
        log = (server.home / "dns.log").read_text()
        host, port = dead.split(":")
        assert log.count(f"upstream {host} port {port} fails") == 1  # not at each query
    finally:
        failing.close()


def test_no_loop_when_the_server_is_its_own_upstream(server: Server,
                                                     upstream: Upstream) -> None:
    own = f"{server.host}:{server.port}"
    server.write({"web": ["172.30.0.2"]}, [own, upstream.address])
    assert server.ask("www.up.test").values(A) == ["192.0.2.200"]
    server.write({"web": ["172.30.0.2"]}, [own])
    started = time.monotonic()
    assert server.ask("loop.example").rcode == SERVFAIL
    assert time.monotonic() - started < 1
    assert server.ask("web").values(A) == ["172.30.0.2"]


def test_no_loop_through_another_resolver(tmp_path: Path, upstream: Upstream) -> None:
    """Two servers, each the other's upstream: a query does not go round for ever."""
    first, second = Server(tmp_path / "1"), Server(tmp_path / "2")
    for srv, other in ((first, second), (second, first)):
        srv.home.mkdir()
        srv.write({}, [f"{other.host}:{other.port}"])
    try:
        first.start()
        second.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(8)
            client.sendto(query("loop.example"), (first.host, first.port))
            time.sleep(0.5)
            # The query came back to ``first`` with the same ID while it was still
            # being forwarded, and was dropped there: one forwarding thread in each
            # server (a loop would hold every worker of both), until ``second`` times
            # out and answers SERVFAIL.
            threads = [len(os.listdir(f"/proc/{s.pid}/task")) for s in (first, second)]
            assert threads == [2, 2]
            assert parse(client.recv(512)).rcode == SERVFAIL
        assert first.running() and second.running()
    finally:
        dns.stop(first.pidfile)
        dns.stop(second.pidfile)
    assert processes_under(tmp_path) == []


def test_malformed_packets_do_not_stop_the_server(server: Server,
                                                  upstream: Upstream) -> None:
    valid = query("web", qid=0x1111)
    header_only = struct.pack("!HHHHHH", 0x2222, RD, 1, 0, 0, 0)
    bad_label = struct.pack("!HHHHHH", 0x3333, RD, 1, 0, 0, 0) + b"\x3fabc"
    pointer = struct.pack("!HHHHHH", 0x4444, RD, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    two_questions = valid[:4] + b"\x00\x02" + valid[6:] + valid[12:]
    bad_additional = valid[:10] + b"\x00\x01" + valid[12:] + b"\x00\x00\x29"
    for packet in (header_only, bad_label, pointer, two_questions, bad_additional):
        reply = server.udp(packet)
        assert reply is not None and reply.rcode == FORMERR and reply.flags & QR
        assert reply.id == struct.unpack_from("!H", packet)[0]
    status = valid[:2] + struct.pack("!H", RD | 0x1000) + valid[4:]  # opcode 2, STATUS
    notimp = server.udp(status)
    assert notimp is not None and notimp.rcode == NOTIMP
    # Too short to answer, or itself an answer (answering answers can loop): dropped.
    response = valid[:2] + struct.pack("!H", QR) + valid[4:]
    for packet in (b"", b"\x00", b"\x12\x34\x01", response):
        assert server.udp(packet, timeout=0.3) is None
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(tcp_frame(bad_label) + tcp_frame(valid))
        assert parse(recv_frame(s)).rcode == FORMERR
        assert parse(recv_frame(s)).values(A) == ["172.30.0.2"]
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"\x00\x40half a message")  # then the client goes away
    assert server.ask("web").values(A) == ["172.30.0.2"]
    assert server.tcp(valid)[0].values(A) == ["172.30.0.2"]
    assert upstream.seen == []
    assert server.running()


def test_records_reload_while_queried(server: Server, upstream: Upstream) -> None:
    server.write({"app": ["172.30.0.10"]}, [upstream.address])
    assert server.ask("app").values(A) == ["172.30.0.10"]
    assert server.ask("web").rcode == NXDOMAIN  # gone from the records: forwarded now
    stop = threading.Event()

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            server.write({"app": [f"172.30.0.{10 + n % 2}"]}, [upstream.address])

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        answers = {tuple(server.ask("app").values(A)) for _ in range(300)}
    finally:
        stop.set()
        writer.join()
    assert answers <= {("172.30.0.10",), ("172.30.0.11",)} and len(answers) == 2
    assert ("udp", "app") not in upstream.seen
    # A records file the server cannot read: the last good records are kept.
    before = server.ask("app").values(A)
    bad = Path(server.records).with_name("bad.json")
    for text in ('{"records": {"app": ["x"]}}', "{not json"):
        bad.write_text(text)
        bad.rename(server.records)
        assert [server.ask("app").values(A) for _ in range(3)] == [before] * 3
    assert (server.home / "dns.log").read_text().count("keeping the previous records") == 2
    assert server.running()


def test_busybox_nslookup(server: Server) -> None:
    def nslookup(*args: str) -> str:
        result = subprocess.run(["busybox", "nslookup", f"-port={server.port}", *args,
                                 server.host], capture_output=True, text=True, timeout=20,
                                check=False)
        return result.stdout
    out = nslookup("web")
    assert "Address: 172.30.0.2" in out and "Address: fd00:30::2" in out
    assert "name = web" in nslookup("172.30.0.2")
    assert "Address: 192.0.2.200" in nslookup("www.up.test")
    assert "NXDOMAIN" in nslookup("nothing.example")


def test_start_is_idempotent_and_stop_leaves_nothing(server: Server) -> None:
    assert server.start() == server.pid
    assert (server.home / "dns.log").read_text().count("serving") == 1
    dns.stop(server.pidfile)
    assert not server.running() and not os.path.exists(server.pidfile)
    assert server.udp(query("web"), timeout=0.3) is None
    dns.stop(server.pidfile)  # idempotent
    assert server.start() != 0 and server.ask("web").values(A) == ["172.30.0.2"]


def test_stale_pidfile_is_not_taken_for_a_server(server: Server) -> None:
    dns.stop(server.pidfile)
    # A pid of a live process, with another start time: not the server.
    Path(server.pidfile).write_text(f"{os.getpid()} 1\n")
    pid = server.start()
    assert pid != os.getpid() and server.running()
    dns.stop(server.pidfile)
    assert proc_start_time(os.getpid()) is not None  # we were not signalled


def test_server_exits_on_sigterm_and_when_its_records_are_deleted(server: Server) -> None:
    os.kill(server.pid, signal.SIGTERM)
    assert wait_until(lambda: not server.running())
    server.start()
    os.unlink(server.records)
    assert wait_until(lambda: not server.running())
    assert "deleted" in (server.home / "dns.log").read_text()


def test_start_errors(server: Server, tmp_path: Path) -> None:
    other = Server(tmp_path / "other")
    other.home.mkdir()
    with pytest.raises(NotFound, match="no DNS records file"):
        other.start()
    other.write({}, [])
    other.host, other.port = server.host, server.port  # taken by ``server``
    with pytest.raises(Conflict, match=f"cannot serve DNS on {server.host} port "
                       f"{server.port}: the port is taken"):
        other.start()
    with pytest.raises(InvalidArgument, match="invalid DNS listen address 'gateway'"):
        dns.start(other.records, ["gateway"], port=other.port, pidfile=other.pidfile)
    assert not os.path.exists(other.pidfile)


@pytest.mark.parametrize(("records", "upstreams", "message"), [
    ({"web": ["172.30.0.256"]}, [], "invalid IP address '172.30.0.256' for the DNS name 'web'"),
    ({"web": ["db"]}, [], "invalid IP address 'db'"),
    ({"web": ["172.30.0.2"]}, ["8.8.8.8:0"], "invalid DNS upstream '8.8.8.8:0'"),
    ({"web": ["172.30.0.2"]}, ["dns.google"], "invalid DNS upstream 'dns.google'"),
    ({"web": ["172.30.0.2"]}, ["[::1]:99999"], "invalid DNS upstream"),
    ({"web": ["172.30.0.2"]}, ["[::1"], "invalid DNS upstream"),
])
def test_write_records_refuses_bad_input(tmp_path: Path, records: dict[str, list[str]],
                                         upstreams: list[str], message: str) -> None:
    path = tmp_path / "records.json"
    with pytest.raises(InvalidArgument, match=message):
        dns.write_records(str(path), records, upstreams)
    assert list(tmp_path.iterdir()) == []


def test_names_no_query_can_ask_for_are_left_out(server: Server, upstream: Upstream) -> None:
    # Docker takes each as a container name or an alias; none can be a DNS question.
    odd = ["we b", "a..b", "x" * 64, "caf\u00e9", "tab\there", ".", ""]
    server.write({**{name: ["172.30.0.9"] for name in odd}, "Web": ["172.30.0.2"],
                  "WEB": ["172.30.0.4", "172.30.0.2"]}, [upstream.address],
                 ("bad domain", "corp.example"))
    assert json.loads(Path(server.records).read_text()) == {
        "records": {"web": ["172.30.0.2", "172.30.0.4"]},
        "upstreams": [upstream.address], "search": ["corp.example"]}
    assert server.ask("web.corp.example").values(A) == ["172.30.0.2", "172.30.0.4"]
    assert server.ask("we b").rcode == NXDOMAIN  # not a record: forwarded


def test_upstream_forms(server: Server, upstream: Upstream) -> None:
    # IPv6 and bracketed forms are accepted; a dead IPv6 loopback upstream is skipped.
    _, dead = free_address()
    server.write({}, ["::1", f"[::1]:{dead}", upstream.address])
    assert server.ask("www.up.test").values(A) == ["192.0.2.200"]


def test_listens_on_each_address_also_one_that_comes_up_later(tmp_path: Path,
                                                              upstream: Upstream) -> None:
    """IPv4 and IPv6; and a gateway address not there yet (a bridge just made, an IPv6
    address still tentative) is served once it is."""
    srv = Server(tmp_path)
    srv.write({"web": ["172.30.0.2"]}, [upstream.address])
    later = f"203.0.113.{random.randrange(1, 255)}"  # TEST-NET-3: on no host
    pid = dns.start(srv.records, [srv.host, "::1", later], port=srv.port,
                    pidfile=srv.pidfile)
    try:
        for family, host in ((socket.AF_INET6, "::1"), (socket.AF_INET, srv.host)):
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(query("web"), (host, srv.port))
                assert parse(s.recv(512)).values(A) == ["172.30.0.2"]
            with socket.create_connection((host, srv.port), timeout=5) as s:
                s.sendall(tcp_frame(query("www.up.test")))
                assert parse(recv_frame(s)).values(A) == ["192.0.2.200"]
        ip("addr", "add", f"{later}/32", "dev", "lo")
        with socket.create_connection((later, srv.port), timeout=5) as s:
            s.sendall(tcp_frame(query("WEB")))
            assert parse(recv_frame(s)).values(A) == ["172.30.0.2"]
    finally:
        ip("addr", "del", f"{later}/32", "dev", "lo", check=False)  # may not be added
        dns.stop(srv.pidfile)
    assert proc_start_time(pid) is None


def test_stop_kills_a_server_that_does_not_exit(server: Server) -> None:
    os.kill(server.pid, signal.SIGSTOP)  # SIGTERM stays pending
    started = time.monotonic()
    dns.stop(server.pidfile)
    assert not server.running() and time.monotonic() - started >= 1.5
    assert not os.path.exists(server.pidfile)


def test_many_clients_at_once(server: Server) -> None:
    """More queries to forward than the server has threads for: they wait their turn."""
    upstream = Upstream(delay=0.3)
    server.write({"web": ["172.30.0.2"]}, [upstream.address])
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(150)]
    try:
        for i, s in enumerate(sockets):
            s.settimeout(5)
            s.sendto(query(f"n{i}.up.test" if i % 2 else "web", qid=i), (server.host, server.port))
        replies = [parse(s.recv(512)) for s in sockets]
    finally:
        for s in sockets:
            s.close()
        upstream.close()
    assert [(r.id, r.values(A)) for r in replies] == [
        (i, ["192.0.2.200"] if i % 2 else ["172.30.0.2"]) for i in range(150)]
    assert len(upstream.seen) == 75
    # The threads of the burst end with it.
    assert wait_until(lambda: len(os.listdir(f"/proc/{server.pid}/task")) == 1)


# Run in another network namespace: a UDP and a TCP query, the answers in hex.
CLIENT = """
import socket, struct, sys
host, port, message = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
    u.settimeout(5)
    u.sendto(message, (host, port))
    print(u.recv(4096).hex())
with socket.create_connection((host, port), timeout=5) as t:
    t.sendall(struct.pack("!H", len(message)) + message)
    size = struct.unpack("!H", t.recv(2, socket.MSG_WAITALL))[0]
    print(t.recv(size, socket.MSG_WAITALL).hex())
"""


@pytest.fixture
def other_host() -> Iterator[tuple[str, str, str]]:
    """A network namespace linked to ours by a veth pair, as a container of another
    network or another host is: (its name, our address on the link, its address)."""
    name = f"dydns{random.randrange(16**6):06x}"
    subnet = random.randrange(64) * 4
    ours, theirs = f"198.51.100.{subnet + 1}", f"198.51.100.{subnet + 2}"  # TEST-NET-2
    ip("netns", "add", name)
    try:
        ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}c",
           "netns", name)
        ip("addr", "add", f"{ours}/30", "dev", f"{name}h")
        ip("link", "set", f"{name}h", "up")
        ip("-n", name, "addr", "add", f"{theirs}/30", "dev", f"{name}c")
        ip("-n", name, "link", "set", f"{name}c", "up")
        yield name, ours, theirs
    finally:
        ip("link", "del", f"{name}h", check=False)  # and with it its peer
        ip("netns", "del", name)


def ip(*args: str, check: bool = True) -> None:
    """iproute2, as an administrator would set up the test's surroundings."""
    subprocess.run(["ip", *args], capture_output=True, check=check, timeout=30)


def test_only_the_networks_containers_and_the_host_are_answered(
        tmp_path: Path, upstream: Upstream, other_host: tuple[str, str, str]) -> None:
    """A client on another network (or host) that reaches the gateway gets REFUSED: it
    learns no names and cannot use the server as an open resolver."""
    name, gateway, client = other_host
    srv = Server(tmp_path)
    srv.write({"web": ["172.30.0.2"]}, [upstream.address])
    dns.start(srv.records, [gateway], port=srv.port, pidfile=srv.pidfile)

    def ask_from_there(question: str) -> list[tuple[int, list[str]]]:
        """(rcode, addresses) over UDP and over TCP."""
        result = subprocess.run(
            ["nsenter", f"--net=/run/netns/{name}", sys.executable, "-c", CLIENT, gateway,
             str(srv.port), query(question).hex()],
            capture_output=True, text=True, timeout=30, check=True)
        replies = [parse(bytes.fromhex(line)) for line in result.stdout.split()]
        return [(r.rcode, r.values(A)) for r in replies]

    try:
        assert ask_from_there("web") == [(REFUSED, [])] * 2
        assert ask_from_there("www.up.test") == [(REFUSED, [])] * 2
        assert upstream.seen == []
        # The host itself is answered, from whichever of its addresses.
        srv.host = gateway
        assert srv.ask("web").values(A) == ["172.30.0.2"]
        # Once a container of the network has that address, it is answered.
        srv.write({"web": ["172.30.0.2"], "client": [client]}, [upstream.address])
        assert ask_from_there("web") == [(NOERROR, ["172.30.0.2"])] * 2
        assert ask_from_there("www.up.test") == [(NOERROR, ["192.0.2.200"])] * 2
    finally:
        dns.stop(srv.pidfile)
