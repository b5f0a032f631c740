"""Networking through the real CLI: published ports reached from the host, from another
host (a network namespace on a link of its own) and from other containers, user
networks with names and aliases, isolation, ``--internal``, ``connect``/``disconnect``,
the ``host``, ``none`` and ``container:`` modes, addresses that stay, links, and the
leak checks after ``rm`` and after a monitor's ``kill -9``.

Each test has its own roots (the ``user`` fixture of ``test_cli_containers``, whose
leftovers check covers this root's bridges, veths and nftables tables) and its own
subnets, so that the tests can run in parallel.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

# busybox has no UDP server: the host's python runs in the container for the echo.
_PYTHON = ["-v", "/usr:/host/usr:ro", "-e", "PYTHONHOME=/host/usr"]
_PYTHON_CMD = ["/host/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "--library-path",
               "/host/usr/lib/x86_64-linux-gnu", "/host/usr/bin/python3", "-c"]
_UDP_ECHO = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.bind(('', 5353))\nwhile True:\n    data, peer = s.recvfrom(512)\n"
             "    s.sendto(b'echo:' + data, peer)\n")


def _http(url: str, deadline: float = 10.0) -> str:
    """The body of ``url``, waiting for the server to come up."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def _host_address() -> str:
    """An IPv4 address of the host other than loopback and dockyard's bridges."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if not fields[1].startswith(("dy", "docker")):
            return fields[3].split("/")[0]
    pytest.fail("the host has no global IPv4 address to publish on")


@contextlib.contextmanager
def _other_host() -> Iterator[tuple[list[str], str]]:
    """Another host on a link of its own: a network namespace joined to the host by a
    veth pair. Yields the command prefix that runs a program there, and the host's
    address on that link."""
    tag = os.urandom(3).hex()
    name, host_end, third = f"dyt-peer-{tag}", f"dyo{tag}", int(tag[:2], 16)
    ip = ["ip", "netns", "exec", name]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (["ip", "link", "add", host_end, "type", "veth", "peer", "name",
                         "eth0", "netns", name],
                        ["ip", "addr", "add", f"198.18.{third}.1/30", "dev", host_end],
                        ["ip", "link", "set", host_end, "up"],
                        [*ip, "ip", "addr", "add", f"198.18.{third}.2/30", "dev", "eth0"],
                        [*ip, "ip", "link", "set", "eth0", "up"]):
            subprocess.run(command, check=True)
        yield ip, f"198.18.{third}.1"
    finally:
        subprocess.run(["ip", "link", "del", host_end], check=False)
        subprocess.run(["ip", "netns", "del", name], check=True)


def _ip(user: User, container: str, network: str = "bridge") -> str:
    settings = json.loads(user("inspect", container).stdout)[0]["NetworkSettings"]
    return str(settings["Networks"][network]["IPAddress"])


def _sh(user: User, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return user("run", "--rm", *args, ok=ok)


def test_published_ports_from_the_host_and_other_containers(user: User) -> None:
    user("run", "-d", "--name", "web", "-p", "127.0.0.1:18080:80", "-p", "18081:80",
         "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    hostname = user("inspect", "-f", "{{.Config.Hostname}}", "web").stdout.strip()
    assert _http("http://127.0.0.1:18080/hostname") == hostname + "\n"
    address = _host_address()
    assert _http(f"http://{address}:18081/hostname") == hostname + "\n"
    # 18080 is published on 127.0.0.1 only.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}:18080/hostname", timeout=2)
    with _other_host() as (there, host_address):
        curl = [*there, "curl", "-s", "-m", "5"]
        assert subprocess.run([*curl, f"http://{host_address}:18081/hostname"],
                              capture_output=True, text=True).stdout == hostname + "\n"
        assert subprocess.run([*curl, f"http://{host_address}:18080/hostname"],
                              capture_output=True).returncode != 0
    assert sorted(user("port", "web").stdout.splitlines()) == [
        "80/tcp -> 0.0.0.0:18081", "80/tcp -> 127.0.0.1:18080"]
    assert user("port", "web", "80").stdout.splitlines() == ["0.0.0.0:18081",
                                                             "127.0.0.1:18080"]
    missing = user("port", "web", "81", ok=False)
    assert missing.returncode == 1 and "No public port '81/tcp' published" in missing.stderr
    row = user("ps").stdout.splitlines()[1]
    assert "0.0.0.0:18081->80/tcp" in row and "127.0.0.1:18080->80/tcp" in row
    ports = json.loads(user("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"]
    assert sorted(ports["80/tcp"], key=lambda b: b["HostIp"]) == [
        {"HostIp": "0.0.0.0", "HostPort": "18081"},
        {"HostIp": "127.0.0.1", "HostPort": "18080"}]
    # Another container: through the published port on the host's address (hairpin
    # NAT) and directly at the container's address.
    web_ip = _ip(user, "web")
    out = _sh(user, "busybox", "sh", "-c",
              f"timeout 5 wget -q -O - http://{address}:18081/hostname; "
              f"timeout 5 wget -q -O - http://{web_ip}:80/hostname").stdout
    assert out == f"{hostname}\n{hostname}\n"
    # A container reaching its own published port through the host (hairpin).
    own = user("exec", "web", "timeout", "5", "wget", "-q", "-O", "-",
               f"http://{address}:18081/hostname").stdout
    assert own == hostname + "\n"


def test_udp_and_a_free_host_port(user: User) -> None:
    user("run", "-d", "--name", "echo", "-p", "127.0.0.1::5353/udp", *_PYTHON, "busybox",
         *_PYTHON_CMD, _UDP_ECHO)
    port = int(user("port", "echo", "5353/udp").stdout.strip().rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        deadline = time.monotonic() + 10
        while True:
            sock.sendto(b"ping", ("127.0.0.1", port))
            try:
                assert sock.recvfrom(512)[0] == b"echo:ping"
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no UDP echo through the port"


def test_user_networks_names_aliases_and_isolation(user: User) -> None:
    user("network", "create", "--subnet", "10.211.1.0/24", "front")
    user("network", "create", "--subnet", "10.211.2.0/24", "back")
    user("run", "-d", "--name", "api", "--network", "front", "--network-alias", "service",
         "--hostname", "apihost", "busybox", "sleep", "60")
    api_ip = _ip(user, "api", "front")
    assert api_ip == "10.211.1.2"
    out = _sh(user, "--network", "front", "busybox", "sh", "-c",
              "cat /etc/resolv.conf; for n in api service apihost API. api.front; do "
              "ping -c1 -W2 $n >/dev/null && echo $n ok; done").stdout.splitlines()
    assert out[0] == "nameserver 10.211.1.1"
    assert out[-5:] == ["api ok", "service ok", "apihost ok", "API. ok", "api.front ok"]
    # Names of other networks are not answered, and their addresses not reached; names
    # of the host's resolvers still are forwarded (seen as no NXDOMAIN for api only).
    other = _sh(user, "--network", "back", "busybox", "sh", "-c",
                f"nslookup api >/dev/null 2>&1 || echo no name; "
                f"ping -c1 -W1 {api_ip} >/dev/null 2>&1 || echo no route").stdout
    assert other == "no name\nno route\n"
    inspected = json.loads(user("network", "inspect", "front").stdout)[0]
    assert inspected["IPAM"]["Config"] == [{"Subnet": "10.211.1.0/24",
                                            "Gateway": "10.211.1.1"}]
    assert [c["Name"] for c in inspected["Containers"].values()] == ["api"]
    names = user("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    assert [n for n in names if n] == ["back bridge", "bridge bridge", "front bridge",
                                       "host host", "none null"]
    assert user("network", "ls", "-q", "--filter", "type=custom").stdout.count("\n") == 2


def test_internal_network_has_no_way_out(user: User) -> None:
    user("network", "create", "--internal", "--subnet", "10.211.3.0/24", "closed")
    out = _sh(user, "--network", "closed", "busybox", "sh", "-c",
              f"ip route; ping -c1 -W1 {_host_address()} >/dev/null 2>&1 || echo no way out"
              ).stdout
    assert "default" not in out and out.endswith("no way out\n")
    assert json.loads(user("network", "inspect", "closed").stdout)[0]["Internal"] is True


def test_connect_and_disconnect_a_running_container(user: User) -> None:
    user("network", "create", "--subnet", "10.211.4.0/24", "one")
    user("network", "create", "--subnet", "10.211.5.0/24", "two")
    user("run", "-d", "--name", "db", "--network", "two", "busybox", "sleep", "60")
    user("run", "-d", "--name", "app", "--network", "one", "busybox", "sleep", "60")
    reach = ["exec", "app", "ping", "-c1", "-W1", "db"]
    assert user(*reach, ok=False).returncode != 0
    user("network", "connect", "--alias", "store", "--ip", "10.211.5.50", "two", "app")
    assert _ip(user, "app", "two") == "10.211.5.50"
    user(*reach)
    assert user("exec", "db", "ping", "-c1", "-W1", "store", ok=False).returncode == 0
    assert "eth1" in user("exec", "app", "ip", "-o", "link").stdout
    user("network", "disconnect", "two", "app")
    assert user(*reach, ok=False).returncode != 0
    assert "eth1" not in user("exec", "app", "ip", "-o", "link").stdout
    networks = json.loads(user("inspect", "app").stdout)[0]["NetworkSettings"]["Networks"]
    assert list(networks) == ["one"]
    refused = user("network", "disconnect", "two", "app", ok=False)
    assert refused.returncode == 1 and "is not connected to network two" in refused.stderr
    # A container that does not run is connected from its next start.
    user("stop", "-t", "0", "app")
    user("network", "connect", "two", "app")
    user("start", "app")
    user(*reach)


def test_host_none_and_container_modes(user: User) -> None:
    out = _sh(user, "--network", "host", "busybox", "ip", "-o", "-4", "addr").stdout
    assert f" {_host_address()}/" in out
    assert _sh(user, "--network", "none", "busybox", "ip", "-o", "link").stdout.count(
        "\n") == 1
    user("run", "-d", "--name", "first", "busybox", "sleep", "60")
    first_ip = _ip(user, "first")
    shared = _sh(user, "--network", "container:first", "busybox", "sh", "-c",
                 "ip -o -4 addr; hostname").stdout
    assert first_ip in shared
    assert shared.endswith(user("inspect", "-f", "{{.Config.Hostname}}", "first").stdout)
    refused = user("run", "--network", "container:first", "-p", "80", "busybox", "true",
                   ok=False)
    assert refused.returncode == 125 and "conflicting options" in refused.stderr
    for flags in (["-h", "other"], ["--dns", "192.0.2.1"], ["--link", "first:f"]):
        refused = user("run", "--network", "container:first", *flags, "busybox", "true",
                       ok=False)
        assert refused.returncode == 125 and "conflicting options" in refused.stderr
    networks = user("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert {"bridge", "host", "none"} <= set(networks)
    user("run", "-d", "--name", "onhost", "--network", "host", "busybox", "sleep", "60")
    assert sorted(user("ps", "--format", "{{.Names}} {{.Networks}}").stdout.splitlines()) \
        == ["first bridge", "onhost host"]


def test_twenty_containers_get_distinct_addresses_that_stay(user: User) -> None:
    user("network", "create", "--subnet", "10.211.6.0/24", "many")

    def start(n: int) -> str:
        return user("run", "-d", "--name", f"c{n:02}", "--network", "many", "busybox",
                    "sleep", "120").stdout.strip()

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(start, range(20)))
    user.ids.update(ids)
    names = [f"c{n:02}" for n in range(20)]

    def addresses() -> dict[str, str]:  # read by a new CLI process each time
        found = json.loads(user("inspect", *names).stdout)
        return {c["Name"]: c["NetworkSettings"]["Networks"]["many"]["IPAddress"]
                for c in found}

    first = addresses()
    assert len(set(first.values())) == 20
    assert all(ip.startswith("10.211.6.") for ip in first.values())
    user("stop", "-t", "0", "c03", "c07")
    user("start", "c07", "c03")
    assert addresses() == first
    user("rm", "-f", *names)


def test_links(user: User) -> None:
    # The image's EXPOSE and ENV count, as the container's own.
    user("create", "--name", "base", "busybox", "true")
    user("commit", "-c", "EXPOSE 8080/udp", "-c", "ENV COLOR=blue", "base", "served")
    user("run", "-d", "--name", "server", "--expose", "80", "-e", "SECRET=s3",
         "served", "sleep", "60")
    server_ip = _ip(user, "server")
    out = _sh(user, "--name", "client", "--link", "server:srv", "busybox", "sh", "-c",
              "grep srv /etc/hosts; env | grep ^SRV_ | sort").stdout.splitlines()
    assert out[0].split() == [server_ip, "srv", "server"]
    assert out[1:] == ["SRV_ENV_COLOR=blue", "SRV_ENV_SECRET=s3", "SRV_NAME=/client/srv",
                       f"SRV_PORT=tcp://{server_ip}:80",
                       f"SRV_PORT_8080_UDP=udp://{server_ip}:8080",
                       f"SRV_PORT_8080_UDP_ADDR={server_ip}", "SRV_PORT_8080_UDP_PORT=8080",
                       "SRV_PORT_8080_UDP_PROTO=udp",
                       f"SRV_PORT_80_TCP=tcp://{server_ip}:80",
                       f"SRV_PORT_80_TCP_ADDR={server_ip}", "SRV_PORT_80_TCP_PORT=80",
                       "SRV_PORT_80_TCP_PROTO=tcp"]
    user("stop", "-t", "0", "server")
    refused = user("run", "--link", "server:srv", "busybox", "true", ok=False)
    assert refused.returncode == 125 and "Cannot link to a non running container" in \
        refused.stderr


def test_dns_flags_and_add_host(user: User) -> None:
    out = _sh(user, "--dns", "192.0.2.53", "--dns-search", "example.org", "--dns-option",
              "ndots:2", "--add-host", "gw:host-gateway", "--add-host", "db:10.0.0.9",
              "busybox", "sh", "-c", "cat /etc/resolv.conf; grep -wE 'gw|db' /etc/hosts; "
              "ip route | grep default").stdout.splitlines()
    assert out[:3] == ["nameserver 192.0.2.53", "search example.org", "options ndots:2"]
    gateway = out[-1].split()[2]
    assert out[3].split() == [gateway, "gw"] and out[4].split() == ["10.0.0.9", "db"]


def test_nothing_left_after_rm_and_after_a_monitor_is_killed(user: User) -> None:
    user("network", "create", "--subnet", "10.211.7.0/24", "leaky")
    cid = user("run", "-d", "--network", "leaky", "-p", "80", "busybox", "sleep",
               "60").stdout.strip()
    user.ids.add(cid)
    assert user.leftovers(), "a running container shows no link: the check sees nothing"
    user("rm", "-f", cid)
    # The idle bridge lingers, with the process that retires it (its arguments name
    # the roots): it still runs, so the reader of rm's output did not wait for it. The
    # check stops it and takes the bridge down at once.
    retirer = int((user.home / "run" / "network-retire.pid").read_text().split()[0])
    assert str(user.home).encode() in Path(f"/proc/{retirer}/cmdline").read_bytes()
    assert user.leftovers() == []
    cid = user("run", "-d", "--network", "leaky", "-p", "80", "busybox", "sleep",
               "60").stdout.strip()
    user.ids.add(cid)
    pid_file = user.home / "run" / "containers" / cid / "monitor" / "monitor.pid"
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "Exited (255)" not in user("ps", "-a").stdout:  # the next command cleans up
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert user.leftovers() == []
    user("rm", cid)
    user("network", "rm", "leaky")
    assert user.leftovers() == []


def test_bad_input_is_refused_and_changes_nothing(user: User, tmp_path: Path) -> None:
    user("network", "create", "--subnet", "10.211.8.0/24", "taken")
    before = user("network", "ls", "-q").stdout

    def refused(*args: str, code: int = 1) -> str:
        result = user(*args, ok=False)
        assert result.returncode == code, result
        # One line, and for a bad flag docker's usage hint after it.
        lines = result.stderr.strip().splitlines()
        assert lines[1:] in ([], ["See 'dockyard run --help'."]), result.stderr
        return lines[0]

    assert "overlaps with other one" in refused("network", "create", "--subnet",
                                                "10.211.8.128/25", "again")
    assert "already exists" in refused("network", "create", "taken")
    assert "no matching subnet for gateway" in refused(
        "network", "create", "--subnet", "10.211.9.0/24", "--gateway", "10.9.9.1", "gw")
    assert "does not belong to" in refused("run", "--network", "taken", "--ip",
                                           "10.211.9.5", "busybox", "true", code=125)
    assert "user defined networks only" in refused("run", "--ip", "172.17.0.9",
                                                   "busybox", "true", code=125)
    assert 'invalid argument "80:80:80:80"' in refused("run", "-p", "80:80:80:80",
                                                       "busybox", "true", code=125)
    assert "invalid containerPort" in refused("run", "-p", "8080:http", "busybox", "true",
                                              code=125)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert "port is already allocated" in refused(
            "run", "--name", "busy", "-p", f"127.0.0.1:{port}:80", "busybox", "true",
            code=125)
    assert user("ps", "-q").stdout == ""  # created, as by Docker, but not running
    user("rm", "busy")
    user("run", "-d", "--name", "holder", "--network", "taken", "busybox", "sleep", "60")
    assert "has active endpoints" in refused("network", "rm", "taken")
    assert "pre-defined network" in refused("network", "rm", "bridge")
    assert "network nosuch not found" in refused("run", "--network", "nosuch", "busybox",
                                                 "true", code=125)
    assert "No such container: nosuch" in refused("run", "--network", "container:nosuch",
                                                   "busybox", "true", code=125)
    assert "not found" in refused("network", "inspect", "nosuch")
    assert user("network", "ls", "-q").stdout == before
    user("rm", "-f", "holder")
    assert user("network", "rm", "taken").stdout == "taken\n"


def test_publish_all_ipv6_and_a_fixed_mac(user: User) -> None:
    user("network", "create", "--ipv6", "--subnet", "10.211.10.0/24", "--subnet",
         "fd00:211:10::/64", "dual")
    user("run", "-d", "--name", "both", "--network", "dual", "--expose", "80",
         "--expose", "81/udp", "-P", "--mac-address", "02:42:00:00:00:99", "busybox",
         "httpd", "-f", "-p", "80", "-h", "/etc")
    ports = user("port", "both").stdout.splitlines()
    assert [line.split(" -> ")[0] for line in ports] == ["80/tcp", "81/udp"]
    http = int(ports[0].rpartition(":")[2])
    hostname = user("inspect", "-f", "{{.Config.Hostname}}", "both").stdout.strip()
    assert _http(f"http://127.0.0.1:{http}/hostname") == hostname + "\n"
    settings = json.loads(user("inspect", "both").stdout)[0]["NetworkSettings"]["Networks"]
    assert settings["dual"]["GlobalIPv6Address"] == "fd00:211:10::2"
    assert settings["dual"]["MacAddress"] == "02:42:00:00:00:99"
    out = _sh(user, "--network", "dual", "busybox", "sh", "-c",
              "ping6 -c1 -W2 both >/dev/null && echo v6 ok; cat /sys/class/net/eth0/address"
              ).stdout
    assert out == "v6 ok\n" + "02:42:0a:d3:0a:03\n"


def test_names_of_every_network_a_container_is_on_and_dns_upstreams(
        user: User, tmp_path: Path) -> None:
    from dockyard.network import dns

    # An upstream of our own on the host (the embedded servers run there): the --dns
    # of two containers. It knows up.test, and fails every other name at once.
    upstream = "127.211.99.1"
    records, pidfile = tmp_path / "upstream.json", tmp_path / "upstream.pid"
    dns.write_records(str(records), {"up.test": ["192.0.2.77"]}, [])
    dns.start(str(records), [upstream], pidfile=str(pidfile))
    try:
        for third, name in ((30, "red"), (31, "blue"), (32, "green")):
            user("network", "create", "--subnet", f"10.211.{third}.0/24", name)
        user("run", "-d", "--name", "web", "--network", "blue", "busybox", "sleep", "60")
        user("network", "connect", "green", "web")
        user("run", "-d", "--name", "shy", "--network", "green", "busybox", "sleep", "60")
        for box in ("multi", "solo"):
            user("run", "-d", "--name", box, "--network", "red", "--dns", upstream,
                 "busybox", "sleep", "60")
        user("network", "connect", "blue", "multi")
        assert user("exec", "multi", "cat", "/etc/resolv.conf").stdout.splitlines()[0:1] \
            == ["nameserver 10.211.30.1"]
        assert "nameserver " + upstream not in user("exec", "multi", "cat",
                                                      "/etc/resolv.conf").stdout

        def answer(box: str, name: str) -> str:
            out = user("exec", box, "nslookup", name, ok=False).stdout
            found = [line.split()[-1] for line in out.splitlines()[2:]
                     if line.startswith("Address")]
            return found[0] if found else ""

        web, solo = _ip(user, "web", "blue"), _ip(user, "solo", "red")
        # multi (red, blue) asks red's server: it answers blue's names too.
        assert answer("multi", "web") == web
        assert answer("multi", "web.blue") == web
        assert answer("multi", "solo") == solo
        assert answer("multi", "up.test") == "192.0.2.77"  # through its --dns
        # Never the names of a network it is not on (shy: green, with web only).
        assert answer("multi", "shy") == ""
        # solo (red only) shares the server with multi, not multi's other networks.
        assert answer("solo", "multi") == _ip(user, "multi", "red")
        assert answer("solo", "web") == ""
        assert answer("solo", "up.test") == "192.0.2.77"
        # web (blue, green) asks blue's server, which answers green's names to it only.
        assert answer("web", "shy") == _ip(user, "shy", "green")
        assert answer("web", "multi") == _ip(user, "multi", "blue")
    finally:
        dns.stop(str(pidfile))


def test_connecting_an_ipv6_network_to_a_running_ipv4_container(user: User) -> None:
    user("network", "create", "--ipv6", "--subnet", "10.211.33.0/24", "--subnet",
         "fd00:211:33::/64", "six")
    user("run", "-d", "--name", "four", "busybox", "sleep", "60")  # the default bridge
    assert "inet6" not in user("exec", "four", "ip", "-6", "-o", "addr", "show",
                               "eth0").stdout
    user("network", "connect", "six", "four")
    assert "inet6 fd00:211:33::2/64" in user("exec", "four", "ip", "-6", "-o", "addr",
                                             "show", "eth1").stdout
    user("exec", "four", "ping6", "-c1", "-W2", "fd00:211:33::1")
    # The interfaces made for IPv4 networks keep IPv6 off.
    assert "inet6" not in user("exec", "four", "ip", "-6", "-o", "addr", "show",
                               "eth0").stdout
