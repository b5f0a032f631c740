"""The network service as a library: networks in the database, two roots on one host,
a subnet chosen again when the host took it, events, and the ports a container asks for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.engine.config import HostConfig, PortBinding
from dockyard.engine.containers import ContainerService
from dockyard.engine.networks import firewall_table, port_requests
from dockyard.engine.options import RunFlags, networking_config, to_config
from dockyard.errors import Conflict, InvalidArgument, NotFound, Unavailable
from dockyard.network import firewall
from dockyard.network.ports import PortBinding as Publish

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")


def _service(home: Path) -> ContainerService:
    svc = ContainerService(str(home / "root"), str(home / "run"))
    svc.images.bootstrap("busybox")
    return svc


def _clean(svc: ContainerService) -> list[str]:
    """Remove the service's containers; what it left on the host."""
    for summary in svc.list(all=True):
        svc.remove(summary["Id"], force=True)
    svc.networks.retire_idle()
    left = [name for (name,) in svc.db.query("SELECT bridge FROM networks WHERE bridge != ''")
            if os.path.exists(f"/sys/class/net/{name}")]
    return left + firewall.tables(firewall_table(svc.root))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ContainerService]:
    svc = _service(tmp_path)
    yield svc
    assert _clean(svc) == []


def _run(svc: ContainerService, *args: str, network: str | None = None) -> str:
    config, host = to_config(RunFlags(image="busybox", command=list(args), network=network))
    return svc.run(config, host)


def _subnet(svc: ContainerService) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(svc.networks.inspect("bridge")["IPAM"]["Config"][0]["Subnet"])


def test_two_roots_never_share_a_bridge_or_a_subnet(tmp_path: Path) -> None:
    one, two = _service(tmp_path / "one"), _service(tmp_path / "two")
    try:
        first = _run(one, "sleep", "30")
        second = _run(two, "sleep", "30")
        names = [svc.networks.inspect("bridge")["Options"]["com.docker.network.bridge.name"]
                 for svc in (one, two)]
        assert names[0] != names[1] and all(n.startswith("dy-") for n in names)
        assert not _subnet(one).overlaps(_subnet(two))
        for svc, cid in ((one, first), (two, second)):
            settings = svc.inspect(cid)["NetworkSettings"]
            assert ipaddress.ip_address(settings["IPAddress"]) in _subnet(svc)
            assert svc.exec(cid, ["ping", "-c1", "-W2", settings["Gateway"]]) == 0
        assert firewall_table(one.root) != firewall_table(two.root)
    finally:
        assert _clean(one) == [] and _clean(two) == []


def test_the_default_subnet_is_chosen_again_when_the_host_took_it(
        service: ContainerService) -> None:
    cid = _run(service, "true")
    service.wait(cid)
    service.networks.retire_idle()  # else its bridge lingers, and is used again
    taken = _subnet(service)
    dummy = "dyt" + os.urandom(3).hex()
    # An address on a link of the host (a bridge: this kernel may lack "dummy").
    subprocess.run(["ip", "link", "add", dummy, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{taken[1]}/{taken.prefixlen}", "dev", dummy],
                       check=True)
        subprocess.run(["ip", "link", "set", dummy, "up"], check=True)  # now it routes
        service.start(cid)
        service.wait(cid)
        assert not _subnet(service).overlaps(taken)
        address = service.inspect(cid)["NetworkSettings"]["Networks"]["bridge"]
        assert address["IPAddress"] == ""  # not running: the address shows while it runs
        running = _run(service, "sleep", "30")
        ip = ipaddress.ip_address(service.inspect(running)["NetworkSettings"]["IPAddress"])
        assert ip in _subnet(service)
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=True)


