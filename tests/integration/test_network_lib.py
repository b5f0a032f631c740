"""The network library on the real kernel: bridges, veth pairs, namespaces, nftables,
and real traffic through them.

Most tests run in a private network namespace that stands for the host (the ``host``
fixture: the test's thread unshares one, and goes back to the real one after): their
bridges, veths, sysctls and nftables tables die with it, whatever happens, and the
host's own firewall is never touched. "Containers" (``Box``) are network namespaces
held by sleeping children; servers and clients are forked children that enter them.
``test_on_the_real_host`` uses the host's own namespace with unique names and checks
that nothing of it is left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network, ip_address, ip_interface, ip_network

import pytest

import forked
from dockyard.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from dockyard.linux import syscalls as sc
from dockyard.linux.netlink import RouteSocket
from dockyard.network import bridge, firewall, ipam
from dockyard.network.firewall import NetworkRules, PublishedPort, Ruleset

pytestmark = pytest.mark.root


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    sc.setns(fd, sc.CLONE_NEWNET)
    os.close(fd)


def _lo_up() -> None:
    with RouteSocket() as nl:
        nl.set_link(socket.if_nametoindex("lo"), up=True)


class Box:
    """A network namespace held by a forked child that sleeps: a container's, as far as
    networking goes. ``path`` is what ``bridge.attach`` takes."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover (child)
            try:
                os.close(r)
                sc.unshare(sc.CLONE_NEWNET)
                _lo_up()
                os.write(w, b"1")
                while True:
                    time.sleep(3600)
            finally:
                os._exit(1)
        os.close(w)
        ready = os.read(r, 1)
        os.close(r)
        self.path = f"/proc/{self.pid}/ns/net"
        if ready != b"1":
            self.close()
            pytest.fail("could not make a network namespace")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def in_ns(path: str | None, body: Callable[[], str]) -> str:
    """``body()`` run in a forked child inside the namespace ``path`` (the test's own
    when ``None``)."""

    def child(w: int) -> None:
        if path:
            _enter(path)
        os.write(w, body().encode())

    status, out = forked.in_child(child)
    assert status == 0, out.decode()
    return out.decode()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@contextlib.contextmanager
def serving(path: str | None, address: str, port: int, proto: str = "tcp") -> Iterator[None]:
    """A server in namespace ``path`` on ``address``:``port`` that answers each request
    with the address it came from, as the server saw it (NAT shows there)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(r)
            if path:
                _enter(path)
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(_family(address), kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            if proto == "tcp":
                sock.listen()
            os.write(w, b"1")
            while True:
                if proto == "tcp":
                    conn, peer = sock.accept()
                    conn.recv(64)
                    conn.sendall(peer[0].encode())
                    conn.close()
                else:
                    _, peer = sock.recvfrom(64)
                    sock.sendto(peer[0].encode(), peer)
        finally:
            os._exit(1)
    os.close(w)
    ready = os.read(r, 1)
    os.close(r)
    try:
        assert ready == b"1", f"the test server on {address}:{port} did not start"
        yield
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def ask(path: str | None, address: str, port: int, proto: str = "tcp",
        timeout: float = 3.0) -> str:
    """A request from namespace ``path``: the client address the server saw, or ""
    when nothing answered (refused, dropped, unreachable)."""

    def body() -> str:
        try:
            if proto == "tcp":
                with socket.create_connection((address, port), timeout=timeout) as s:
                    s.sendall(b"?")
                    return s.recv(64).decode()
            with socket.socket(_family(address), socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"?", (address, port))
                return s.recv(64).decode()
        except OSError:
            return ""

    return in_ns(path, body)


def _bridge_nf(value: str) -> None:
    """Set bridge-nf-call-iptables of this (private) namespace if br_netfilter is
    loaded; "0" is the same as not loaded."""
    path = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write(value)
    else:
        assert value == "0", "br_netfilter is not loaded: modprobe br_netfilter"


def nft(*args: str) -> str:
    return subprocess.run(["nft", *args], check=True, capture_output=True, text=True).stdout


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def host() -> Iterator[None]:
    """The test runs in a private network namespace that stands for the host."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    sc.unshare(sc.CLONE_NEWNET)
    try:
        _lo_up()
        yield
    finally:
        sc.setns(original, sc.CLONE_NEWNET)
        os.close(original)


