"""dockyard's firewall: nftables rules in its own tables, replaced as a whole.

The engine computes a ``Ruleset`` from its database (every network and every published
port) and calls ``apply``, which deletes and recreates ``table ip dockyard`` and ``table
ip6 dockyard`` in ONE nftables transaction (through libnftables): a reader never sees
half a ruleset, a crash leaves the previous one whole, and there is no incremental
patching to go wrong. Nothing of another table is touched, with one exception:

In nftables, a packet accepted by one base chain still goes through the others of the
same hook, and a drop anywhere is final. When another firewall has a FORWARD chain with
policy drop (``iptables -P FORWARD DROP``, as dockerd sets; on Debian 12 iptables is
iptables-nft, so that is ``table ip filter`` chain ``FORWARD``), containers' traffic
would die there whatever dockyard's table says. Then, as podman's netavark does,
``apply`` also puts accept rules for dockyard's bridges in that chain, each with the
name of dockyard's table as its comment, and removes them (and only them) when they are
no longer needed. They match on interface names only, which iptables-nft can still
list (``iptables -S FORWARD``: ``-i dockyard0 -m comment --comment dockyard -j ACCEPT``).
Likewise an INPUT chain with policy drop would keep the containers of a user network
from their embedded DNS server (on the gateway): it gets accept rules for UDP and TCP
port 53 from the network's bridge to its subnet (``-i B -d S -p udp --dport 53``).

What the rules do, per network (bridge B, subnet S) and published port::

    nat prerouting, output   to a local address (fib daddr type local): DNAT of
                             published ports (other hosts, the host itself, containers
                             through the host's addresses)
    nat postrouting          masquerade S leaving by another interface than B or lo
                             masquerade 127.0.0.0/8 leaving by B (ports published on
                             127.0.0.1: needs route_localnet on B, see bridge)
                             masquerade DNATed traffic from S back into B (hairpin)
    filter forward           drop between two different dockyard bridges; drop into
                             and out of an internal network; accept what is
                             established, DNATed, or leaves a non-internal network

Port publishing is kernel NAT only: no userland proxy. From the host, IPv6 ``::1``
cannot be DNATed to a container (the kernel never routes a loopback source out), so a
port published on ``::1`` is not reachable; Docker needs its proxy for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from dockyard.errors import InvalidArgument, PermissionDenied, SystemFailure

TABLE = "dockyard"
# Transactions tried while another program changes the foreign chains meanwhile.
_ATTEMPTS = 5
# The hooks of the foreign base chains whose policy drop needs accept rules of ours.
_HOOKS = ("forward", "input")
_FAMILIES = ("ip", "ip6")


@dataclass(frozen=True)
class NetworkRules:
    """One bridge network as the firewall sees it."""

    bridge: str
    subnets: Sequence[IPv4Network | IPv6Network]
    internal: bool = False
    masquerade: bool = True
    dns: bool = False  # an embedded DNS server listens on its gateways


@dataclass(frozen=True)
class PublishedPort:
    """One published port: ``host_ip`` ``None`` for every address of the host (in the
    family of ``container_ip``)."""

    proto: str
    host_port: int
    container_ip: IPv4Address | IPv6Address
    container_port: int
    bridge: str
    host_ip: IPv4Address | IPv6Address | None = None


@dataclass(frozen=True)
class Ruleset:
    """Everything dockyard's tables must hold; empty means "no tables"."""

    networks: Sequence[NetworkRules] = ()
    ports: Sequence[PublishedPort] = ()


