"""IPAM: the subnet a new network gets, and the addresses its containers get."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest

from dockyard.errors import Conflict, InvalidArgument, Unavailable
from dockyard.network import ipam


def test_the_default_pools_are_dockers():
    assert ipam.DEFAULT_POOLS[0] == ip_network("172.17.0.0/16")
    assert ipam.DEFAULT_POOLS[14] == ip_network("172.31.0.0/16")
    assert ipam.DEFAULT_POOLS[15] == ip_network("192.168.0.0/20")
    assert ipam.DEFAULT_POOLS[-1] == ip_network("192.168.240.0/20")
    assert len(ipam.DEFAULT_POOLS) == 15 + 16


def test_a_subnet_avoids_other_networks_and_the_hosts_routes():
    assert ipam.choose_subnet([], host=[]) == ip_network("172.17.0.0/16")
    taken = [ip_network("172.17.0.0/16")]
    host = [ip_network("172.18.5.0/24"), ip_network("fd00::/8"), ip_network("10.0.0.0/8")]
    assert ipam.choose_subnet(taken, host=host) == ip_network("172.19.0.0/16")
    # A wide route of the host (a VPN's 172.16.0.0/12) rules out every 172 pool.
    assert ipam.choose_subnet([], host=[ip_network("172.16.0.0/12")]) == \
        ip_network("192.168.0.0/20")


def test_no_free_pool_is_a_clear_error():
    with pytest.raises(Unavailable, match="non-overlapping IPv4 address pool"):
        ipam.choose_subnet([ip_network("172.16.0.0/12"), ip_network("192.168.0.0/16")],
                           host=[])


def test_overlaps_never_across_families():
    assert ipam.overlaps(ip_network("10.0.0.0/8"), ip_network("10.1.0.0/16"))
    assert not ipam.overlaps(ip_network("10.0.0.0/16"), ip_network("10.1.0.0/16"))
    assert not ipam.overlaps(ip_network("10.0.0.0/8"), ip_network("::/0"))


def test_addresses_are_the_lowest_free_never_network_broadcast_or_gateway():
    pool = ipam.Pool(ip_network("10.5.0.0/29"))
    assert pool.gateway == IPv4Address("10.5.0.1")
    got = [pool.allocate() for _ in range(5)]
    assert got == [IPv4Address(f"10.5.0.{i}") for i in range(2, 7)]
    with pytest.raises(Unavailable, match="no available IPv4 addresses"):
        pool.allocate()
    pool.release(IPv4Address("10.5.0.3"))
    assert pool.allocate() == IPv4Address("10.5.0.3")


def test_allocated_addresses_are_kept_in_the_callers_set():
    taken = {ip_address("10.5.0.2")}
    pool = ipam.Pool(ip_network("10.5.0.0/24"), ip_address("10.5.0.254"), None, taken)
    assert pool.allocate() == ip_address("10.5.0.1")  # the gateway is elsewhere
    assert taken == {ip_address("10.5.0.1"), ip_address("10.5.0.2")}


def test_ip_range_limits_where_addresses_come_from():
    pool = ipam.Pool(ip_network("10.6.0.0/16"), ip_address("10.6.0.1"),
                     ip_network("10.6.3.0/24"))
    assert pool.allocate() == ip_address("10.6.3.0")  # not the subnet's network address
    assert pool.allocate(ip_address("10.6.3.9")) == ip_address("10.6.3.9")
    with pytest.raises(InvalidArgument, match="does not belong to any of this network"):
        pool.allocate(ip_address("10.6.4.1"))


def test_a_preferred_address_outside_the_subnet_or_taken_is_refused():
    pool = ipam.Pool(ip_network("10.7.0.0/24"))
    assert pool.allocate(ip_address("10.7.0.50")) == ip_address("10.7.0.50")
    with pytest.raises(Conflict, match="Address already in use"):
        pool.allocate(ip_address("10.7.0.50"))
    for reserved in ("10.7.0.0", "10.7.0.1", "10.7.0.255"):
        with pytest.raises(Conflict):
            pool.allocate(ip_address(reserved))
    with pytest.raises(InvalidArgument, match=r"Invalid address 10\.8\.0\.1"):
        pool.allocate(ip_address("10.8.0.1"))
    with pytest.raises(InvalidArgument):
        pool.allocate(ip_address("fd00::1"))


def test_a_gateway_or_range_outside_the_subnet_is_refused():
    with pytest.raises(InvalidArgument, match=r"no matching subnet for gateway 10\.1\.0\.1"):
        ipam.Pool(ip_network("10.0.0.0/24"), ip_address("10.1.0.1"))
    with pytest.raises(InvalidArgument, match=r"no matching subnet for range 10\.0\.1\.0/24"):
        ipam.Pool(ip_network("10.0.0.0/24"), None, ip_network("10.0.1.0/24"))
    with pytest.raises(InvalidArgument, match="too small"):
        ipam.Pool(ip_network("10.0.0.0/31"))


def test_ipv6_pools_have_no_broadcast_and_stay_fast_on_a_slash_64():
    pool = ipam.Pool(ip_network("fd00:1::/64"))
    assert pool.gateway == IPv6Address("fd00:1::1")
    assert [pool.allocate() for _ in range(3)] == \
        [IPv6Address("fd00:1::2"), IPv6Address("fd00:1::3"), IPv6Address("fd00:1::4")]
    full = ipam.Pool(ip_network("fd00:2::/126"))
    assert [full.allocate() for _ in range(2)] == \
        [IPv6Address("fd00:2::2"), IPv6Address("fd00:2::3")]
    with pytest.raises(Unavailable, match="IPv6"):
        full.allocate()


def test_mac_addresses_are_dockers():
    assert ipam.mac_for(ip_address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert ipam.mac_for(ip_address("fd00::a:b0c")) == "02:42:00:0a:0b:0c"


@pytest.mark.parametrize(("text", "message"), [
    ("10.0.0.0", "invalid CIDR address: 10.0.0.0"),
    ("banana/16", "invalid CIDR address"),
    ("10.0.0.0/33", "invalid CIDR address"),
    ("10.0.0.1/24", "it should be 10.0.0.0/24"),
])
def test_bad_subnets_are_clear_errors(text, message):
    with pytest.raises(InvalidArgument, match=message):
        ipam.parse_subnet(text)


def test_subnets_and_addresses_parse():
    assert ipam.parse_subnet("10.9.0.0/16") == ip_network("10.9.0.0/16")
    assert ipam.parse_subnet("fd00:9::/64") == ip_network("fd00:9::/64")
    assert ipam.parse_address("10.9.0.5") == ip_address("10.9.0.5")
    with pytest.raises(InvalidArgument, match=r"invalid IP address: 10\.9"):
        ipam.parse_address("10.9")