@pytest.fixture
def boxes() -> Iterator[Callable[[], Box]]:
    made: list[Box] = []

    def make() -> Box:
        made.append(Box())
        return made[-1]

    yield make
    for box in made:
        box.close()


class Lan:
    """A bridge network: ``bridge.ensure_bridge`` and the rules ``firewall`` needs."""

    def __init__(self, name: str, *cidrs: str, internal: bool = False) -> None:
        self.name = name
        self.subnets = [ip_network(c) for c in cidrs]
        self.gateways = [ipam.default_gateway(s) for s in self.subnets]
        self.internal = internal
        bridge.ensure_bridge(name, [ip_interface(f"{g}/{s.prefixlen}")
                                    for g, s in zip(self.gateways, self.subnets, strict=True)])

    @property
    def gateway(self) -> str:
        return str(self.gateways[0])

    def rules(self) -> NetworkRules:
        return NetworkRules(self.name, self.subnets, internal=self.internal)

    def join(self, box: Box, host_ifname: str, *addresses: str, **kwargs: object) -> None:
        ifaces = [ip_interface(f"{a}/{s.prefixlen}")
                  for a, s in zip(addresses, self.subnets, strict=False)]
        bridge.attach(box.path, self.name, host_ifname=host_ifname, addresses=ifaces,
                      gateways=[] if self.internal else self.gateways, **kwargs)  # type: ignore[arg-type]


