"""What networking costs: TCP host -> container, and what it adds to `dockyard run`.

    sudo .venv/bin/python bench/network_bench.py [-n 20] [--rounds 5] [--megabytes 512]
        [--connections 2000]

In a root of its own, with the busybox image bootstrapped, one container runs
(``dockyard run -d -p 127.0.0.1:PORT:80 busybox sleep``), and the same small Python sink
listens on the host's loopback and inside the container's network namespace (entered
through ``/proc/PID/ns/net``). Three paths from the host: loopback; the published port
on 127.0.0.1 (kernel DNAT, no proxy); the container's own address (routed through the
bridge). The server is the same program everywhere, so the ratios measure the paths
alone. For each: the throughput of one TCP connection sending ``--megabytes`` MiB, and
the rate of short connections (connect, one byte each way, close), over ``--rounds``
rounds that alternate the paths (medians shown). Then, alternating ``-n`` times,
``dockyard run --rm busybox true`` on the default bridge and with ``--network none``:
the medians, and their difference: what networking adds to a run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dockyard.linux import syscalls

DOCKYARD = os.path.join(os.path.dirname(sys.executable), "dockyard")
CHUNK = 1 << 18


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _serve(sock: socket.socket) -> None:
    """Each connection: read to EOF (a bulk transfer) or one byte (a short one), then
    answer one byte and close."""
    buffer = bytearray(CHUNK)
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = conn.recv(1)
            if first == b"b":  # bulk
                while conn.recv_into(buffer):
                    pass
            conn.sendall(b".")


def listener(netns: str | None, address: str, port: int) -> socket.socket:
    """A listening socket inside ``netns``: a socket stays in the namespace of the
    thread that made it, so a thread enters the namespace, makes it and ends."""
    made: list[socket.socket] = []

    def make() -> None:
        if netns:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
            os.close(fd)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(512)
        made.append(sock)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if not made:
        raise SystemExit(f"cannot listen on {address}:{port} in {netns or 'the host'}")
    return made[0]


@contextmanager
def sink(netns: str | None, address: str, port: int) -> Iterator[None]:
    """The server, in a forked child (a core of its own), listening inside ``netns``
    (the host's namespace when None)."""
    sock = listener(netns, address, port)
    pid = os.fork()
    if pid == 0:
        try:
            _serve(sock)
        finally:
            os._exit(1)
    sock.close()
    try:
        yield
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def throughput(address: str, port: int, megabytes: int) -> float:
    """Bytes per second of one connection sending ``megabytes`` MiB to the sink."""
    payload = bytes(CHUNK)
    total = megabytes << 20
    with socket.create_connection((address, port)) as conn:
        start = time.perf_counter()
        conn.sendall(b"b")
        for _ in range(total // CHUNK):
            conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the sink read everything
        return total / (time.perf_counter() - start)


def connection_rate(address: str, port: int, count: int) -> float:
    """Short connections per second, one after the other."""
    start = time.perf_counter()
    for _ in range(count):
        with socket.create_connection((address, port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(b"s")
            conn.recv(1)
    return count / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=20)
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="network-bench-") as tmp:
        base = [DOCKYARD, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]
        subprocess.run([*base, "image", "bootstrap", "busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        published = free_port()
        subprocess.run([*base, "run", "-d", "--name", "target", "-p",
                        f"127.0.0.1:{published}:80", "busybox", "sleep", "3600"],
                       check=True, stdout=subprocess.DEVNULL)
        try:
            pid, ip = subprocess.run(
                [*base, "inspect", "-f", "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
                 "target"], check=True, capture_output=True, text=True).stdout.split()
            netns = f"/proc/{pid}/ns/net"
            loopback = free_port()
            paths = {"host loopback": ("127.0.0.1", loopback),
                     "published port (127.0.0.1)": ("127.0.0.1", published),
                     "container address": (ip, 80)}
            speeds: dict[str, list[float]] = {label: [] for label in paths}
            rates: dict[str, list[float]] = {label: [] for label in paths}
            # Alternating rounds, medians: the paths share whatever else the host does.
            with sink(None, "127.0.0.1", loopback), sink(netns, "0.0.0.0", 80):
                for _ in range(options.rounds):
                    for label, (address, port) in paths.items():
                        speeds[label].append(throughput(address, port, options.megabytes))
                        rates[label].append(connection_rate(address, port,
                                                            options.connections))
            results = {label: (statistics.median(speeds[label]),
                               statistics.median(rates[label])) for label in paths}
            figures: dict[str, Callable[[], float]] = {
                "run --rm (bridge)": lambda: timed([*base, "run", "--rm", "busybox", "true"]),
                "run --rm --network none": lambda: timed(
                    [*base, "run", "--rm", "--network", "none", "busybox", "true"]),
            }
            samples: dict[str, list[float]] = {label: [] for label in figures}
            for _ in range(options.iterations):
                for label, run in figures.items():
                    samples[label].append(run())
        finally:
            subprocess.run([*base, "rm", "-f", "target"], check=True,
                           stdout=subprocess.DEVNULL)
    loop_bps, loop_cps = results["host loopback"]
    print(f"\n{'TCP, host -> ':30}{'MiB/s':>10}{'vs lo':>8}{'conn/s':>10}{'vs lo':>8}")
    for label, (bps, cps) in results.items():
        print(f"{label:30}{bps / (1 << 20):10.0f}{bps / loop_bps:8.2f}"
              f"{cps:10.0f}{cps / loop_cps:8.2f}")
    medians = {label: statistics.median(times) for label, times in samples.items()}
    print(f"\n{'':30}{'median':>10}   ({options.iterations} runs each, alternating)")
    for label, median in medians.items():
        print(f"{label:30}{median * 1000:8.0f}ms")
    added = medians["run --rm (bridge)"] - medians["run --rm --network none"]
    print(f"{'networking adds':30}{added * 1000:8.0f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
