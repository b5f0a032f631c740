"""How fast containers start: `dockyard run --rm`, `dockyard exec`, fifty at once, beside
docker and podman.

    sudo .venv/bin/python bench/container_bench.py [-n 20] [--parallel 50]

In a root of its own, with the busybox image bootstrapped, alternating N times:
``dockyard run --rm busybox true`` (with the default network and with ``--network
none``, and with ``--runtime crun`` where that works), ``dockyard exec C true`` on a
running container, and beside them, with the same image loaded (``dockyard save``
piped into ``docker load`` / ``podman load``):

- docker, where a daemon answers or Debian's ``dockerd`` (package docker.io) is
  installed: then one is started for the run with a private ``--data-root``,
  ``--exec-root`` and socket under a temporary directory, without touching the host's
  firewall (``--iptables=false --ip6tables=false``: a dockerd that manages iptables
  sets the FORWARD policy to DROP) nor making a bridge (``--bridge=none``), so its
  containers run with ``--network none``; it is stopped at the end (SIGTERM, then
  SIGKILL). ``docker run --rm --network none busybox true`` and ``docker exec``.
- podman, where installed and working (on a host without systemd podman needs
  ``cgroup_manager = "cgroupfs"`` and ``events_logger = "file"`` in the ``[engine]``
  of the file ``$CONTAINERS_CONF`` names; where root may not raise its limits, as in
  this project's sandbox, also ``default_ulimits = ["nofile=1024:1024",
  "nproc=4096:4096"]`` in its ``[containers]``).

Then ``--parallel`` detached containers started at once and removed at once. Prints the
medians, their ratios to dockyard's and to docker's, and the memory (RSS and PSS) of
what watches an idle container: dockyard's monitor (its watchdog included), docker's
containerd shim, podman's conmon.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))
BUSYBOX = "docker.io/library/busybox"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """The RSS and PSS (shared pages divided among their users) of ``pids``, summed."""
    rss = sum(_status_kib(pid, "VmRSS") for pid in pids)
    pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def monitor_pids(runroot: str, container_id: str) -> list[int]:
    """A dockyard container's monitor and its watchdog (the monitor's child)."""
    state = Path(runroot, "containers", container_id, "monitor", "monitor.pid")
    monitor = int(state.read_text().split()[0])
    pids = [monitor]
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if _parent(int(proc.name)) == monitor:
                pids.append(int(proc.name))
    return pids


def _inspect_pid(command: list[str], name: str, field: str) -> int:
    return int(subprocess.run([*command, "inspect", "--format", f"{{{{.State.{field}}}}}",
                               name], capture_output=True, text=True, check=True).stdout)


def _answers(docker: list[str]) -> bool:
    return subprocess.run([*docker, "version"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0


def _forward_policy() -> str | None:
    """The policy of iptables' FORWARD chain (``ACCEPT``), None without iptables."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
        return rules[0].split()[-1] if rules else None
    return None


@contextlib.contextmanager
def docker_daemon(tmp: str) -> Iterator[list[str] | None]:
    """The docker command line of a daemon that answers: the host's, or one started
    here from Debian's dockerd and stopped afterwards; None when there is neither."""
    client = shutil.which("docker")
    if client is None:
        yield None
        return
    if _answers([client]):
        yield [client]
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        yield None
        return
    home = Path(tmp, "docker")
    home.mkdir()
    socket = home / "docker.sock"
    policy = _forward_policy()
    with open(home / "dockerd.log", "wb") as log:
        daemon = subprocess.Popen(
            [dockerd, "--data-root", str(home / "data"), "--exec-root", str(home / "exec"),
             "--pidfile", str(home / "docker.pid"), "-H", f"unix://{socket}",
             "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--exec-opt", "native.cgroupdriver=cgroupfs"],
            stdout=log, stderr=log, start_new_session=True)
    docker = [client, "-H", f"unix://{socket}"]
    try:
        deadline = time.monotonic() + 60
        while not _answers(docker):
            if daemon.poll() is not None or time.monotonic() > deadline:
                print(f"dockerd did not start: see {home / 'dockerd.log'}", file=sys.stderr)
                yield None
                return
            time.sleep(0.2)
        yield docker
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        # What a daemon killed hard left mounted under its roots.
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in reversed([p for p in points if p.startswith(str(home) + "/")]):
            subprocess.run(["umount", "--lazy", point], check=False)
        if policy is not None and _forward_policy() != policy:
            subprocess.run(["iptables", "-P", "FORWARD", policy], check=False)


def load_into(base: list[str], loader: list[str]) -> None:
    """``dockyard save busybox | LOADER`` (``docker load``, ``podman load``)."""
    save = subprocess.Popen([*base, "save", "busybox"], stdout=subprocess.PIPE)
    subprocess.run(loader, stdin=save.stdout, check=True, stdout=subprocess.DEVNULL)
    assert save.stdout is not None
    save.stdout.close()
    if save.wait() != 0:
        raise SystemExit("dockyard save failed")