def world(box: Box) -> str:
    """Connect ``box`` to the host as "another host" on 203.0.113.0/24 (a plain veth,
    no bridge); the address the host has there."""
    fd = os.open(box.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for ns_fd, ifname, address in ((None, "uplink", "203.0.113.1/24"),
                                       (fd, "eth0", "203.0.113.2/24")):
            with RouteSocket(ns_fd) as nl:
                if ns_fd is None:
                    nl.new_veth("uplink", "eth0", peer_netns_fd=fd)
                index = nl.link(ifname).index
                nl.add_address(index, ip_interface(address))
                nl.set_link(index, up=True)
    finally:
        os.close(fd)
    return "203.0.113.1"


def test_containers_on_a_bridge_reach_each_other_and_the_host(host, boxes):
    lan = Lan("dytb0", "10.88.0.0/24")
    a, b = boxes(), boxes()
    lan.join(a, "dytva", "10.88.0.2", mac="02:42:0a:58:00:02")
    lan.join(b, "dytvb", "10.88.0.3")
    with serving(b.path, "10.88.0.3", 80):
        assert ask(a.path, "10.88.0.3", 80) == "10.88.0.2"
    with serving(None, lan.gateway, 81):
        assert ask(b.path, lan.gateway, 81) == "10.88.0.3"

    def configuration() -> str:
        (link,) = json.loads(ip("-j", "link", "show", "eth0"))
        routes = [(r["gateway"], r["dst"]) for r in json.loads(ip("-j", "-4", "route"))
                  if "gateway" in r]
        return json.dumps([link["address"], link["operstate"], routes])

    assert json.loads(in_ns(a.path, configuration)) == \
        ["02:42:0a:58:00:02", "UP", [["10.88.0.1", "default"]]]
    assert bridge.links("dytv") == ["dytva", "dytvb"]
    details = subprocess.run(["ip", "-d", "link", "show", "dytva"], check=True,
                             capture_output=True, text=True).stdout
    assert "master dytb0" in details and "hairpin on" in details
    with open("/proc/sys/net/ipv4/conf/dytb0/route_localnet") as f:
        assert f.read().strip() == "1"

    bridge.detach("dytva")
    bridge.detach("dytva")  # idempotent
    assert bridge.links("dytv") == ["dytvb"]
    assert ask(b.path, "10.88.0.2", 80, timeout=0.5) == ""
    bridge.delete_bridge("dytb0")
    bridge.delete_bridge("dytb0")
    assert bridge.links("dytb") == []


@pytest.mark.parametrize("br_netfilter", ["1", "0"])
def test_published_ports_from_the_host_other_hosts_and_containers(host, boxes, br_netfilter):
    """With br_netfilter (docker loads it) bridged traffic goes through the IP hooks too;
    without it, hairpin must work all the same."""
    _bridge_nf(br_netfilter)
    lan = Lan("dytb0", "10.88.0.0/24")
    a, b, other_host = boxes(), boxes(), boxes()
    lan.join(a, "dytva", "10.88.0.2")
    lan.join(b, "dytvb", "10.88.0.3")
    uplink = world(other_host)
    b_ip = ip_address("10.88.0.3")
    firewall.apply(Ruleset([lan.rules()], [
        PublishedPort("tcp", 8080, b_ip, 80, "dytb0"),
        PublishedPort("tcp", 8081, b_ip, 81, "dytb0", ip_address("127.0.0.1")),
        PublishedPort("udp", 5353, b_ip, 53, "dytb0"),
    ]))
    with serving(b.path, "0.0.0.0", 80), serving(b.path, "0.0.0.0", 81), \
            serving(b.path, "0.0.0.0", 53, "udp"):
        # From the host itself, 127.0.0.1 included (masqueraded to the gateway).
        assert ask(None, "127.0.0.1", 8080) == lan.gateway
        assert ask(None, "127.0.0.1", 8081) == lan.gateway
        assert ask(None, uplink, 8080) == uplink
        assert ask(None, "127.0.0.1", 5353, "udp") == lan.gateway
        # From another host: its own address shows, and 127.0.0.1-only stays closed.
        assert ask(other_host.path, uplink, 8080) == "203.0.113.2"
        assert ask(other_host.path, uplink, 5353, "udp") == "203.0.113.2"
        assert ask(other_host.path, uplink, 8081, timeout=0.5) == ""
        # Hairpin: a neighbour, and the container itself, through the host's address.
        assert ask(a.path, uplink, 8080) == lan.gateway
        assert ask(b.path, lan.gateway, 8080) == lan.gateway
    firewall.apply(Ruleset([lan.rules()]))
    with serving(b.path, "0.0.0.0", 80):
        assert ask(None, "127.0.0.1", 8080, timeout=0.5) == ""
        assert ask(b.path, "10.88.0.3", 80) == "10.88.0.3"


def test_masquerade_takes_containers_out(host, boxes):
    lan = Lan("dytb0", "10.88.0.0/24")
    a, outside = boxes(), boxes()
    lan.join(a, "dytva", "10.88.0.2")
    uplink = world(outside)
    with serving(outside.path, "203.0.113.2", 80):
        # The other host has no route back to the containers' subnet...
        assert ask(a.path, "203.0.113.2", 80, timeout=0.5) == ""
        firewall.apply(Ruleset([lan.rules()]))
        # ...so they go out with the host's address.
        assert ask(a.path, "203.0.113.2", 80) == uplink
        firewall.apply(Ruleset([NetworkRules("dytb0", lan.subnets, masquerade=False)]))
        assert ask(a.path, "203.0.113.2", 80, timeout=0.5) == ""


def test_networks_are_isolated_and_internal_ones_have_no_way_out(host, boxes):
    one = Lan("dytb1", "10.88.1.0/24")
    two = Lan("dytb2", "10.88.2.0/24")
    closed = Lan("dytb3", "10.88.3.0/24", internal=True)
    a, b, c, c2, outside = boxes(), boxes(), boxes(), boxes(), boxes()
    one.join(a, "dytva", "10.88.1.2")
    two.join(b, "dytvb", "10.88.2.2")
    closed.join(c, "dytvc", "10.88.3.2")
    closed.join(c2, "dytvd", "10.88.3.3")
    world(outside)
    with serving(b.path, "0.0.0.0", 80), serving(outside.path, "0.0.0.0", 80), \
            serving(c2.path, "0.0.0.0", 80), serving(a.path, "0.0.0.0", 80):
        # Without dockyard's rules the host routes between its bridges.
        assert ask(a.path, "10.88.2.2", 80) == "10.88.1.2"
        firewall.apply(Ruleset([one.rules(), two.rules(), closed.rules()]))
        assert ask(a.path, "10.88.2.2", 80, timeout=0.5) == ""
        assert ask(b.path, "10.88.1.2", 80, timeout=0.5) == ""
        assert ask(a.path, "203.0.113.2", 80) != ""
        # The internal network: its members reach each other and nothing else.
        assert ask(c.path, "10.88.3.3", 80) == "10.88.3.2"
        assert ask(c.path, "203.0.113.2", 80, timeout=0.5) == ""
        assert ask(c.path, "10.88.1.2", 80, timeout=0.5) == ""
        assert ask(a.path, "10.88.3.3", 80, timeout=0.5) == ""


def test_ipv6_between_containers_and_published(host, boxes):
    lan = Lan("dytb0", "10.88.0.0/24", "fd00:88::/64")
    a, b = boxes(), boxes()
    lan.join(a, "dytva", "10.88.0.2", "fd00:88::2")
    lan.join(b, "dytvb", "10.88.0.3", "fd00:88::3")
    firewall.apply(Ruleset([lan.rules()], [
        PublishedPort("tcp", 8080, ip_address("fd00:88::3"), 80, "dytb0")]))
    assert "fd00:88::/64" in nft("list", "table", "ip6", "dockyard")
    with serving(b.path, "::", 80):
        assert ask(a.path, "fd00:88::3", 80) == "fd00:88::2"
        assert ask(None, "fd00:88::1", 8080) == "fd00:88::1"
        assert ask(a.path, "10.88.0.3", 80) in ("10.88.0.2", "::ffff:10.88.0.2")


def test_apply_replaces_its_tables_and_touches_no_other(host):
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "table inet mine { chain input { type filter hook input priority 0; "
        "policy accept; tcp dport 9 counter; }; }\n"))
    mine = nft("list", "table", "inet", "mine")
    lan_a = NetworkRules("dytb1", [IPv4Network("10.88.1.0/24")])
    lan_b = NetworkRules("dytb2", [IPv4Network("10.88.2.0/24")], internal=True)
    firewall.apply(Ruleset([lan_a]))
    assert "10.88.1.0/24" in nft("list", "table", "ip", "dockyard")
    firewall.apply(Ruleset([lan_b]))
    rules = nft("list", "table", "ip", "dockyard")
    assert "10.88.1.0/24" not in rules and '"dytb2"' in rules
    assert firewall.tables() == ["ip dockyard"]  # no IPv6 subnet: no ip6 table
    firewall.apply(Ruleset([lan_b]), table="dockyard-t1")
    assert firewall.tables() == ["ip dockyard", "ip dockyard-t1"]
    firewall.clear()
    firewall.clear()
    assert firewall.tables() == ["ip dockyard-t1"]
    firewall.clear(table="dockyard-t1")
    assert firewall.tables() == []
    assert nft("list", "table", "inet", "mine") == mine


