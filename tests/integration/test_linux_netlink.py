"""dockyard.linux.netlink on the real kernel: links, addresses, routes, and its errors.

Each test runs in a forked child that unshares a network namespace of its own (the
"host" of the test), and makes a second one (``other_netns``: a file descriptor is all
that keeps it) for the far end of veth pairs: whatever happens, everything dies with the
child. What the kernel ends up with is read back by ``ip`` (iproute2), not by the
module under test; traffic goes through the links made.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from ipaddress import ip_address, ip_interface
from typing import Any

import pytest

import forked
from dockyard.linux import syscalls as sc
from dockyard.linux.netlink import IFA_F_NODAD, RouteSocket

pytestmark = pytest.mark.root


def in_private_netns(body: Callable[[], None]) -> None:
    """``body()`` in a forked child, in a network namespace of its own."""

    def child(_: int) -> None:
        sc.unshare(sc.CLONE_NEWNET)
        body()

    status, out = forked.in_child(child)
    assert status == 0, out.decode()


def other_netns() -> int:
    """A file descriptor of a new network namespace; the calling thread stays where it is."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.unshare(sc.CLONE_NEWNET)
        there = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        sc.setns(here, sc.CLONE_NEWNET)
        os.close(here)
    return there


def ip(*args: str, netns: int | None = None) -> Any:
    """The JSON output of ``ip -j -d ARGS``, in the namespace ``netns`` if given."""
    prefix = [] if netns is None else ["nsenter", f"--net=/proc/self/fd/{netns}"]
    out = subprocess.run([*prefix, "ip", "-j", "-d", *args], check=True, capture_output=True,
                         text=True, pass_fds=() if netns is None else (netns,)).stdout
    return json.loads(out)


def names(netns: int | None = None) -> list[str]:
    return sorted(link["ifname"] for link in ip("link", netns=netns))


def connect_from(netns: int, address: str, port: int) -> None:
    """A TCP connection from the namespace ``netns`` (a forked child enters it)."""

    def client(_: int) -> None:
        sc.setns(netns, sc.CLONE_NEWNET)
        with socket.create_connection((address, port), timeout=5) as s:
            s.sendall(b"?")

    status, out = forked.in_child(client)
    assert status == 0, out.decode()


def test_a_bridge_and_a_veth_pair_into_another_namespace_carry_traffic():
    def body() -> None:
        box = other_netns()
        with RouteSocket() as nl:
            nl.new_bridge("br-t", mtu=1400)
            br = nl.link("br-t")
            assert br is not None and (br.name, br.kind, br.mtu) == ("br-t", "bridge", 1400)
            for address in ("10.77.0.1/24", "192.0.2.1/32"):
                nl.add_address(br.index, ip_interface(address))
            for address in ("fd00:77::1/64", "2001:db8::1/128"):
                nl.add_address(br.index, ip_interface(address), IFA_F_NODAD)
            nl.set_link(br.index, up=True)
            nl.new_veth("veth-t", "eth0", peer_netns_fd=box, mtu=1400, peer_mtu=1300,
                        master=br.index, peer_mac="02:42:0a:4d:00:02")
            veth = nl.link("veth-t")
            assert veth is not None and (veth.kind, veth.mtu) == ("veth", 1400)
            nl.set_hairpin(veth.index, True)
            nl.set_link(veth.index, up=True)
            assert nl.link("eth0") is None  # made in the other namespace only
        with RouteSocket(box) as ns:
            eth0 = ns.link("eth0")
            assert eth0 is not None and eth0.mtu == 1300
            ns.add_address(eth0.index, ip_interface("10.77.0.2/24"))
            ns.add_address(eth0.index, ip_interface("fd00:77::2/64"), IFA_F_NODAD)
            ns.set_link(eth0.index, up=True)
            ns.add_default_route(eth0.index, ip_address("10.77.0.1"))
            ns.add_default_route(eth0.index, ip_address("fd00:77::1"))
            assert [link.name for link in ns.links()] == ["lo", "eth0"]

        (port,) = ip("link", "show", "veth-t")
        slave = port["linkinfo"]["info_slave_data"]
        assert (port["master"], port["mtu"], slave["hairpin"]) == ("br-t", 1400, True)
        (inside,) = ip("addr", "show", "eth0", netns=box)
        assert (inside["address"], inside["operstate"], inside["mtu"]) == \
            ("02:42:0a:4d:00:02", "UP", 1300)
        assert sorted((a["local"], a["prefixlen"]) for a in inside["addr_info"]
                      if a["scope"] == "global") == [("10.77.0.2", 24), ("fd00:77::2", 64)]
        routes = [(r["dst"], r["gateway"], r["protocol"]) for family in ("-4", "-6")
                  for r in ip(family, "route", netns=box) if "gateway" in r]
        assert routes == [("default", "10.77.0.1", "static"), ("default", "fd00:77::1", "static")]

        # Traffic: on-link, and through the default routes to addresses off the subnets
        # (no DAD wait: IFA_F_NODAD made the IPv6 addresses usable at once).
        for server, client in (("10.77.0.1", "10.77.0.2"), ("192.0.2.1", "10.77.0.2"),
                               ("fd00:77::1", "fd00:77::2"), ("2001:db8::1", "fd00:77::2")):
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as listener:
                listener.bind((server, 0))
                listener.listen()
                listener.settimeout(5)
                connect_from(box, server, listener.getsockname()[1])
                conn, peer = listener.accept()
                conn.close()
                assert peer[0] == client

        # Deleting one end deletes the pair: nothing is left in either namespace.
        with RouteSocket() as nl:
            nl.delete_link(veth.index)
            nl.delete_link(br.index)
            assert [link.name for link in nl.links()] == ["lo"]
        assert names(box) == ["lo"] and names() == ["lo"]
        os.close(box)

    in_private_netns(body)