def works(command: list[str]) -> bool:
    """Whether ``command`` succeeds; a figure that cannot be measured is said, not fatal."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"not measured: `{' '.join(command)}` fails here: "
              f"{result.stderr.strip()[-300:]}", file=sys.stderr)
    return result.returncode == 0


def remove_all(base: list[str], tmp: str) -> None:
    """Remove every container of the bench's root, and wait for the processes the
    commands left to end (an idle bridge lingers a moment, then a detached process
    of the last command retires it), before the directory goes."""
    ids = subprocess.run([*base, "ps", "-aq"], capture_output=True, text=True,
                         check=False).stdout.split()
    if ids:
        subprocess.run([*base, "rm", "-f", *ids], stdout=subprocess.DEVNULL, check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        commands = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                commands.append((proc / "cmdline").read_bytes())
        if not any(tmp.encode() in command for command in commands):
            break
        time.sleep(0.1)


def measure(base: list[str], docker: list[str] | None, options: argparse.Namespace
            ) -> tuple[dict[str, list[float]], dict[str, tuple[int, int]], float, float]:
    """The samples of each figure, the RSS and PSS (KiB) of what watches an idle
    container in each engine, and the seconds the parallel starts and removals took."""
    subprocess.run([*base, "image", "bootstrap", "busybox"], check=True,
                   stdout=subprocess.DEVNULL)
    target = subprocess.run([*base, "run", "-d", "--name", "target", "busybox", "sleep",
                             "3600"], check=True, capture_output=True, text=True).stdout.strip()
    figures: dict[str, Callable[[], float]] = {
        "dockyard run --rm": lambda: timed([*base, "run", "--rm", "busybox", "true"]),
        "dockyard run --rm --network none": lambda: timed(
            [*base, "run", "--rm", "--network", "none", "busybox", "true"]),
        "dockyard exec": lambda: timed([*base, "exec", "target", "true"]),
    }
    crun = [*base, "run", "--rm", "--runtime", "crun", "busybox", "true"]
    if works(crun):
        figures["dockyard run --rm --runtime crun"] = lambda: timed(crun)
    if docker is not None:
        load_into(base, [*docker, "load", "-q"])
        subprocess.run([*docker, "run", "-d", "--rm", "--name", "dockyard-bench-target",
                        "--network", "none", BUSYBOX, "sleep", "3600"], check=True,
                       stdout=subprocess.DEVNULL)
        figures["docker run --rm --network none"] = lambda: timed(
            [*docker, "run", "--rm", "--network", "none", BUSYBOX, "true"])
        figures["docker exec"] = lambda: timed(
            [*docker, "exec", "dockyard-bench-target", "true"])
    podman = shutil.which("podman")
    if podman:
        load_into(base, [podman, "load", "-q"])
    if podman and works([podman, "run", "--rm", BUSYBOX, "true"]):
        figures["podman run --rm"] = lambda: timed([podman, "run", "--rm", BUSYBOX, "true"])
        figures["podman run --rm --network none"] = lambda: timed(
            [podman, "run", "--rm", "--network", "none", BUSYBOX, "true"])
    samples: dict[str, list[float]] = {label: [] for label in figures}
    for _ in range(options.iterations):
        for label, run in figures.items():
            samples[label].append(run())
    # What stays beside an idle container: dockyard's monitor, docker's containerd
    # shim (the parent of the container's init), podman's conmon.
    memory = {"dockyard monitor + watchdog": memory_kib(
        monitor_pids(base[base.index("--runroot") + 1], target))}
    if docker is not None:
        memory["docker's containerd-shim"] = memory_kib(
            [_parent(_inspect_pid(docker, "dockyard-bench-target", "Pid"))])
    if podman and "podman run --rm" in figures:
        subprocess.run([podman, "run", "-d", "--rm", "--name", "dockyard-bench-target",
                        BUSYBOX, "sleep", "3600"], check=True, stdout=subprocess.DEVNULL)
        memory["podman's conmon"] = memory_kib(
            [_inspect_pid([podman], "dockyard-bench-target", "ConmonPid")])
        subprocess.run([podman, "rm", "-f", "-t", "0", "dockyard-bench-target"], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([*base, "rm", "-f", "target"], check=True, stdout=subprocess.DEVNULL)
    if docker is not None:
        subprocess.run([*docker, "rm", "-f", "dockyard-bench-target"], check=True,
                       stdout=subprocess.DEVNULL)

    names = [f"p{i}" for i in range(options.parallel)]
    with concurrent.futures.ThreadPoolExecutor(options.parallel) as pool:
        start = time.perf_counter()
        list(pool.map(lambda name: subprocess.run(
            [*base, "run", "-d", "--name", name, "busybox", "sleep", "600"], check=True,
            stdout=subprocess.DEVNULL), names))
        started = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(lambda name: subprocess.run(
            [*base, "rm", "-f", name], check=True, stdout=subprocess.DEVNULL), names))
        removed = time.perf_counter() - start
    return samples, memory, started, removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="container-bench-") as tmp, \
            docker_daemon(tmp) as docker:
        base = [DOCKYARD, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]
        try:
            samples, memory, started, removed = measure(base, docker, options)
        finally:
            remove_all(base, tmp)
    medians = {label: statistics.median(times) for label, times in samples.items()}
    print(f"\n{'':36}{'median':>9}{'/ dockyard':>12}{'/ docker':>10}   "
          f"({options.iterations} runs, alternating)")
    for label, median in medians.items():
        ours = medians["dockyard exec" if "exec" in label else "dockyard run --rm"]
        theirs = medians.get("docker exec" if "exec" in label
                             else "docker run --rm --network none")
        against = f"{median / theirs:9.2f}x" if theirs else f"{'-':>10}"
        print(f"{label:36}{median * 1000:7.0f}ms{median / ours:11.2f}x{against}")
    print(f"{options.parallel} x run -d at once: {started:.2f} s; {options.parallel} x rm -f "
          f"at once: {removed:.2f} s")
    for label, (rss, pss) in memory.items():
        print(f"idle container, {label}: {rss / 1024:.1f} MiB RSS, {pss / 1024:.1f} MiB PSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