def test_a_foreign_forward_chain_with_policy_drop(host, boxes):
    """dockerd's ``iptables -P FORWARD DROP`` (iptables-nft: table ip filter): dockyard
    adds accept rules there, marked, and takes them (only them) away again."""
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "table ip filter { chain FORWARD { type filter hook forward priority 0; "
        'policy drop; iifname "other0" accept comment "theirs"; }; }\n'))
    theirs = nft("list", "chain", "ip", "filter", "FORWARD")
    lan = Lan("dytb0", "10.88.0.0/24")
    closed = Lan("dytb3", "10.88.3.0/24", internal=True)
    a, outside = boxes(), boxes()
    lan.join(a, "dytva", "10.88.0.2")
    world(outside)
    with serving(outside.path, "0.0.0.0", 80):
        firewall.apply(Ruleset([lan.rules()]), table="dockyard-x")
        firewall.apply(Ruleset([lan.rules(), closed.rules()]))
        chain = nft("list", "chain", "ip", "filter", "FORWARD")
        assert chain.count('comment "dockyard"') == 3
        assert chain.count('comment "dockyard-x"') == 2
        assert 'iifname "dytb3" oifname "dytb3" accept comment "dockyard"' in chain
        assert ask(a.path, "203.0.113.2", 80) == "203.0.113.1"
        firewall.clear(table="dockyard-x")
        firewall.apply(Ruleset([lan.rules()]))
        assert nft("list", "chain", "ip", "filter", "FORWARD").count("dockyard") == 2
        firewall.clear()
        assert nft("list", "chain", "ip", "filter", "FORWARD") == theirs
        assert ask(a.path, "203.0.113.2", 80, timeout=0.5) == ""