def test_set_link_renames_and_changes_mac_mtu_master_and_state():
    def body() -> None:
        with RouteSocket() as nl:
            nl.new_bridge("br-t")
            nl.new_veth("a-t", "b-t")
            br, a = nl.link("br-t"), nl.link("a-t")
            assert br is not None and a is not None
            nl.set_link(a.index, name="renamed-t", mac="02:00:00:00:00:01", mtu=1280,
                        master=br.index, up=True)
            (link,) = ip("link", "show", "renamed-t")
            assert (link["ifindex"], link["address"], link["mtu"], link["master"]) == \
                (a.index, "02:00:00:00:00:01", 1280, "br-t")
            assert "UP" in link["flags"]
            assert nl.link("a-t") is None
            nl.set_link(a.index, master=0, up=False)
            (link,) = ip("link", "show", "renamed-t")
            assert "master" not in link and "UP" not in link["flags"]
            nl.delete_link(a.index)
            nl.delete_link(br.index)
        assert names() == ["lo"]

    in_private_netns(body)


def test_a_dump_longer_than_one_datagram():
    """Links enough that the kernel splits the dump over several datagrams."""

    def body() -> None:
        with RouteSocket() as nl:
            for n in range(60):
                nl.new_veth(f"v{n}-t", f"p{n}-t")
            dumped = sorted(link.name for link in nl.links())
            assert dumped == names() and len(dumped) == 121
            for n in range(60):
                nl.delete_link(nl.link(f"v{n}-t").index)  # type: ignore[union-attr]
            assert [link.name for link in nl.links()] == ["lo"]

    in_private_netns(body)


def test_dumps_while_another_process_changes_links():
    """Each dump lists every link that stays, once (the kernel marks a dump that links
    changed under as interrupted, and it is asked again)."""

    def body() -> None:
        with RouteSocket() as nl:
            for n in range(40):
                nl.new_veth(f"v{n}-t", f"p{n}-t")
            churn = os.fork()
            if churn == 0:  # pragma: no cover (child)
                try:
                    with RouteSocket() as other:
                        while True:
                            other.new_veth("churn", "churn-peer")
                            other.delete_link(other.link("churn").index)  # type: ignore[union-attr]
                finally:
                    os._exit(1)
            try:
                for _ in range(100):
                    dumped = [link.name for link in nl.links()]
                    assert len(set(dumped)) == len(dumped), dumped
                    assert len(set(dumped) - {"churn", "churn-peer"}) == 81, dumped
            finally:
                os.kill(churn, signal.SIGKILL)
                os.waitpid(churn, 0)

    in_private_netns(body)