def test_network_rows_filters_events_and_prune(service: ContainerService) -> None:
    networks = service.networks
    bridge_name = "dyt" + os.urandom(4).hex()
    created = networks.create("blue", subnet="10.212.1.0/24", labels={"team": "a"},
                              options={"com.docker.network.driver.mtu": "1400",
                                       "com.docker.network.bridge.name": bridge_name})
    networks.create("green", subnet="10.212.2.0/24", ip_range="10.212.2.128/25")
    assert networks.inspect(created[:10])["Name"] == "blue"
    assert [n["Name"] for n in networks.ls({"label": ["team=a"]})] == ["blue"]
    assert [n["Name"] for n in networks.ls({"type": ["builtin"]})] == ["bridge", "host",
                                                                       "none"]
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        networks.ls({"colour": ["red"]})
    cid = _run(service, "sh", "-c", "cat /sys/class/net/eth0/mtu; sleep 30", network="blue")
    other = _run(service, "sleep", "30", network="green")
    assert service.inspect(other)["NetworkSettings"]["Networks"]["green"][
        "IPAddress"] == "10.212.2.128"
    deadline = time.monotonic() + 10
    while not (logged := [e.data for e in service.logs(cid)]):
        assert time.monotonic() < deadline, "the container wrote nothing"
        time.sleep(0.05)
    assert logged == [b"1400\n"]
    assert (Path("/sys/class/net") / bridge_name / "mtu").read_text() == "1400\n"
    with pytest.raises(Conflict, match="has active endpoints"):
        networks.remove("blue")
    service.remove(cid, force=True)
    assert networks.prune() == ["blue"]
    with pytest.raises(NotFound):
        networks.inspect("blue")
    with open(os.path.join(service.root, "events.log")) as f:
        events = [json.loads(line) for line in f if '"Type":"network"' in line]
    blue = [(e["Action"], e["Actor"]["Attributes"].get("container"))
            for e in events if e["Actor"]["Attributes"]["name"] == "blue"]
    assert blue == [("create", None), ("connect", cid), ("disconnect", cid),
                    ("destroy", None)]


def test_ports_a_container_asks_for() -> None:
    host = HostConfig(port_bindings={
        "80/tcp": [PortBinding(host_ip="127.0.0.1", host_port="8080")],
        "53/udp": [PortBinding(host_ip="", host_port="")],
        "90/tcp": [PortBinding(host_ip="0.0.0.0", host_port="9000-9010")]},
        publish_all_ports=True)
    assert port_requests(host, ["80/tcp", "443/tcp", "53/udp"]) == [
        Publish(80, "tcp", "127.0.0.1", 8080), Publish(53, "udp", "", 0),
        Publish(90, "tcp", "", 9000, 9010), Publish(443, "tcp")]
    with pytest.raises(InvalidArgument, match="invalid port binding"):
        port_requests(HostConfig(port_bindings={"80/tcp": [PortBinding(host_port="x")]}), [])


def test_a_fixed_address_is_checked_and_held(service: ContainerService) -> None:
    service.networks.create("fixed", subnet="10.212.3.0/24")
    config, host = to_config(RunFlags(image="busybox", command=["sleep", "30"],
                                      network="fixed"))
    outside = networking_config(RunFlags(network="fixed", ip="10.212.4.9"))
    with pytest.raises(InvalidArgument, match="does not belong"):
        service.create(config, host, networking=outside)
    assert service.list(all=True) == []
    fixed = networking_config(RunFlags(network="fixed", ip="10.212.3.77"))
    one = service.create(config, host, networking=fixed)
    two = service.create(config, host, networking=fixed)
    service.start(one)
    with pytest.raises(Conflict, match=r"Address already in use: 10\.212\.3\.77"):
        service.start(two)
    assert service.state(two) == "created"
    service.remove(one, force=True)
    service.start(two)
    assert service.inspect(two)["NetworkSettings"]["Networks"]["fixed"][
        "IPAddress"] == "10.212.3.77"


def test_an_idle_bridge_lingers_for_the_next_container_then_goes(
        service: ContainerService) -> None:
    name = service.networks.inspect("bridge")["Options"]["com.docker.network.bridge.name"]
    link = Path("/sys/class/net") / name
    first = _run(service, "true")
    service.wait(first)
    index = (link / "ifindex").read_text()
    retirer = Path(service.runroot) / "network-retire.pid"
    waiting = retirer.read_text()
    started = time.time()
    second = _run(service, "true")  # the same bridge, not a new one
    assert (link / "ifindex").read_text() == index
    service.wait(second)
    # The same process waits on, for a linger that starts at the last release.
    assert retirer.read_text() == waiting
    assert retirer.stat().st_mtime > started
    deadline = time.monotonic() + 10
    # No command runs: the detached process takes the bridge down, then its rules.
    while link.exists() or firewall.tables(firewall_table(service.root)):
        assert time.monotonic() < deadline, "the idle bridge stayed"
        time.sleep(0.1)


def test_a_lock_held_too_long_fails_naming_its_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.engine import networks

    service = networks.NetworkService(str(tmp_path / "root"), str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen(["flock", str(tmp_path / "run" / "network.lock"), "-c",
                               "echo held; exec sleep 30"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        monkeypatch.setattr(networks, "_LOCK_PATIENCE", 0.3)
        with pytest.raises(Unavailable, match=rf"locked for 0s by process {holder.pid} "
                                              r"\(flock "):
            service.retire_idle()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the sleep has the lock's fd too
        holder.wait()
    assert service.retire_idle() == []  # once it is free