def test_attach_replaces_a_stale_pair_and_fails_cleanly(host, boxes, tmp_path):
    lan = Lan("dytb0", "10.88.0.0/24")
    old, new = boxes(), boxes()
    lan.join(old, "dytva", "10.88.0.2")  # then "crashed": its pair was never detached
    lan.join(new, "dytva", "10.88.0.2")
    with serving(new.path, "10.88.0.2", 80):
        assert ask(None, "10.88.0.2", 80) == lan.gateway
    with pytest.raises(NotFound, match="bridge dytnone not found"):
        bridge.attach(new.path, "dytnone", host_ifname="dytvb", addresses=[], gateways=[])
    with pytest.raises(NotFound, match="network namespace"):
        bridge.attach(str(tmp_path / "gone"), "dytb0", host_ifname="dytvb", addresses=[],
                      gateways=[])
    # The address is already used inside the namespace: the kernel refuses, nothing stays.
    with pytest.raises(Exception, match="cannot configure eth1"):
        bridge.attach(new.path, "dytb0", host_ifname="dytvb", ifname="eth1",
                      addresses=[ip_interface("10.88.0.2/24")] * 2, gateways=[])
    assert bridge.links("dytv") == ["dytva"]


def test_ensure_bridge_is_idempotent_and_refuses_a_non_bridge(host):
    addresses = [ip_interface("10.88.0.1/24"), ip_interface("fd00:88::1/64")]
    bridge.ensure_bridge("dytb0", addresses, mtu=1400)
    bridge.ensure_bridge("dytb0", addresses, mtu=1400)
    (link,) = json.loads(ip("-j", "addr", "show", "dytb0"))
    assert link["mtu"] == 1400
    found = sorted(f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
                   if a["scope"] == "global")
    assert found == ["10.88.0.1/24", "fd00:88::1/64"]
    ip("link", "add", "dytveth", "type", "veth", "peer", "name", "dytpeer")
    with pytest.raises(Conflict, match=r"dytveth .* is not a bridge"):
        bridge.ensure_bridge("dytveth", addresses)
    for name in ("a-name-too-long-for-linux", "", "a/b", "a b", ".."):
        with pytest.raises(InvalidArgument, match="invalid bridge name"):
            bridge.ensure_bridge(name, addresses)
    assert bridge.links("a") == []


def test_host_routes_and_the_subnet_chosen(host):
    ip("link", "add", "dytveth", "type", "veth", "peer", "name", "dytpeer")
    ip("addr", "add", "172.17.5.1/24", "dev", "dytveth")
    ip("link", "set", "dytveth", "up")
    ip("link", "set", "dytpeer", "up")
    ip("route", "add", "172.19.0.0/16", "via", "172.17.5.254")
    routes = ipam.host_routes()
    assert ip_network("172.17.5.0/24") in routes and ip_network("172.19.0.0/16") in routes
    assert not any(r.prefixlen == 0 or r.is_link_local for r in routes)
    assert ipam.choose_subnet([]) == ip_network("172.18.0.0/16")
    assert ipam.choose_subnet([ip_network("172.18.0.0/16")]) == ip_network("172.20.0.0/16")


def test_on_the_real_host(boxes):
    """The host's own namespace, with unique names: traffic through a published port on
    127.0.0.1, then nothing of it left."""
    tag = uuid.uuid4().hex[:6]
    name, veth, table = f"dyt{tag}", f"dyt{tag}v", f"dockyard-test-{tag}"
    routes = ipam.host_routes()
    candidates = [ip_network(f"10.{random.randrange(200, 250)}.{i}.0/24") for i in range(256)]
    subnet = next(c for c in candidates if not any(ipam.overlaps(c, r) for r in routes))
    gateway = subnet.network_address + 1
    box = boxes()
    try:
        bridge.ensure_bridge(name, [ip_interface(f"{gateway}/24")])
        bridge.attach(box.path, name, host_ifname=veth,
                      addresses=[ip_interface(f"{gateway + 1}/24")], gateways=[gateway])
        from dockyard.network.ports import free_port

        port = free_port("tcp", "127.0.0.1")
        firewall.apply(Ruleset([NetworkRules(name, [subnet])], [
            PublishedPort("tcp", port, gateway + 1, 80, name, ip_address("127.0.0.1"))]),
            table=table)
        with serving(box.path, "0.0.0.0", 80):
            assert ask(None, "127.0.0.1", port) == str(gateway)
    finally:
        firewall.clear(table=table)
        bridge.detach(veth)
        bridge.delete_bridge(name)
    assert bridge.links(f"dyt{tag}") == []
    assert firewall.tables(table) == []
    with pytest.raises(OSError) as gone:
        os.stat(f"/proc/sys/net/ipv4/conf/{name}")
    assert gone.value.errno == errno.ENOENT