class _Nft:
    """libnftables (``libnftables.so.1``) through ctypes: one context, commands as text,
    JSON output."""

    _lib: ctypes.CDLL | None = None

    def __init__(self) -> None:
        if _Nft._lib is None:
            try:
                lib = ctypes.CDLL("libnftables.so.1")
            except OSError as e:
                raise SystemFailure(f"cannot load libnftables.so.1 ({e}): install "
                                    "the libnftables1 package") from None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            _Nft._lib = lib
        self.lib = _Nft._lib
        self.ctx = self.lib.nft_ctx_new(0)
        self.lib.nft_ctx_output_set_flags(self.ctx, 1 << 4 | 1 << 3)  # JSON, handles
        self.lib.nft_ctx_buffer_output(self.ctx)
        self.lib.nft_ctx_buffer_error(self.ctx)

    def __enter__(self) -> _Nft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.nft_ctx_free(self.ctx)

    def run(self, commands: str) -> str:
        """Run ``commands`` (one transaction); their output, or SystemFailure."""
        if self.lib.nft_run_cmd_from_buffer(self.ctx, commands.encode()) != 0:
            error = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode().strip()
            first = next((line for line in error.splitlines() if line.startswith("Error")),
                         error.splitlines()[0] if error else "unknown error")
            if "Operation not permitted" in error:
                raise PermissionDenied("cannot update the firewall (nftables): operation "
                                       "not permitted (networking needs root, or "
                                       "CAP_NET_ADMIN)")
            raise SystemFailure(f"cannot update the firewall (nftables): {first}")
        return (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()


def _quote(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_.@" for c in name):
        raise InvalidArgument(f"invalid name for the firewall: {name!r}")
    return f'"{name}"'


def _table(family: str, ruleset: Ruleset, table: str) -> list[str]:
    """``table <family> <table>`` as nft text, or [] if it would be empty."""
    version = 4 if family == "ip" else 6
    networks = [n for n in ruleset.networks if any(s.version == version for s in n.subnets)]
    # A port published on an address of the other family than the container's cannot
    # be NATed to it: it is left out.
    ports = [p for p in ruleset.ports if p.container_ip.version == version
             and (p.host_ip is None or p.host_ip.version == version)]
    if not networks and not ports:
        return []
    bridges = sorted({_quote(n.bridge) for n in ruleset.networks})
    publish, postrouting, forward_drop, forward_accept = [], [], [], []
    for port in ports:
        if port.proto not in ("tcp", "udp", "sctp") or not all(
                isinstance(n, int) and 0 < n < 65536
                for n in (port.host_port, port.container_port)):
            raise InvalidArgument(f"invalid published port for the firewall: {port}")
        match = f"{family} daddr {port.host_ip} " if port.host_ip is not None else ""
        target = (f"{port.container_ip}:{port.container_port}" if version == 4
                  else f"[{port.container_ip}]:{port.container_port}")
        publish.append(f"{match}{port.proto} dport {port.host_port} dnat to {target}")
    for network in networks:
        bridge = _quote(network.bridge)
        for subnet in (s for s in network.subnets if s.version == version):
            if network.masquerade and not network.internal:
                # Not what leaves by lo: the host's own packets to a gateway address
                # carry that address as source, and must keep it.
                postrouting.append(f"{family} saddr {subnet} oifname != {bridge} "
                                   'oifname != "lo" masquerade')
            # Hairpin. Matched on the source, not on the input interface: when
            # br_netfilter DNATs a bridged packet back into its own bridge, it runs this
            # hook with no input interface.
            postrouting.append(f"{family} saddr {subnet} oifname {bridge} ct status dnat "
                               "masquerade")
        if version == 4:
            postrouting.append(f"ip saddr 127.0.0.0/8 oifname {bridge} masquerade")
        others = [b for b in bridges if b != bridge]
        if others:
            forward_drop.append(f"iifname {bridge} oifname {{ {', '.join(others)} }} drop")
        if network.internal:
            forward_drop.append(f"iifname {bridge} oifname != {bridge} drop")
            forward_drop.append(f"oifname {bridge} iifname != {bridge} drop")
        else:
            forward_accept.append(f"iifname {bridge} accept")
            forward_accept.append(f"oifname {bridge} ct status dnat accept")
    chains = {
        "publish": publish,
        "prerouting": ["type nat hook prerouting priority dstnat; policy accept;",
                       "fib daddr type local jump publish"],
        "output": ["type nat hook output priority -100; policy accept;",
                   "fib daddr type local jump publish"],
        "postrouting": ["type nat hook postrouting priority srcnat; policy accept;",
                        *postrouting],
        "forward": ["type filter hook forward priority filter; policy accept;",
                    *forward_drop, "ct state established,related accept", *forward_accept],
    }
    lines = [f"table {family} {table} {{"]
    for name, body in chains.items():
        lines += [f"  chain {name} {{", *(f"    {line}" for line in body), "  }"]
    return [*lines, "}"]


def _foreign_drop_chains(listing: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(hook, family, table, chain) of the forward and input base chains with policy
    drop, in the families dockyard's tables serve (ip, ip6, and inet, which covers
    both); dockyard's own chains have policy accept."""
    found = []
    for item in listing.get("nftables", []):
        chain = item.get("chain")
        if (chain and chain.get("hook") in _HOOKS and chain.get("policy") == "drop"
                and chain["family"] in ("ip", "ip6", "inet")):
            found.append((chain["hook"], chain["family"], chain["table"], chain["name"]))
    return found


def _our_foreign_rules(listing: dict[str, Any],
                       table: str) -> list[tuple[str, str, str, int]]:
    """(family, table, chain, handle) of the rules ``apply`` put in others' chains:
    their comment is the name of the table they serve."""
    return [(r["family"], r["table"], r["chain"], r["handle"])
            for r in (item.get("rule") for item in listing.get("nftables", []))
            if r and r.get("comment") == table and r["table"] != table]


def _foreign_accepts(ruleset: Ruleset, hook: str, family: str) -> list[str]:
    """The rules for a foreign chain of ``hook`` with policy drop. forward: traffic
    from and to dockyard's bridges that dockyard's own table lets through (its drops
    still hold, since a drop in any chain is final). input: DNS queries from a
    network with an embedded DNS server to its gateway (the server listens on the
    gateway's addresses, the only ones of the host in the subnet)."""
    rules = []
    for network in ruleset.networks:
        bridge = _quote(network.bridge)
        if hook == "input":
            for subnet in network.subnets if network.dns else ():
                version = "ip" if subnet.version == 4 else "ip6"
                if family in ("inet", version):
                    rules += [f"iifname {bridge} {version} daddr {subnet} {proto} dport 53 "
                              "accept" for proto in ("udp", "tcp")]
        elif network.internal:
            rules.append(f"iifname {bridge} oifname {bridge} accept")
        else:
            rules += [f"iifname {bridge} accept", f"oifname {bridge} accept"]
    return rules


def script(ruleset: Ruleset, listing: dict[str, Any], table: str = TABLE) -> str:
    """The one nft transaction that makes the kernel's state ``ruleset``, given the
    current ``listing`` of the others' forward and input chains (nft's JSON)."""
    _quote(table)
    lines: list[str] = []
    for family in _FAMILIES:
        # "add" first makes the "delete" succeed when the table is not there yet.
        lines += [f"add table {family} {table}", f"delete table {family} {table}"]
        lines += _table(family, ruleset, table)
    for family, owner, chain, handle in _our_foreign_rules(listing, table):
        lines.append(f"delete rule {family} {owner} {chain} handle {handle}")
    for hook, family, owner, chain in _foreign_drop_chains(listing):
        # "insert" puts each before the previous one
        for rule in reversed(_foreign_accepts(ruleset, hook, family)):
            lines.append(f'insert rule {family} {owner} {chain} {rule} comment "{table}"')
    return "\n".join(lines) + "\n"


def apply(ruleset: Ruleset, *, table: str = TABLE) -> None:
    """Make ``table`` (in the ip and ip6 families) hold ``ruleset``, with its accept
    rules in any foreign FORWARD chain of policy drop, in one transaction;
    ``Ruleset()`` removes them all. A state root other than the default one uses a
    table of its own, so that roots (tests) never replace each other's rules.

    The transaction is written from a reading of the foreign chains (where our rules
    are, by handle): another program that changes them in between (``iptables -F
    FORWARD``, a firewall reloading) makes it fail, and a failed transaction changes
    nothing. It is then written again from a new reading, as long as the readings
    differ: a failure with nothing changed is reported.
    """
    with _Nft() as nft:
        listing = _forward_chains(nft)
        for _ in range(_ATTEMPTS):
            try:
                nft.run(script(ruleset, listing, table))
                return
            except SystemFailure:
                again = _forward_chains(nft)
                if again == listing:
                    raise
                listing = again
    raise SystemFailure(f"cannot update the firewall (nftables): another program kept "
                        f"changing its forward chains ({_ATTEMPTS} tries); try again")


def _forward_chains(nft: _Nft) -> dict[str, Any]:
    """The forward and input base chains of the other tables, with their rules, as
    ``list ruleset`` would show them: where the accept rules go, and where old ones are. Only
    those chains are listed: a host with a large ruleset (kubernetes) is not read
    whole on each ``run``. A chain deleted between the two readings is left out."""
    items = []
    for item in json.loads(nft.run("list chains") or "{}").get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook") in _HOOKS and \
                chain["family"] in ("ip", "ip6", "inet"):
            with contextlib.suppress(SystemFailure):
                listed = nft.run(f"list chain {chain['family']} {chain['table']} "
                                 f"{chain['name']}")
                items += json.loads(listed or "{}").get("nftables", [])
    return {"nftables": items}


def clear(*, table: str = TABLE) -> None:
    """Remove everything ``apply`` put in the firewall for ``table``; idempotent."""
    apply(Ruleset(), table=table)


def tables(prefix: str = TABLE) -> list[str]:
    """``"family name"`` of the nftables tables whose name starts with ``prefix`` (for
    leak checks)."""
    with _Nft() as nft:
        listing = json.loads(nft.run("list tables") or "{}")
    return sorted(f"{t['family']} {t['name']}" for t in
                  (item.get("table") for item in listing.get("nftables", []))
                  if t and t["name"].startswith(prefix))