def test_failures_are_oserrors_with_the_kernels_errno():
    def body() -> None:
        box = other_netns()
        with RouteSocket() as nl:
            nl.new_bridge("br-t")
            nl.new_veth("a-t", "b-t")
            br, a = nl.link("br-t"), nl.link("a-t")
            assert br is not None and a is not None
            nl.add_address(br.index, ip_interface("10.77.0.1/24"))
            failures: list[tuple[Callable[[], object], int, str]] = [
                (lambda: nl.new_bridge("br-t"), errno.EEXIST, "create bridge br-t"),
                (lambda: nl.new_veth("b-t", "c-t"), errno.EEXIST, "create veth pair b-t"),
                (lambda: nl.add_address(br.index, ip_interface("10.77.0.1/24")),
                 errno.EEXIST, "add address 10.77.0.1/24"),
                (lambda: nl.delete_link(9999), errno.ENODEV, "delete link 9999"),
                (lambda: nl.set_link(9999, up=True), errno.ENODEV, "set link 9999"),
                (lambda: nl.add_address(9999, ip_interface("10.9.0.1/24")), errno.ENODEV,
                 "add address"),
                # Not a bridge port.
                (lambda: nl.set_hairpin(a.index, True), errno.EOPNOTSUPP, "set hairpin"),
                # Bad names: characters the kernel refuses, and one too long.
                (lambda: nl.new_bridge("a/b"), errno.EINVAL, "create bridge a/b"),
                (lambda: nl.new_bridge("a b"), errno.EINVAL, "create bridge a b"),
                (lambda: nl.new_bridge(""), errno.EINVAL, "create bridge"),
                (lambda: nl.new_bridge("x" * 16), errno.ERANGE, "create bridge"),
                (lambda: nl.set_link(a.index, name="x:y"), errno.EINVAL, "set link"),
                (lambda: nl.new_veth("d-t", "e-t", peer_netns_fd=0), errno.EINVAL,
                 "create veth pair d-t"),
            ]
            for attempt, code, what in failures:
                with pytest.raises(OSError) as failed:
                    attempt()
                assert failed.value.errno == code and str(failed.value).startswith(
                    f"[Errno {code}] {what}"), (what, failed.value)
            # The kernel's own explanation, when it gives one, is in the message.
            with pytest.raises(OSError, match=r"File exists \(.+\)"):
                nl.add_address(br.index, ip_interface("10.77.0.1/24"))
            # What netlink cannot carry never reaches the kernel: "a\0b" would make "a".
            with pytest.raises(ValueError, match="null character"):
                nl.new_bridge("a\0b")
            with pytest.raises(ValueError, match="invalid MAC address 'zz'"):
                nl.set_link(a.index, mac="zz")
            # The socket is still in step after all those errors.
            assert nl.link("br-t") == br
            with RouteSocket(box) as ns:
                lo = ns.link("lo")
                assert lo is not None
                ns.add_address(lo.index, ip_interface("127.0.0.2/8"))
                with pytest.raises(OSError) as failed:
                    ns.add_default_route(lo.index, ip_address("10.0.0.1"))
                assert failed.value.errno == errno.ENETUNREACH  # lo is down
            nl.delete_link(a.index)
            nl.delete_link(br.index)
            assert [link.name for link in nl.links()] == ["lo"]
        assert names(box) == ["lo"]
        os.close(box)

    in_private_netns(body)


def test_a_socket_in_a_namespace_that_is_not_one():
    """A file that is no namespace: setns fails in the helper thread, and no thread of
    the caller has moved."""
    before = os.stat("/proc/thread-self/ns/net").st_ino
    with open("/proc/self/stat") as not_a_namespace, pytest.raises(OSError) as failed:
        RouteSocket(not_a_namespace.fileno())
    assert failed.value.errno == errno.EINVAL and "setns" in str(failed.value)
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
    assert [t.name for t in threading.enumerate() if t.name == "dockyard-netns"] == []


def test_without_cap_net_admin_the_kernel_says_eperm():
    def body() -> None:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        with RouteSocket() as nl:
            assert [link.name for link in nl.links()] == ["lo"]  # reading is allowed
            with pytest.raises(OSError) as failed:
                nl.new_bridge("br-t")
            assert failed.value.errno == errno.EPERM

    in_private_netns(body)