def test_dockerds_forward_drop_through_iptables(host, boxes):
    """What dockerd does, through iptables (iptables-nft): the accept rules show there
    as plain iptables rules, and go away again."""

    def iptables(*args: str) -> str:
        return subprocess.run(["iptables", *args], check=True, capture_output=True,
                              text=True).stdout

    iptables("-P", "FORWARD", "DROP")
    iptables("-A", "FORWARD", "-i", "other0", "-j", "ACCEPT")
    before = iptables("-S", "FORWARD")
    lan = Lan("dytb0", "10.88.0.0/24")
    a, outside = boxes(), boxes()
    lan.join(a, "dytva", "10.88.0.2")
    world(outside)
    with serving(outside.path, "0.0.0.0", 80):
        firewall.apply(Ruleset([lan.rules()]))
        rules = iptables("-S", "FORWARD").splitlines()
        assert rules[1:4] == [
            "-A FORWARD -i dytb0 -m comment --comment dockyard -j ACCEPT",
            "-A FORWARD -o dytb0 -m comment --comment dockyard -j ACCEPT",
            "-A FORWARD -i other0 -j ACCEPT"]
        assert ask(a.path, "203.0.113.2", 80) == "203.0.113.1"
        firewall.clear()
        assert iptables("-S", "FORWARD") == before


@pytest.mark.parametrize("name", ['x" ; flush ruleset ; "', "a b", "", "br\n0"])
def test_hostile_input_never_reaches_nft(host, name):
    firewall.apply(Ruleset([NetworkRules("dytb0", [IPv4Network("10.88.0.0/24")])]))
    before = nft("list", "ruleset")
    with pytest.raises(InvalidArgument, match="invalid name for the firewall"):
        firewall.apply(Ruleset([NetworkRules(name, [IPv4Network("10.88.1.0/24")])]))
    with pytest.raises(InvalidArgument):
        firewall.apply(Ruleset(), table=name)
    for port in (PublishedPort("tcp; flush ruleset;", 80, ip_address("10.88.0.2"), 80, "dytb0"),
                 PublishedPort("tcp", 0, ip_address("10.88.0.2"), 80, "dytb0"),
                 PublishedPort("udp", 80, ip_address("10.88.0.2"), 65536, "dytb0")):
        with pytest.raises(InvalidArgument, match="invalid published port"):
            firewall.apply(Ruleset([], [port]))
    assert nft("list", "ruleset") == before


def test_without_privileges_the_errors_say_so():
    """As a user without CAP_NET_ADMIN: a clear one-line PermissionDenied."""

    def as_nobody(w: int) -> None:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        for attempt in (lambda: bridge.ensure_bridge("dytnope", []),
                        lambda: firewall.apply(Ruleset(), table="dockyard-nope")):
            try:
                attempt()
            except PermissionDenied as e:
                os.write(w, f"{e}\n".encode())

    status, out = forked.in_child(as_nobody)
    assert status == 0, out.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 2 and all("needs root" in line for line in lines), lines


