"""The embedded DNS server's codec against hostile packets, without sockets.

The server parses every packet a container sends to its gateway; whatever the bytes, the
parser must return a query or refuse the packet as malformed, never fail otherwise.
"""

from __future__ import annotations

import contextlib
import random
import struct

import pytest

from dockyard.network import dns


def valid_query(name: str = "web.corp.example", qtype: int = 1, edns: bool = True) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    opt = b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0) if edns else b""
    return (struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 1 if edns else 0)
            + labels + struct.pack("!HH", qtype, 1) + opt)


def test_a_valid_query_parses() -> None:
    query = dns._parse_query(valid_query("WeB.Corp.example", 28))
    assert (query.id, query.name, query.qtype, query.qclass) == (
        0xABCD, "web.corp.example", 28, 1)
    assert query.question.startswith(b"\x03WeB\x04Corp")  # as sent, for the answer
    assert query.edns_size == 4096 and query.udp_limit() == 4096
    plain = dns._parse_query(valid_query(edns=False))
    assert plain.edns_size is None and plain.udp_limit() == 512


def test_names_no_record_can_have() -> None:
    dotted = valid_query("a").replace(b"\x01a", b"\x03a.b")
    assert dns._parse_query(dotted).name is None
    latin = valid_query("abc").replace(b"abc", "ab\u00e9".encode("latin-1"))
    assert dns._parse_query(latin).name is None


@pytest.mark.parametrize("seed", range(4))
def test_mutated_packets_parse_or_are_malformed(seed: int) -> None:
    rng = random.Random(seed)
    samples = [valid_query(), valid_query(edns=False), valid_query("x" * 63 + ".y", 12)]
    for _ in range(5000):
        packet = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 6)):
            action = rng.randrange(3)
            where = rng.randrange(len(packet) + 1)
            if action == 0 and where < len(packet):
                packet[where] = rng.randrange(256)
            elif action == 1:
                del packet[where:]
            else:
                packet[where:where] = rng.randbytes(rng.randrange(1, 8))
        # FORMERR for these; any other exception fails the test.
        with contextlib.suppress(dns._Malformed):
            dns._parse_query(bytes(packet))


@pytest.mark.parametrize(("text", "expected"), [
    ("192.168.1.1", ("192.168.1.1", 53)),
    ("10.0.0.53:5353", ("10.0.0.53", 5353)),
    ("fd00::53", ("fd00::53", 53)),
    ("[fd00::53]", ("fd00::53", 53)),
    ("[fd00::53]:54", ("fd00::53", 54)),
    ("fe80::1%eth0", ("fe80::1%eth0", 53)),
])
def test_upstream_forms(text: str, expected: tuple[str, int]) -> None:
    assert dns._parse_upstream(text) == expected


def test_a_clients_own_names_and_upstreams() -> None:
    records = dns._Records.parse({
        "records": {"web": ["172.18.0.2"], "multi": ["172.18.0.3"]},
        "upstreams": ["192.0.2.1"], "search": ["front"],
        "clients": {"172.18.0.3": {"records": {"db": ["172.19.0.2"], "web": ["10.9.9.9"]},
                                   "upstreams": ["192.0.2.53:5353"]},
                    "fd00:0::3": {"records": {"db": ["fd00:19::2"]}}}})
    a = lambda ip: bytes(int(part) for part in ip.split("."))  # noqa: E731
    assert records.lookup("db", "172.18.0.3") == ([a("172.19.0.2")], [])
    assert records.lookup("db.front", "172.18.0.3") == ([a("172.19.0.2")], [])
    assert records.lookup("web", "172.18.0.3") == ([a("172.18.0.2")], [])  # its network's first
    assert records.lookup("db", "172.18.0.2") is None  # another container's
    assert records.pointer("2.0.19.172.in-addr.arpa", "172.18.0.3") is not None
    assert records.pointer("2.0.19.172.in-addr.arpa", "172.18.0.2") is None
    assert records.upstreams("172.18.0.3") == [("192.0.2.53", 5353)]
    assert records.upstreams("172.18.0.2") == [("192.0.2.1", 53)]
    assert records.upstreams("fd00::3") == [("192.0.2.1", 53)]  # [] is the file's
    assert records.clients == {"172.18.0.2", "172.18.0.3", "fd00::3"}
    with pytest.raises(dns.InvalidArgument, match="invalid DNS client address"):
        dns._Records.parse({"clients": {"web": {}}})
