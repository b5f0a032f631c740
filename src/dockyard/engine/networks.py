"""The network service: Docker's networks, the containers' endpoints on them, and the
plumbing that makes them true on the host.

A network is a row of ``networks`` (schema version 4). ``bridge`` (the default one),
``host`` and ``none`` are recorded on first use; the subnet of ``bridge`` and of a
network created without ``--subnet`` is chosen then (``ipam.choose_subnet``) among
Docker's pools, clear of the host's routes and of this root's other networks.

A container has an endpoint row per network it is connected to, made at create (or
``connect``). Its address is allocated when it starts and kept in the row, so the next
start gets it again unless another container took it meanwhile; while it runs the row
is ``active`` and its addresses count as taken. No daemon holds any of this: every
change happens under one lock (``RUNROOT/network.lock``), and ends by recomputing the
whole firewall ruleset from the database and applying it at once
(``firewall.apply``). A crash at any point thus leaves nothing the next command does
not fix: the container service calls ``release`` for a container it finds dead.

A bridge exists while a container of its network runs: the first start creates it;
after the last release it lingers a moment for the next container, then a detached
process deletes it (``_tidy``), so that a root with nothing running leaves nothing on
the host (as podman's netavark, which deletes it at once). Two roots on one host never
share a bridge name
(the default network's is ``dockyard0`` for the default root only, ``dy-<hash of the
root>`` otherwise); a subnet dockyard chose is chosen again when the bridge is made,
if another root or the host took it meanwhile (with no container running, no address
is in use). A host-wide lock serialises that choice between roots.

Each user network with a running container has its embedded DNS server
(``dockyard.network.dns``), listening on the network's gateway: it answers the names,
network aliases and hostnames of the containers on that network, and to a container
on several networks (by its address) those of its other networks too; it forwards a
container's other queries to its ``--dns`` servers, or the host's.

The layout (version 1)::

    RUNROOT/network.lock                  the lock of every networking change
    RUNROOT/firewall.applied              a digest of the ruleset last applied
    RUNROOT/network-retire.pid            the process that retires idle networks soon
    RUNROOT/network-retiring.pid          that process once it is at work
    RUNROOT/network.log                   what that process could not do
    RUNROOT/networks/ID/records.json      the DNS records of a user network
    RUNROOT/networks/ID/dns.pid, dns.log  its DNS server
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dockyard.engine.config import (
    ContainerConfig,
    EndpointSettings,
    HostConfig,
    load_container_config,
)
from dockyard.engine.db import DB_NAME, Database
from dockyard.errors import (
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    Unavailable,
)

if TYPE_CHECKING:
    from dockyard.network.ports import PortBinding

__all__ = ["BRIDGE_NAME_OPTION", "DEFAULT_ROOT", "MTU_OPTION", "NetworkService",
           "firewall_table", "network_of_mode", "port_requests", "retire_later"]

#: The root whose default network's bridge is ``dockyard0``.
DEFAULT_ROOT = "/var/lib/dockyard"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
_MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
_PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}
_FILTERS = ("driver", "id", "label", "name", "scope", "type", "dangling")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_HOST_LOCK = "/run/lock/dockyard-network.lock"
_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
          "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
          "ff02::2\tip6-allrouters\n")
# How long an idle bridge waits for another container before it is deleted (seconds).
_LINGER = 2.0
# How long a command waits for a networking lock before it gives up (seconds).
_LOCK_PATIENCE = 45.0
_RETIRER = "network-retire.pid"    # the retirer that waits
_RETIRING = "network-retiring.pid"  # the one at work, or ending
# Docker's fallback when the host has no resolver a container can reach.
_FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


def network_of_mode(mode: str | None) -> str | None:
    """The network a ``NetworkMode`` names (``default`` is ``bridge``); None for
    ``host``, ``none`` and ``container:...``, which have no endpoint."""
    mode = mode or "default"
    if mode in ("host", "none") or mode.startswith("container:"):
        return None
    return "bridge" if mode == "default" else mode


def firewall_table(root: str) -> str:
    """The name of a root's nftables tables: ``dockyard`` for the default root; another
    root (a test's) has its own, so that roots never replace each other's rules."""
    root = os.path.abspath(root)
    return "dockyard" if root == DEFAULT_ROOT else "dockyard-" + _short_hash(root)[:8]


def port_requests(host: HostConfig, exposed: Sequence[str]) -> list[PortBinding]:
    """The ports to publish: ``PortBindings`` (``HostPort`` a port, a range or "" for
    a free one), and with ``PublishAllPorts`` each of ``exposed`` (``PORT/PROTO``) not
    bound already, on a free port."""
    from dockyard.network.ports import PortBinding

    found = []
    for key, bindings in (host.port_bindings or {}).items():
        port, _, proto = key.partition("/")
        for binding in bindings or [None]:
            host_port = (binding.host_port if binding else "") or ""
            first, _, last = host_port.partition("-")
            try:
                found.append(PortBinding(
                    int(port), proto or "tcp",
                    "" if not binding or binding.host_ip in (None, "", "0.0.0.0", "::")
                    else str(binding.host_ip), int(first or 0),
                    int(last) if last and last != first else 0))
            except ValueError:
                raise InvalidArgument(f"invalid port binding {key} -> {host_port}") from None
    if host.publish_all_ports:
        bound = {f"{b.container_port}/{b.proto}" for b in found}
        for key in exposed:
            port, _, proto = key.partition("/")
            if f"{port}/{proto or 'tcp'}" not in bound:
                found.append(PortBinding(int(port), proto or "tcp"))
    return found


def _now() -> str:
    from dockyard.runtime.logfile import rfc3339nano

    return rfc3339nano(time.time_ns())


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class NetworkService:
    """The networks of one root (``ROOT``) and run root (``RUNROOT``)."""

    def __init__(self, root: str, runroot: str, db: Database | None = None) -> None:
        self.root = os.path.abspath(root)
        self.runroot = os.path.abspath(runroot)
        self.db = db or Database(self.root)
        self._depth = 0

    # --- locking -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The root's network lock (re-entrant within this object)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        os.makedirs(self.runroot, exist_ok=True)
        fd = _flock(os.path.join(self.runroot, "network.lock"))
        try:
            self._depth = 1
            yield
        finally:
            self._depth = 0
            os.close(fd)

    @staticmethod
    @contextlib.contextmanager
    def _host_locked() -> Iterator[None]:
        """The host-wide lock under which a subnet is chosen and its bridge made, so
        that two roots never take the same one."""
        os.makedirs(os.path.dirname(_HOST_LOCK), exist_ok=True)
        fd = _flock(_HOST_LOCK)
        try:
            yield
        finally:
            os.close(fd)

    # --- rows ----------------------------------------------------------------------

    def _ensure_predefined(self) -> None:
        from dockyard.network.bridge import DEFAULT_BRIDGE, bridge_name
        from dockyard.network.ipam import choose_subnet

        if len(self.db.query("SELECT 1 FROM networks WHERE name IN ('bridge', 'host', "
                             "'none')")) == 3:
            return
        with self.db.transaction() as conn:
            for name, driver in _PREDEFINED.items():
                if conn.execute("SELECT 1 FROM networks WHERE name = ?",
                                (name,)).fetchone():
                    continue
                options: dict[str, str] = {}
                bridge = ""
                if name == "bridge":
                    bridge = (DEFAULT_BRIDGE if self.root == DEFAULT_ROOT
                              else bridge_name(_short_hash(self.root)))
                    options = {"com.docker.network.bridge.default_bridge": "true",
                               "com.docker.network.bridge.enable_icc": "true",
                               _MASQUERADE_OPTION: "true",
                               "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                               BRIDGE_NAME_OPTION: bridge,
                               MTU_OPTION: "1500"}
                # Chosen again when its bridge is made if the host took it meanwhile.
                ipam = [_chosen(choose_subnet(self._subnets()))] if name == "bridge" else []
                conn.execute("INSERT INTO networks VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (secrets.token_hex(32), name, driver, bridge, json.dumps(ipam),
                              0, 0, json.dumps(options), "{}", _now()))

    def _row(self, name_or_id: str) -> sqlite3.Row:
        """The network named by a name, a full ID or a unique ID prefix."""
        self._ensure_predefined()
        ref = name_or_id.strip()
        rows = self.db.query("SELECT * FROM networks WHERE id = ? OR name = ?", (ref, ref))
        if rows:
            by_id = [row for row in rows if row["id"] == ref]
            return by_id[0] if by_id else rows[0]
        if ref and re.fullmatch(r"[0-9a-f]+", ref):
            rows = self.db.query("SELECT * FROM networks WHERE id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                raise InvalidArgument(f"network {name_or_id} is ambiguous ({len(rows)} "
                                      "matches found on ID prefix)")
            if rows:
                return rows[0]
        raise NotFound(f"network {name_or_id} not found")

    def _containers_of(self, network_id: str) -> list[sqlite3.Row]:
        return self.db.query(
            "SELECT endpoints.*, containers.name AS cname, containers.config AS config, "
            "containers.host_config AS host_config FROM endpoints JOIN containers ON "
            "containers.id = endpoints.container_id WHERE network_id = ? ORDER BY "
            "containers.name", (network_id,))

    # --- create, inspect, list, remove ---------------------------------------------

    def create(self, name: str, *, driver: str = "bridge", subnet: str | None = None,
               gateway: str | None = None, ip_range: str | None = None,
               internal: bool = False, ipv6: bool = False,
               subnet6: str | None = None, gateway6: str | None = None,
               options: Mapping[str, str] | None = None,
               labels: Mapping[str, str] | None = None) -> str:
        """Create a user network; its ID.

        Refused: a name taken, a driver but ``bridge``, a subnet overlapping another
        network or a route of the host, a gateway or range outside the subnet.
        """
        from dockyard.network import ipam
        from dockyard.network.bridge import bridge_name

        if not _NAME.match(name):
            raise InvalidArgument(f"invalid network name {name!r}: only "
                                  "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if driver != "bridge":
            raise NotFound(f"plugin \"{driver}\" not found: only the bridge driver exists")
        options = dict(options or {})
        mtu = options.get(MTU_OPTION)
        if mtu is not None and not (mtu.isdigit() and 68 <= int(mtu) <= 65535):
            raise InvalidArgument(f"invalid MTU {mtu!r}: give a number from 68 to 65535")
        if (gateway or ip_range) and not subnet:
            raise InvalidArgument("every ip-range or gateway must have a corresponding "
                                  "subnet")
        if gateway6 and not subnet6:
            raise InvalidArgument("every ip-range or gateway must have a corresponding "
                                  "subnet")
        configs = [_ipam_config(subnet, gateway, ip_range, 4) if subnet else _chosen(None)]
        if subnet6 and not ipv6:
            ipv6 = True
        if ipv6:
            if not subnet6:
                raise InvalidArgument("--ipv6 needs an IPv6 --subnet: dockyard has no "
                                      "pool of IPv6 subnets to choose from")
            configs.append(_ipam_config(subnet6, gateway6, None, 6))
        network_id = secrets.token_hex(32)
        bridge = options.get(BRIDGE_NAME_OPTION) or bridge_name(network_id)
        if len(bridge) > 15 or not re.fullmatch(r"[a-zA-Z0-9_.-]+", bridge):
            raise InvalidArgument(f"invalid bridge name {bridge!r}: at most 15 letters, "
                                  "digits, '_', '.' or '-'")
        with self._locked(), self._host_locked():
            self._ensure_predefined()
            if self.db.query("SELECT 1 FROM networks WHERE name = ?", (name,)):
                raise Conflict(f"network with name {name} already exists")
            if self.db.query("SELECT 1 FROM networks WHERE bridge = ?", (bridge,)):
                raise Conflict(f"bridge name {bridge} is used by another network")
            taken = self._subnets()
            if subnet:
                routes = ipam.host_routes()
                for config in configs:
                    wanted = ipaddress.ip_network(config["Subnet"])
                    for other in taken:
                        if ipam.overlaps(wanted, other):
                            raise Conflict(f"invalid pool request: Pool overlaps with other "
                                           f"one on this address space ({other})")
                    for route in routes:
                        if route.prefixlen > 0 and ipam.overlaps(wanted, route):
                            raise Conflict(f"subnet {wanted} overlaps the host's route "
                                           f"to {route}: choose another --subnet")
            else:
                configs[0] = _chosen(ipam.choose_subnet(taken))
            with self.db.transaction() as conn:
                conn.execute("INSERT INTO networks VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (network_id, name, driver, bridge, json.dumps(configs),
                              int(internal), int(ipv6), json.dumps(options),
                              json.dumps(dict(labels or {})), _now()))
        self._event("create", network_id, name)
        return network_id

    def _subnets(self, but: str = "") -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        found = []
        for row in self.db.query("SELECT id, ipam FROM networks"):
            if row["id"] == but:
                continue
            for config in json.loads(row["ipam"]):
                if config["Subnet"]:
                    found.append(ipaddress.ip_network(config["Subnet"]))
        return found

    def inspect(self, name_or_id: str) -> dict[str, Any]:
        """``docker network inspect``'s object for one network."""
        return self._inspect(self._row(name_or_id))

    def _inspect(self, row: sqlite3.Row) -> dict[str, Any]:
        configs = [{key: value for key, value in config.items()
                    if value and key != "Auto"} for config in json.loads(row["ipam"])]
        containers = {}
        for ep in self._containers_of(row["id"]):
            if not ep["active"]:
                continue
            prefix = _prefix(row, 4)
            prefix6 = _prefix(row, 6)
            containers[ep["container_id"]] = {
                "Name": ep["cname"], "EndpointID": _endpoint_id(ep),
                "MacAddress": ep["mac"],
                "IPv4Address": f"{ep['ip']}/{prefix}" if ep["ip"] else "",
                "IPv6Address": f"{ep['ipv6']}/{prefix6}" if ep["ipv6"] else ""}
        return {
            "Name": row["name"], "Id": row["id"], "Created": row["created"],
            "Scope": "local", "Driver": row["driver"], "EnableIPv6": bool(row["ipv6"]),
            "IPAM": {"Driver": "default", "Options": {},
                     "Config": [c for c in configs if c.get("Subnet")]},
            "Internal": bool(row["internal"]), "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": containers, "Options": json.loads(row["options"]),
            "Labels": json.loads(row["labels"]),
        }

    def ls(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """The networks ``filters`` select, by name: ``driver``, ``id`` (a prefix),
        ``label`` (``KEY`` or ``KEY=VALUE``, all must hold), ``name`` (a substring),
        ``scope``, ``type`` (``builtin`` or ``custom``), ``dangling``."""
        from dockyard.engine.containers import all_labels_match

        filters = filters or {}
        for key in filters:
            if key not in _FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        for value in filters.get("type", ()):
            if value not in ("builtin", "custom"):
                raise InvalidArgument(f"invalid filter: 'type'='{value}'")
        self._ensure_predefined()
        found = []
        for row in self.db.query("SELECT * FROM networks ORDER BY name"):
            kind = "builtin" if row["name"] in _PREDEFINED else "custom"
            if "driver" in filters and row["driver"] not in filters["driver"]:
                continue
            if "id" in filters and not any(row["id"].startswith(v) for v in filters["id"]):
                continue
            if "name" in filters and not any(v in row["name"] for v in filters["name"]):
                continue
            if "scope" in filters and "local" not in filters["scope"]:
                continue
            if "type" in filters and kind not in filters["type"]:
                continue
            if not all_labels_match(json.loads(row["labels"]), filters.get("label", ())):
                continue
            if "dangling" in filters:
                dangling = kind == "custom" and not self._containers_of(row["id"])
                if dangling != (filters["dangling"][-1].lower() in ("true", "1")):
                    continue
            found.append(self._inspect(row))
        return found

    def remove(self, name_or_id: str) -> str:
        """Remove a user network no container is connected to; its name."""
        row = self._row(name_or_id)
        if row["name"] in _PREDEFINED:
            raise Conflict(f"{row['name']} is a pre-defined network and cannot be removed")
        with self._locked():
            users = self._containers_of(row["id"])
            if users:
                raise Conflict(f"error while removing network: network {row['name']} id "
                               f"{row['id']} has active endpoints (used by "
                               f"{', '.join(u['cname'] for u in users)})")
            # Its bridge first: a failure there leaves the network, to remove again.
            self._retire(row)
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM networks WHERE id = ?", (row["id"],))
            self._apply()
        self._event("destroy", row["id"], row["name"])
        return str(row["name"])

    def prune(self, labels: Sequence[str] = ()) -> list[str]:
        """Remove the user networks no container is connected to (with every label of
        ``labels``), and take down the idle bridges of the others; their names."""
        removed = []
        for network in self.ls({"type": ["custom"], "label": list(labels)}):
            with contextlib.suppress(Conflict, NotFound):
                removed.append(self.remove(network["Id"]))
        self.retire_idle()  # and the idle bridges of the networks that stay
        return removed

    def _event(self, action: str, network_id: str, name: str, container: str = "") -> None:
        from dockyard.runtime.eventlog import record

        attributes = {"name": name, "type": "bridge"}
        if container:
            attributes["container"] = container
        record(os.path.join(self.root, "events.log"), "network", action, network_id,
               attributes)

    # --- endpoints -----------------------------------------------------------------

    def plan(self, host: HostConfig,
             endpoints: Mapping[str, EndpointSettings] | None = None) -> None:
        """Check a new container's network settings before anything is made: the
        mode, the networks, the addresses asked for. Raises what ``add`` would."""
        name = network_of_mode(host.network_mode)
        if (host.network_mode or "").startswith("container:"):
            # Docker's checks: what the other container's namespace already settled.
            for given, what in ((host.dns or host.dns_search or host.dns_options, "dns"),
                                (host.extra_hosts, "custom host-to-IP mapping"),
                                (host.port_bindings or host.publish_all_ports,
                                 "port publishing")):
                if given:
                    raise InvalidArgument(f"conflicting options: {what} and the network "
                                          "mode")
            if host.links:
                raise InvalidArgument("conflicting options: container type network can't "
                                      "be used with links. This would result in undefined "
                                      "behavior")
        if name is None:
            if endpoints:
                raise InvalidArgument("conflicting options: network settings (--ip, "
                                      f"--network-alias...) and the network mode "
                                      f"{host.network_mode or 'none'}")
            return  # ports with the host's network are discarded, as by Docker
        for wanted in endpoints or {}:
            if wanted != name and wanted not in ("default",):
                raise InvalidArgument("dockyard connects a new container to one network: "
                                      "use `network connect` for more")
        settings = (endpoints or {}).get(name) or (endpoints or {}).get("default")
        self._check_settings(self._row(name), settings)

    def _check_settings(self, row: sqlite3.Row, settings: EndpointSettings | None) -> None:
        if settings is None:
            return
        if settings.aliases and row["name"] == "bridge":
            raise InvalidArgument("network-scoped aliases are only supported for "
                                  "user-defined networks")
        addresses = settings.ipam_config
        if addresses is None or not (addresses.ipv4_address or addresses.ipv6_address):
            return
        if row["name"] == "bridge":
            raise InvalidArgument("user specified IP address is supported on user defined "
                                  "networks only")
        configs = json.loads(row["ipam"])
        for wanted, version in ((addresses.ipv4_address, 4), (addresses.ipv6_address, 6)):
            if not wanted:
                continue
            try:
                ip = ipaddress.ip_address(wanted)
            except ValueError:
                raise InvalidArgument(f"invalid IPv{version} address: {wanted}") from None
            config = next((c for c in configs if c["Subnet"]
                           and ipaddress.ip_network(c["Subnet"]).version == ip.version), None)
            if config is None or config.get("Auto"):
                raise InvalidArgument("user specified IP address is supported only when "
                                      "connecting to networks with user configured subnets")
            _pool(config, set()).allocate(ip)  # raises for one outside the subnet/range

    def add(self, cid: str, network: str,
            settings: EndpointSettings | None = None) -> dict[str, Any]:
        """Record that container ``cid`` is on ``network`` (a create, or a ``connect``
        of a container that does not run); the network's row."""
        row = self._row(network)
        if row["driver"] in ("host", "null"):
            raise Conflict("container cannot be disconnected from host network or "
                           "connected to host network" if row["driver"] == "host" else
                           "container cannot be connected to the none network")
        self._check_settings(row, settings)
        addresses = settings.ipam_config if settings else None
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM endpoints WHERE container_id = ? AND "
                            "network_id = ?", (cid, row["id"])).fetchone():
                raise Conflict(f"endpoint with name {self._container_name(cid)} already "
                               f"exists in network {row['name']}")
            position = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM endpoints "
                                    "WHERE container_id = ?", (cid,)).fetchone()[0]
            conn.execute(
                "INSERT INTO endpoints (container_id, network_id, aliases, requested_ip, "
                "requested_ipv6, requested_mac, position) VALUES (?,?,?,?,?,?,?)",
                (cid, row["id"], json.dumps(list(settings.aliases or []) if settings else []),
                 (addresses.ipv4_address or "") if addresses else "",
                 (addresses.ipv6_address or "") if addresses else "",
                 (settings.mac_address or "") if settings else "", position))
        return dict(row)

    def _container_name(self, cid: str) -> str:
        rows = self.db.query("SELECT name FROM containers WHERE id = ?", (cid,))
        return str(rows[0]["name"]) if rows else cid

    def endpoints(self, cid: str) -> list[sqlite3.Row]:
        """The container's endpoints with their networks' rows, primary first."""
        return self.db.query(
            "SELECT endpoints.*, networks.name AS nname, networks.bridge AS bridge, "
            "networks.ipam AS ipam, networks.internal AS internal, networks.ipv6 AS "
            "has_ipv6, networks.options AS options FROM endpoints JOIN networks ON "
            "networks.id = endpoints.network_id WHERE container_id = ? ORDER BY position",
            (cid,))

    # --- plumbing ------------------------------------------------------------------

    def attach(self, cid: str, netns: str, ports: Sequence[PortBinding] = ()) -> None:
        """Plumb the endpoints of container ``cid`` into its network namespace at
        ``netns`` (a bind-mounted nsfs file) and publish ``ports``: addresses,
        bridges, veths, the ruleset, the DNS servers. Undone by ``release``; on failure
        it undoes itself."""
        with self._locked():
            endpoints = self.endpoints(cid)
            try:
                for index, ep in enumerate(endpoints):
                    self._plumb(cid, netns, ep, f"eth{index}", routed=index == 0)
                self._publish(cid, ports)
                self._apply()
                self._refresh_dns({ep["network_id"] for ep in endpoints})
            except BaseException:
                with contextlib.suppress(Exception):
                    self.release(cid)
                raise
        for ep in endpoints:
            self._event("connect", ep["network_id"], ep["nname"], cid)

    def _plumb(self, cid: str, netns: str, ep: sqlite3.Row, ifname: str, *,
               routed: bool) -> None:
        from dockyard.network import bridge, ipam

        network = self._ready(ep["network_id"])
        configs = json.loads(network["ipam"])
        taken: dict[int, set[Any]] = {4: set(), 6: set()}
        for other in self.db.query("SELECT ip, ipv6 FROM endpoints WHERE network_id = ? "
                                   "AND active = 1 AND container_id != ?",
                                   (network["id"], cid)):
            if other["ip"]:
                taken[4].add(ipaddress.ip_address(other["ip"]))
            if other["ipv6"]:
                taken[6].add(ipaddress.ip_address(other["ipv6"]))
        addresses, gateways, chosen = [], [], {4: "", 6: ""}
        for config in configs:
            subnet = ipaddress.ip_network(config["Subnet"])
            pool = _pool(config, taken[subnet.version])
            requested = ep["requested_ip" if subnet.version == 4 else "requested_ipv6"]
            kept = ep["ip" if subnet.version == 4 else "ipv6"]
            if requested:
                ip = pool.allocate(ipaddress.ip_address(requested))
            else:
                ip = None
                if kept:
                    with contextlib.suppress(DockyardError, ValueError):
                        ip = pool.allocate(ipaddress.ip_address(kept))
                if ip is None:
                    ip = pool.allocate()
            chosen[subnet.version] = str(ip)
            addresses.append(ipaddress.ip_interface(f"{ip}/{subnet.prefixlen}"))
            gateways.append(ipaddress.ip_address(config["Gateway"]))
        mac = ep["requested_mac"] or ipam.mac_for(ipaddress.ip_address(chosen[4]))
        host_ifname = bridge.host_ifname(cid, network["id"])
        # Recorded first: a crash while plumbing leaves a row that release undoes.
        with self.db.transaction() as conn:
            conn.execute("UPDATE endpoints SET ip = ?, ipv6 = ?, mac = ?, host_ifname = ?, "
                         "ifname = ?, active = 1 WHERE container_id = ? AND network_id = ?",
                         (chosen[4], chosen[6], mac, host_ifname, ifname, cid,
                          network["id"]))
        # Only the primary network gives the default route; an internal one none.
        bridge.attach(netns, network["bridge"], host_ifname=host_ifname, ifname=ifname,
                      addresses=addresses,
                      gateways=gateways if routed and not network["internal"] else [],
                      mac=mac, mtu=_mtu(network))

    def _ready(self, network_id: str) -> sqlite3.Row:
        """The network's row once its bridge exists; its subnet chosen (again) first if
        dockyard chooses it and the host took it meanwhile."""
        from dockyard.network import bridge, ipam

        row = self.db.query("SELECT * FROM networks WHERE id = ?", (network_id,))[0]
        if os.path.exists(f"/sys/class/net/{row['bridge']}"):
            return row
        configs = json.loads(row["ipam"])
        with self._host_locked():
            routes = ipam.host_routes()
            first = configs[0]
            current = ipaddress.ip_network(first["Subnet"]) if first["Subnet"] else None
            clash = next((route for route in routes if current is not None
                          and route.prefixlen > 0 and ipam.overlaps(current, route)), None)
            if clash is not None and not first.get("Auto"):
                raise Conflict(f"the subnet {current} of network {row['name']} overlaps the "
                               f"host's route to {clash} now: remove that route, or "
                               "recreate the network with another --subnet")
            if first.get("Auto") and (current is None or clash is not None):
                configs[0] = _chosen(ipam.choose_subnet(self._subnets(but=network_id),
                                                        host=routes))
                with self.db.transaction() as conn:
                    conn.execute("UPDATE networks SET ipam = ? WHERE id = ?",
                                 (json.dumps(configs), network_id))
            bridge.ensure_bridge(row["bridge"], [
                ipaddress.ip_interface(f"{c['Gateway']}/{c['Subnet'].split('/')[1]}")
                for c in configs], mtu=_mtu(row))
        return self.db.query("SELECT * FROM networks WHERE id = ?", (network_id,))[0]

    def _publish(self, cid: str, requests: Sequence[PortBinding]) -> None:
        from dockyard.network import ports

        # No process holds a published port: the ports this root publishes already
        # are in the database, not in the host's sockets.
        taken = {(row["proto"], row["host_port"])
                 for row in self.db.query("SELECT proto, host_port FROM port_mappings")}
        chosen = []
        for request in requests:
            binding = ports.resolve(request, taken)
            taken.add((binding.proto, binding.host_port))
            chosen.append((cid, binding.proto, binding.host_ip, binding.host_port,
                           binding.container_port))
        with self.db.transaction() as conn:
            conn.executemany("INSERT INTO port_mappings VALUES (?,?,?,?,?)", chosen)

    def release(self, cid: str) -> None:
        """Take down what ``attach`` made for container ``cid`` (idempotent, and what the
        container service calls after a crash): its veths, its published ports, its
        DNS records; a bridge and a DNS server nobody uses any more."""
        if not self.db.query("SELECT 1 FROM endpoints WHERE container_id = ? AND (active = 1 "
                             "OR host_ifname != '') UNION SELECT 1 FROM port_mappings WHERE "
                             "container_id = ?", (cid, cid)):
            return
        with self._locked():
            active = self.db.query("SELECT network_id, name FROM endpoints JOIN networks ON "
                                   "networks.id = network_id WHERE container_id = ? AND "
                                   "active = 1", (cid,))
            try:
                self._unplumb(cid)
            finally:
                for ep in active:
                    self._event("disconnect", ep["network_id"], ep["name"], cid)

    def _tidy(self, network_id: str) -> None:
        """Delete the bridge and DNS server of a network nobody uses; else refresh its
        DNS records."""
        rows = self.db.query("SELECT * FROM networks WHERE id = ?", (network_id,))
        if not rows:
            return
        self._refresh_dns()
        if self.db.query("SELECT 1 FROM endpoints WHERE network_id = ? AND active = 1",
                         (network_id,)):
            return
        # Making a bridge and deleting it take the kernel tens of milliseconds (RCU
        # grace periods): an idle bridge lingers a moment for the next container (a
        # script running one after the other), then a detached process retires it.
        self._retire_soon()

    def _retire_soon(self) -> None:
        """Start the detached process that retires the idle networks in a moment
        (``retire_later``), unless one is waiting already. We hold the lock: a waiting
        one has not begun, so none is missed."""
        import subprocess

        from dockyard.network import dns

        pidfile = os.path.join(self.runroot, _RETIRER)
        if dns.running(pidfile) is not None:
            # It waits until the last release is _LINGER old: this one, now.
            with contextlib.suppress(FileNotFoundError):
                os.utime(pidfile)
            return
        # A new interpreter (SQLite's state of a database's locks does not survive a
        # fork), in a session of its own and holding none of our files (close_fds:
        # neither our lock nor the pipes of a reader of our output, who would wait for
        # its end). Not waited for: init reaps it. It sleeps before it imports
        # anything, so that it costs nothing meanwhile; its arguments name the roots,
        # so that ``ps`` shows whose it is.
        # What to take down if the root is removed meanwhile (a test's).
        bridges = ",".join(row["bridge"] for row in self.db.query(
            "SELECT bridge FROM networks WHERE bridge != ''"))
        process = subprocess.Popen(
            [sys.executable, "-c", f"import sys, time; time.sleep({_LINGER}); from "
             "dockyard.engine.networks import retire_later; retire_later(*sys.argv[1:])",
             self.root, self.runroot],
            env={**os.environ, "DOCKYARD_BRIDGES": bridges},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True)
        dns.record_pid(pidfile, process.pid)

    def _retire(self, row: sqlite3.Row) -> None:
        import shutil

        from dockyard.network import bridge, dns

        directory = os.path.join(self.runroot, "networks", row["id"])
        dns.stop(os.path.join(directory, "dns.pid"))
        if row["bridge"]:
            bridge.delete_bridge(row["bridge"])
        shutil.rmtree(directory, ignore_errors=True)

    def retire_idle(self) -> list[str]:
        """Take down now the bridges (and DNS servers) of the networks no container
        uses, which otherwise linger a moment (see ``_tidy``); their names. The process
        that would have retired them later is stopped, and one that ends is waited
        for: once this returns, no process of this root's networking runs but the DNS
        servers of networks in use."""
        from dockyard.network import dns

        with self._locked():
            # Under the lock, a retirer is either waiting (asleep, or for the lock) or
            # done: stopping it loses nothing.
            for name in (_RETIRER, _RETIRING):
                dns.stop(os.path.join(self.runroot, name))
            return self._retire_idle()

    def _retire_idle(self) -> list[str]:
        retired = []
        with self._locked():
            for row in self.db.query("SELECT * FROM networks WHERE bridge != '' AND id NOT "
                                     "IN (SELECT network_id FROM endpoints WHERE active = 1)"):
                if os.path.exists(f"/sys/class/net/{row['bridge']}") or os.path.exists(
                        os.path.join(self.runroot, "networks", row["id"])):
                    self._retire(row)
                    retired.append(row["name"])
            self._apply()
        return retired

    def ports(self, cid: str) -> dict[str, list[dict[str, str]]]:
        """The running container's published ports as Docker's ``NetworkSettings.Ports``
        bindings, by ``PORT/PROTO``."""
        found: dict[str, list[dict[str, str]]] = {}
        for row in self.db.query("SELECT * FROM port_mappings WHERE container_id = ? "
                                 "ORDER BY container_port, proto, host_ip, host_port",
                                 (cid,)):
            found.setdefault(f"{row['container_port']}/{row['proto']}", []).append(
                {"HostIp": row["host_ip"] or "0.0.0.0", "HostPort": str(row["host_port"])})
        return found

    def connect(self, cid: str, network: str, settings: EndpointSettings | None = None,
                *, netns: str | None = None) -> None:
        """Connect container ``cid`` to ``network``; with ``netns`` (it runs) at once."""
        row = self.add(cid, network, settings)
        if netns is not None:
            with self._locked():
                active = self.db.query("SELECT ifname FROM endpoints WHERE container_id = ? "
                                       "AND active = 1", (cid,))
                used = {ep["ifname"] for ep in active}
                ifname = next(f"eth{n}" for n in range(len(used) + 1)
                              if f"eth{n}" not in used)
                ep = next(ep for ep in self.endpoints(cid) if ep["network_id"] == row["id"])
                try:
                    self._plumb(cid, netns, ep, ifname, routed=not active)
                    self._apply()
                    self._refresh_dns({row["id"]})
                except BaseException:
                    with contextlib.suppress(Exception):
                        self._unplumb(cid, row["id"])
                    with self.db.transaction() as conn:
                        conn.execute("DELETE FROM endpoints WHERE container_id = ? AND "
                                     "network_id = ?", (cid, row["id"]))
                    raise
        self._event("connect", row["id"], row["name"], cid)

    def disconnect(self, cid: str, network: str, *, force: bool = False) -> None:
        """Disconnect container ``cid`` from ``network`` (running or not)."""
        row = self._row(network)
        with self._locked():
            if not self.db.query("SELECT 1 FROM endpoints WHERE container_id = ? AND "
                                 "network_id = ?", (cid, row["id"])):
                if force:
                    return
                raise Conflict(f"container {cid} is not connected to network {row['name']}")
            self._unplumb(cid, row["id"])
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM endpoints WHERE container_id = ? AND network_id = ?",
                             (cid, row["id"]))
        self._event("disconnect", row["id"], row["name"], cid)

    def _unplumb(self, cid: str, network_id: str | None = None) -> None:
        """Detach the container's endpoint on ``network_id`` (every one, and its
        published ports, when None); the ruleset, bridges and DNS records follow.

        A veth that cannot be deleted keeps its row active, for the next try; each step
        is tried whatever the others did, and the first error is raised at the end.
        """
        from dockyard.network import bridge

        errors: list[DockyardError] = []
        done = []
        for ep in self.db.query("SELECT network_id, host_ifname FROM endpoints WHERE "
                                "container_id = ? AND (active = 1 OR host_ifname != '')",
                                (cid,)):
            if network_id is not None and ep["network_id"] != network_id:
                continue
            try:
                if ep["host_ifname"]:
                    bridge.detach(ep["host_ifname"])
            except DockyardError as e:
                errors.append(e)
                continue
            done.append(ep["network_id"])
        with self.db.transaction() as conn:
            conn.executemany("UPDATE endpoints SET active = 0, host_ifname = '', ifname = '' "
                             "WHERE container_id = ? AND network_id = ?",
                             [(cid, n) for n in done])
            if network_id is None:
                conn.execute("DELETE FROM port_mappings WHERE container_id = ?", (cid,))
        steps = [self._apply, *(functools.partial(self._tidy, n) for n in done)]
        for step in steps:
            try:
                step()
            except DockyardError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def links(self, links: Sequence[str], linker: str,
              merged: Callable[[str], ContainerConfig] | None = None
              ) -> tuple[list[tuple[str, str, str]], list[str]]:
        """For ``HostConfig.Links`` (``NAME:ALIAS``) of container ``linker``: the
        ``/etc/hosts`` entries (address, alias, name) and Docker's link variables,
        from the ports the linked container exposes and its environment, as
        ``merged(ID)`` gives them: with its image's (``EXPOSE``, ``ENV``), as Docker's
        (the container's own only without ``merged``). A linked container must run."""
        entries, env = [], []
        for link in links:
            name, _, alias = link.partition(":")
            rows = self.db.query(
                "SELECT containers.id AS id, containers.name AS name, containers.config AS "
                "config, endpoints.ip AS ip FROM containers LEFT JOIN endpoints ON "
                "endpoints.container_id = "
                "containers.id AND endpoints.active = 1 WHERE containers.name = ? OR "
                "containers.id = ? ORDER BY endpoints.position", (name, name))
            if not rows:
                raise NotFound(f"could not get container for {name}")
            if not rows[0]["ip"]:
                raise Conflict(f"Cannot link to a non running container: /{rows[0]['name']} "
                               f"AS /{linker}/{alias or name}")
            config = (merged(rows[0]["id"]) if merged is not None
                      else load_container_config(rows[0]["config"]))
            entries.append((rows[0]["ip"], alias or name, rows[0]["name"]))
            env += _link_environment(alias or name, linker, rows[0]["ip"],
                                     list(config.exposed_ports or {}), config.env or [])
        return entries, env

    # --- the ruleset ---------------------------------------------------------------

    def _apply(self) -> None:
        """Make dockyard's firewall tables what the database says, at once: the networks
        with a bridge, the published ports of the running containers."""
        from dockyard.network import firewall

        networks = []
        bridges = {}
        for row in self.db.query("SELECT * FROM networks WHERE bridge != '' ORDER BY id"):
            if not (os.path.exists(f"/sys/class/net/{row['bridge']}") or self.db.query(
                    "SELECT 1 FROM endpoints WHERE network_id = ? AND active = 1",
                    (row["id"],))):
                continue
            options = json.loads(row["options"])
            networks.append(firewall.NetworkRules(
                bridge=row["bridge"],
                subnets=[ipaddress.ip_network(c["Subnet"])
                         for c in json.loads(row["ipam"]) if c["Subnet"]],
                internal=bool(row["internal"]),
                masquerade=options.get(_MASQUERADE_OPTION, "true") != "false",
                dns=row["name"] not in _PREDEFINED))
            bridges[row["id"]] = row["bridge"]
        published = []
        for row in self.db.query(
                "SELECT port_mappings.*, endpoints.ip AS ip, endpoints.network_id AS nid "
                "FROM port_mappings JOIN endpoints ON endpoints.container_id = "
                "port_mappings.container_id AND endpoints.active = 1 AND endpoints.position "
                "= (SELECT MIN(position) FROM endpoints AS e WHERE e.container_id = "
                "port_mappings.container_id AND e.active = 1) ORDER BY port_mappings.proto, "
                "port_mappings.host_ip, port_mappings.host_port"):
            if row["nid"] not in bridges or not row["ip"]:
                continue
            published.append(firewall.PublishedPort(
                proto=row["proto"],
                host_ip=ipaddress.ip_address(row["host_ip"]) if row["host_ip"] else None,
                host_port=row["host_port"], container_ip=ipaddress.ip_address(row["ip"]),
                container_port=row["container_port"], bridge=bridges[row["nid"]]))
        ruleset = firewall.Ruleset(networks=networks, ports=published)
        # The ruleset last applied is noted in the run root (which, like the kernel's
        # ruleset, does not outlive a reboot): a container that publishes nothing on a
        # network that has its bridge already changes nothing, and costs no nft
        # transaction. (Rules that someone else deleted come back at the next change.)
        digest = hashlib.sha256(repr(ruleset).encode()).hexdigest()
        stamp = os.path.join(self.runroot, "firewall.applied")
        if _read(stamp) == digest:
            return
        firewall.apply(ruleset, table=firewall_table(self.root))
        with open(stamp, "w") as f:
            f.write(digest)

    # --- DNS -----------------------------------------------------------------------

    def _refresh_dns(self, start: Collection[str] = ()) -> None:
        """Rewrite the records of every user network with a running container (a
        change on one network changes what the containers it shares with others are
        answered); start the servers of the networks ``start`` names."""
        from dockyard.network import dns

        rows = self.db.query("SELECT * FROM networks WHERE driver = 'bridge' AND name != "
                             "'bridge' AND id IN (SELECT network_id FROM endpoints WHERE "
                             "active = 1)")
        members = {row["id"]: [ep for ep in self._containers_of(row["id"]) if ep["active"]]
                   for row in rows}
        names = {row["id"]: _dns_records(members[row["id"]]) for row in rows}
        resolv = _parse_resolv(_read("/etc/resolv.conf"))
        for row in rows:
            # A container on several networks asks the server of its first one (its
            # resolv.conf), which answers it, by its address there, the names of
            # its other networks too (also as NAME.NETWORK), and no other container.
            # Its --dns servers are its upstreams, as with Docker's resolver.
            clients = {}
            for ep in members[row["id"]]:
                others: dict[str, list[str]] = {}
                for other in rows:
                    if other["id"] != row["id"] and any(
                            o["container_id"] == ep["container_id"]
                            for o in members[other["id"]]):
                        suffix = "." + other["name"].lower()
                        for name, ips in names[other["id"]].items():
                            for key in (name, name + suffix):
                                known = others.setdefault(key, [])
                                known += [ip for ip in ips if ip not in known]
                upstreams = json.loads(ep["host_config"] or "{}").get("Dns") or []
                if others or upstreams:
                    for address in filter(None, (ep["ip"], ep["ipv6"])):
                        clients[address] = (others, upstreams)
            directory = os.path.join(self.runroot, "networks", row["id"])
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, "records.json")
            # Docker's service-style names: NAME.NETWORK answers as NAME does.
            dns.write_records(path, names[row["id"]], resolv["nameserver"],
                              [row["name"].lower(), *resolv["search"]], clients)
            if row["id"] in start:
                listen = [c["Gateway"] for c in json.loads(row["ipam"]) if c["Gateway"]]
                dns.start(path, listen, pidfile=os.path.join(directory, "dns.pid"))

    # --- a container's files -------------------------------------------------------

    def hosts_file(self, cid: str, hostname: str, host: HostConfig,
                   links: Sequence[tuple[str, str, str]] = ()) -> str:
        """The running container's ``/etc/hosts``: localhost, its own addresses with its
        hostname, ``links`` (address, alias, name), ``--add-host`` entries."""
        if host.network_mode == "host":
            text = _read("/etc/hosts") or _HOSTS
        else:
            text = _HOSTS
            for ep in self.endpoints(cid):
                for ip in (ep["ip"], ep["ipv6"]):
                    if ip and ep["active"]:
                        text += f"{ip}\t{hostname}\n"
        for address, alias, name in links:
            text += f"{address}\t{' '.join(dict.fromkeys((alias, name)))}\n"
        for entry in host.extra_hosts or ():
            entry_name, _, address = entry.partition(":")
            if address == "host-gateway":
                address = self.host_gateway(cid)
            text += f"{address}\t{entry_name}\n"
        return text

    def host_gateway(self, cid: str) -> str:
        """The host's address as the container sees it (``--add-host x:host-gateway``):
        the gateway of its first network, else the default network's."""
        for ep in self.endpoints(cid):
            if ep["active"]:
                return str(json.loads(ep["ipam"])[0]["Gateway"])
        return str(json.loads(self._row("bridge")["ipam"])[0]["Gateway"])

    def resolv_conf(self, cid: str, host: HostConfig) -> str:
        """The container's ``/etc/resolv.conf``: on a user network its embedded DNS
        server only (which forwards to the ``--dns`` servers, as Docker's); else
        ``--dns``, or the host's resolvers but loopback ones (a container cannot reach
        them; the host's own network can), or Google's when none remain, as Docker.
        ``--dns-search`` and ``--dns-option`` replace the host's."""
        resolv = _parse_resolv(_read("/etc/resolv.conf"))
        servers = resolv["nameserver"]
        primary = next(iter(self.endpoints(cid)), None)
        if primary is not None and primary["nname"] != "bridge":
            servers = [json.loads(primary["ipam"])[0]["Gateway"]]
        elif host.dns:
            servers = list(host.dns)
        elif host.network_mode != "host":
            servers = [s for s in servers if not _loopback(s)] or list(_FALLBACK_DNS)
        search = list(host.dns_search) if host.dns_search else resolv["search"]
        options = list(host.dns_options) if host.dns_options else resolv["options"]
        lines = [f"nameserver {server}" for server in servers]
        if search and search != ["."]:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        return "\n".join(lines) + "\n"

    # --- what inspect shows --------------------------------------------------------

    def settings(self, cid: str, running: bool, exposed: Sequence[str] = ()
                 ) -> dict[str, Any]:
        """Docker's ``NetworkSettings`` of a container (``exposed``: its ``PORT/PROTO``
        keys, shown with no binding when not published)."""
        networks = {}
        top: dict[str, Any] = {"IPAddress": "", "Gateway": "", "IPPrefixLen": 0,
                               "MacAddress": "", "EndpointID": "",
                               "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                               "IPv6Gateway": ""}
        for ep in self.endpoints(cid):
            configs = json.loads(ep["ipam"])
            live = running and ep["active"]
            gateway6 = next((c["Gateway"] for c in configs[1:]), "")
            entry = {
                "IPAMConfig": ({"IPv4Address": ep["requested_ip"],
                                **({"IPv6Address": ep["requested_ipv6"]}
                                   if ep["requested_ipv6"] else {})}
                               if ep["requested_ip"] or ep["requested_ipv6"] else None),
                "Links": None, "Aliases": json.loads(ep["aliases"]) or None,
                "MacAddress": ep["mac"] if live else "",
                "NetworkID": ep["network_id"],
                "EndpointID": _endpoint_id(ep) if live else "",
                "Gateway": configs[0]["Gateway"] if live else "",
                "IPAddress": ep["ip"] if live else "",
                "IPPrefixLen": int(configs[0]["Subnet"].split("/")[1]) if live else 0,
                "IPv6Gateway": gateway6 if live and ep["ipv6"] else "",
                "GlobalIPv6Address": ep["ipv6"] if live else "",
                "GlobalIPv6PrefixLen": (int(configs[1]["Subnet"].split("/")[1])
                                        if live and ep["ipv6"] else 0),
                "DNSNames": None if ep["nname"] == "bridge" else
                [self._container_name(cid), cid[:12], *json.loads(ep["aliases"])],
            }
            networks[ep["nname"]] = entry
            if ep["nname"] == "bridge":
                top = {key: entry[key] for key in top}
        ports: dict[str, Any] = {}
        if running:
            ports = {key: None for key in exposed}
            ports.update(self.ports(cid))
        return {"Bridge": "", "SandboxID": _short_hash(cid, "sandbox") if running else "",
                "HairpinMode": False, "LinkLocalIPv6Address": "",
                "LinkLocalIPv6PrefixLen": 0, "Ports": ports, **top, "Networks": networks}


# --- helpers ------------------------------------------------------------------------


def _ipam_config(subnet: str, gateway: str | None, ip_range: str | None,
                 version: int) -> dict[str, Any]:
    """A ``--subnet`` (with its ``--gateway``, ``--ip-range``) checked and completed."""
    from dockyard.network import ipam

    network = ipam.parse_subnet(subnet)
    if network.version != version:
        raise InvalidArgument(f"invalid subnet {subnet}: an IPv{version} subnet is needed "
                              "here")
    # The pool checks that the gateway and the range are in the subnet.
    pool = ipam.Pool(network, ipam.parse_address(gateway) if gateway else None,
                     ipam.parse_subnet(ip_range) if ip_range else None)
    return {"Subnet": str(network), "Gateway": str(pool.gateway),
            "IPRange": str(pool.ip_range) if ip_range else ""}


def _chosen(subnet: Any) -> dict[str, Any]:
    """The IPAM config of a subnet dockyard chose ("" when it is still to choose)."""
    from dockyard.network import ipam

    return {"Subnet": str(subnet) if subnet else "",
            "Gateway": str(ipam.default_gateway(subnet)) if subnet else "", "IPRange": "",
            "Auto": True}


def _pool(config: Mapping[str, Any], allocated: set[Any]) -> Any:
    from dockyard.network import ipam

    return ipam.Pool(ipaddress.ip_network(config["Subnet"]),
                     ipaddress.ip_address(config["Gateway"]),
                     ipaddress.ip_network(config["IPRange"]) if config.get("IPRange")
                     else None, allocated)


def _mtu(row: Mapping[str, Any]) -> int | None:
    """The MTU a network's options set (None: the kernel's default)."""
    mtu = json.loads(row["options"]).get(MTU_OPTION)
    return int(mtu) if mtu else None


def _prefix(row: Mapping[str, Any], version: int) -> int:
    for config in json.loads(row["ipam"]):
        if config["Subnet"] and ipaddress.ip_network(config["Subnet"]).version == version:
            return int(config["Subnet"].split("/")[1])
    return 0


def _endpoint_id(ep: Mapping[str, Any]) -> str:
    return _short_hash(ep["container_id"], ep["network_id"], "endpoint")


def retire_later(root: str, runroot: str) -> None:
    """What the detached process of ``NetworkService._retire_soon`` runs once it slept:
    take down the idle networks of the root ``root`` (run root ``runroot``); a failure
    is logged in ``RUNROOT/network.log``."""
    with contextlib.suppress(FileNotFoundError):  # (no pidfile: the root is gone)
        # A release since it was started made its pidfile new: the linger starts then.
        while (idle := time.time() - os.stat(os.path.join(runroot, _RETIRER)).st_mtime
               ) < _LINGER:
            time.sleep(_LINGER - idle)
    if not os.path.exists(os.path.join(root, DB_NAME)):
        # The root was removed meanwhile (a test's, a benchmark's), its containers with
        # it: take down what it had on the host, and recreate nothing.
        from dockyard.network import bridge, firewall

        for name in filter(None, os.environ.get("DOCKYARD_BRIDGES", "").split(",")):
            with contextlib.suppress(DockyardError):
                bridge.delete_bridge(name)
        with contextlib.suppress(DockyardError):
            firewall.clear(table=firewall_table(root))
        return
    try:
        service = NetworkService(root, runroot)
        with service._locked():
            # From now on a release starts another retirer; ``retire_idle`` still
            # waits for this one's end.
            with contextlib.suppress(FileNotFoundError):
                os.replace(os.path.join(runroot, _RETIRER),
                           os.path.join(runroot, _RETIRING))
            service._retire_idle()
    except Exception as e:
        with contextlib.suppress(OSError), \
                open(os.path.join(runroot, "network.log"), "a") as log:
            log.write(f"{_now()} cannot retire the idle networks: {e}\n")


def _flock(path: str) -> int:
    """An fd of ``path`` (close-on-exec) holding its exclusive flock.

    Every holder keeps the lock for a moment only (netlink, one nft transaction, the
    start of a DNS server, all bounded), and no process it forks keeps the fd (each
    closes its inherited fds, or is exec'd with close_fds). A wait longer than
    ``_LOCK_PATIENCE`` is then a bug: it fails naming the holder, not hangs. Polled,
    since a blocking flock cannot time out (SIGALRM is the main thread's only).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + _LOCK_PATIENCE
    delay = 0.0005
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"{path} has been locked for "
                                      f"{_LOCK_PATIENCE:.0f}s by {_holder(fd)}: if that "
                                      "process hangs, kill it") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
    except BaseException:
        os.close(fd)
        raise


def _holder(fd: int) -> str:
    """Who holds the flock of the file of ``fd``, from /proc/locks."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in _read("/proc/locks").splitlines():
        fields = line.split()
        if fields[1:2] == ["FLOCK"] and fields[5:6] == [key] and fields[4].isdigit():
            command = _read(f"/proc/{fields[4]}/cmdline").replace("\0", " ").strip()
            # The pid is the locker's: a process it forked may hold the lock since.
            return f"process {fields[4]} " + (f"({command})" if command else
                                               "(gone: a child of it keeps the fd)")
    return "another process"


def _dns_records(endpoints: Sequence[sqlite3.Row]) -> dict[str, list[str]]:
    """The DNS names of the containers of ``endpoints`` (rows of ``_containers_of``,
    on one network) with their addresses there: name, short ID, hostname, aliases."""
    records: dict[str, list[str]] = {}
    for ep in endpoints:
        ips = [ip for ip in (ep["ip"], ep["ipv6"]) if ip]
        config = json.loads(ep["config"])
        for name in (ep["cname"], ep["container_id"][:12], config.get("Hostname") or "",
                     *json.loads(ep["aliases"])):
            if name:
                known = records.setdefault(name.lower(), [])
                known += [ip for ip in ips if ip not in known]
    return records


def _loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.partition("%")[0]).is_loopback
    except ValueError:  # not an address: no server the container could reach either
        return True


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _parse_resolv(text: str) -> dict[str, list[str]]:
    """The ``nameserver``s, ``search`` domains and ``options`` of a resolv.conf."""
    found: dict[str, list[str]] = {"nameserver": [], "search": [], "options": []}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            found["nameserver"].append(fields[1])
        elif fields[0] in ("search", "domain"):
            found["search"] = fields[1:]
        elif fields[0] == "options":
            found["options"] += fields[1:]
    return found


def _link_environment(alias: str, linker: str, ip: str, exposed: Sequence[str],
                      env: Sequence[str]) -> list[str]:
    """Docker's legacy link variables for ``--link linked_name:alias``."""
    prefix = re.sub(r"[^A-Z0-9_]", "_", alias.upper())
    result = [f"{prefix}_NAME=/{linker}/{alias}"]
    keys = sorted(exposed, key=lambda k: (int(k.partition("/")[0]), k))
    for index, key in enumerate(keys):
        port, _, proto = key.partition("/")
        proto = proto or "tcp"
        base = f"{prefix}_PORT_{port}_{proto.upper()}"
        if index == 0:
            result.append(f"{prefix}_PORT={proto}://{ip}:{port}")
        result += [f"{base}={proto}://{ip}:{port}", f"{base}_ADDR={ip}",
                   f"{base}_PORT={port}", f"{base}_PROTO={proto}"]
    for entry in env:
        name, sep, value = entry.partition("=")
        if sep and name not in ("HOME", "PATH", "HOSTNAME"):
            result.append(f"{prefix}_ENV_{name}={value}")
    return result