def test_roots_applying_at_once_keep_their_own_rules(host):
    """Several state roots (processes) replacing their tables at the same time, with a
    foreign FORWARD drop chain they all add to: no transaction fails, each ends with
    its own rules, and clearing one leaves the others'."""
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "table ip filter { chain FORWARD { type filter hook forward priority 0; "
        "policy drop; }; }\n"))

    def ruleset(n: int) -> Ruleset:
        return Ruleset([NetworkRules(f"dytb{n}", [IPv4Network(f"10.88.{n}.0/24")])])

    pids = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            code = 1
            try:
                for _ in range(25):
                    firewall.apply(ruleset(n), table=f"dockyard-r{n}")
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    chain = nft("list", "chain", "ip", "filter", "FORWARD")
    assert [chain.count(f'comment "dockyard-r{n}"') for n in range(3)] == [2, 2, 2]
    firewall.clear(table="dockyard-r1")
    assert firewall.tables() == ["ip dockyard-r0", "ip dockyard-r2"]
    chain = nft("list", "chain", "ip", "filter", "FORWARD")
    assert [chain.count(f'comment "dockyard-r{n}"') for n in range(3)] == [2, 0, 2]


@pytest.mark.parametrize("change", ["flush chain ip filter FORWARD",
                                    "delete table ip filter"])
def test_apply_survives_another_program_changing_the_chain_meanwhile(
        host, monkeypatch, change):
    """Another firewall that changes the foreign FORWARD chain between apply's reading
    and its transaction (``iptables -F FORWARD``, a reload) fails that transaction:
    apply writes it again from a new reading."""
    def drop_chain() -> None:
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
            "table ip filter { chain FORWARD { type filter hook forward priority 0; "
            "policy drop; }; }\n"))

    drop_chain()
    rules = Ruleset([NetworkRules("dytb0", [IPv4Network("10.88.0.0/24")])])
    firewall.apply(rules)
    assert nft("list", "chain", "ip", "filter", "FORWARD").count("dockyard") == 2
    reading = firewall._forward_chains
    readings = []

    def then_changed(nft_ctx: object) -> dict[str, object]:
        listing = reading(nft_ctx)  # type: ignore[arg-type]
        readings.append(listing)
        if len(readings) == 1:  # the other program, right after the first reading
            nft(*change.split())
        return listing

    monkeypatch.setattr(firewall, "_forward_chains", then_changed)
    firewall.apply(Ruleset([*rules.networks,
                            NetworkRules("dytb1", [IPv4Network("10.88.1.0/24")])]))
    assert len(readings) == 2  # the first transaction failed, the second did not
    assert firewall.tables() == ["ip dockyard"]
    assert 'iifname "dytb1"' in nft("list", "table", "ip", "dockyard")
    if change.startswith("flush"):
        assert nft("list", "chain", "ip", "filter", "FORWARD").count("dockyard") == 4
    firewall.clear()
    assert "dockyard" not in nft("list", "ruleset")


def test_a_foreign_input_chain_with_policy_drop_lets_dns_through(host, boxes):
    """Another firewall's INPUT drop: the containers of a network with an embedded DNS
    server still reach it on the gateway (UDP and TCP 53), and nothing else."""
    subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
        "table ip filter { chain INPUT { type filter hook input priority 0; "
        "policy drop; }; }\n"))
    theirs = nft("list", "chain", "ip", "filter", "INPUT")
    lan = Lan("dytb0", "10.88.0.0/24")
    a = boxes()
    lan.join(a, "dytva", "10.88.0.2")
    with serving(None, lan.gateway, 53, "udp"), serving(None, lan.gateway, 53), \
            serving(None, lan.gateway, 81):
        firewall.apply(Ruleset([lan.rules()]))  # a network without DNS server
        assert ask(a.path, lan.gateway, 53, "udp", timeout=0.3) == ""
        firewall.apply(Ruleset([NetworkRules("dytb0", lan.subnets, dns=True)]))
        assert ask(a.path, lan.gateway, 53, "udp") == "10.88.0.2"
        assert ask(a.path, lan.gateway, 53) == "10.88.0.2"
        assert ask(a.path, lan.gateway, 81, timeout=0.3) == ""
        rules = subprocess.run(["iptables", "-S", "INPUT"], check=True, text=True,
                               capture_output=True).stdout.splitlines()
        assert "-A INPUT -d 10.88.0.0/24 -i dytb0 -p udp -m udp --dport 53 -m comment " \
               "--comment dockyard -j ACCEPT" in rules
        firewall.clear()
        assert nft("list", "chain", "ip", "filter", "INPUT") == theirs
        assert ask(a.path, lan.gateway, 53, "udp", timeout=0.3) == ""
