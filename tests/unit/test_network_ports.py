"""``-p`` parsing as Docker does it, and host ports checked free on real sockets."""

from __future__ import annotations

import socket
import time

import pytest

from dockyard.errors import Conflict, InvalidArgument
from dockyard.network.ports import PortBinding, check_free, free_port, parse_publish, resolve


@pytest.mark.parametrize(("spec", "expected"), [
    ("80", [PortBinding(80)]),
    ("8080:80", [PortBinding(80, "tcp", "", 8080)]),
    ("127.0.0.1:8080:80", [PortBinding(80, "tcp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [PortBinding(80, "tcp", "127.0.0.1", 0)]),
    ("0.0.0.0:8080:80", [PortBinding(80, "tcp", "", 8080)]),
    ("53/udp", [PortBinding(53, "udp")]),
    ("5353:53/UDP", [PortBinding(53, "udp", "", 5353)]),
    ("9000:9000/sctp", [PortBinding(9000, "sctp", "", 9000)]),
    ("[::1]:8080:80", [PortBinding(80, "tcp", "::1", 8080)]),
    ("[::]:8080:80/udp", [PortBinding(80, "udp", "", 8080)]),
    ("8000-8002:80-82", [PortBinding(80, "tcp", "", 8000), PortBinding(81, "tcp", "", 8001),
                         PortBinding(82, "tcp", "", 8002)]),
    ("80-81", [PortBinding(80), PortBinding(81)]),
    ("8000-8010:80", [PortBinding(80, "tcp", "", 8000, 8010)]),
])
def test_publish_specs(spec, expected):
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("", "no port specified"),
    ("8080:", "no port specified: 8080:<empty>"),
    ("http", "invalid containerPort: http"),
    ("0", "invalid containerPort: 0"),
    ("70000", "invalid containerPort: 70000"),
    ("90-80", "invalid containerPort: 90-80"),
    ("x:80", "invalid hostPort: x"),
    ("65536:80", "invalid hostPort: 65536"),
    ("80/icmp", "invalid proto: icmp"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"),
    ("[::1]80", "invalid IP address"),
    ("[::1]:80", "a host address needs a host port"),
    ("8000-8001:80-82", "invalid ranges specified for container and host Ports: 80-82 and "
                        "8000-8001"),
])
def test_malformed_publish_specs_are_one_line_errors(spec, message):
    with pytest.raises(InvalidArgument, match=message) as caught:
        parse_publish(spec)
    assert "\n" not in str(caught.value)


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_a_port_a_program_listens_on_is_taken(listener):
    with pytest.raises(Conflict, match=f"Bind for 127.0.0.1:{listener} failed: port is "
                                       "already allocated"):
        check_free(PortBinding(80, "tcp", "127.0.0.1", listener))
    # Listening on 127.0.0.1 takes the port from "every address" too.
    with pytest.raises(Conflict, match=f"0.0.0.0:{listener}"):
        check_free(PortBinding(80, "tcp", "", listener))
    # ...but not the same number in UDP.
    check_free(PortBinding(80, "udp", "127.0.0.1", listener))


def test_a_udp_port_in_use_is_taken():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(Conflict):
            check_free(PortBinding(53, "udp", "127.0.0.1", port))


def _in_time_wait(port: int) -> bool:
    """Whether a connection from local ``port`` is in TIME_WAIT (state 06 of
    /proc/net/tcp) and no longer in FIN_WAIT2, which still holds the port."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    states = {row[3] for row in rows if int(row[1].split(":")[1], 16) == port}
    return states == {"06"}


def test_a_port_left_in_time_wait_is_free():
    with socket.socket() as server:
        # The kernel lets a port in TIME_WAIT be bound again only if both sockets set
        # SO_REUSEADDR, as servers do: this one stands for a server that was stopped.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    deadline = time.monotonic() + 5
    while not _in_time_wait(port):
        assert time.monotonic() < deadline, "the connection never reached TIME_WAIT"
        time.sleep(0.01)
    check_free(PortBinding(80, "tcp", "127.0.0.1", port))


def test_free_ports_are_free_and_resolve_picks_them():
    port = free_port("tcp", "127.0.0.1")
    check_free(PortBinding(80, "tcp", "127.0.0.1", port))
    chosen = resolve(PortBinding(80, "udp", "127.0.0.1"))
    assert chosen.host_port > 0 and chosen.proto == "udp"


def test_resolve_respects_the_ports_other_containers_publish(listener):
    with pytest.raises(Conflict, match="18080 failed: port is already allocated"):
        resolve(PortBinding(80, "tcp", "", 18080), taken={("tcp", 18080)})
    # A range skips what containers publish and what programs hold.
    start = listener - 1
    got = resolve(PortBinding(80, "tcp", "127.0.0.1", start, listener + 1),
                  taken={("tcp", start)})
    assert got == PortBinding(80, "tcp", "127.0.0.1", listener + 1)
    with pytest.raises(Conflict, match=f"{listener}-{listener} failed"):
        resolve(PortBinding(80, "tcp", "127.0.0.1", listener, listener))


def test_sctp_ports_with_or_without_sctp_in_the_kernel():
    chosen = resolve(PortBinding(9000, "sctp", "127.0.0.1"))
    assert 0 < chosen.host_port < 65536 and chosen.proto == "sctp"
    check_free(chosen)


def test_ipv6_host_addresses_are_checked_on_ipv6():
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(Conflict, match=f"Bind for ::1:{port} failed"):
            check_free(PortBinding(80, "tcp", "::1", port))
    assert free_port("udp", "::1") > 0


def test_an_address_the_host_does_not_have_is_a_clear_error():
    with pytest.raises(InvalidArgument, match=r"cannot publish port 8080 on 203\.0\.113\.77: "
                                              "Cannot assign requested address"):
        resolve(PortBinding(80, "tcp", "203.0.113.77", 8080))
