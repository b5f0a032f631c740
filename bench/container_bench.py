"""How fast containers start: `dockyard run --rm`, `dockyard exec`, fifty at once.

    sudo .venv/bin/python bench/container_bench.py [-n 20] [--parallel 50]

In a root of its own, with the busybox image bootstrapped, alternating N times:
``dockyard run --rm busybox true``, ``dockyard exec C true`` on a running container,
and, where installed, ``podman run --rm busybox true`` (and ``--network none``) with
the same image loaded into podman (``podman load`` of ``dockyard save``; on a host
without systemd podman needs ``cgroup_manager = "cgroupfs"`` and
``events_logger = "file"`` in the file ``$CONTAINERS_CONF`` names). Then
``--parallel`` detached containers started at once and removed at once. Prints the
medians, the ratios to dockyard's, and the resident memory of an idle container's
monitor (its watchdog included).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rss_kib(pattern: str) -> int:
    """The summed RSS of the processes whose command line names ``pattern``."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if pattern.encode() not in (proc / "cmdline").read_bytes() and \
                    pattern not in (proc / "comm").read_text():
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="container-bench-") as tmp:
        base = [DOCKYARD, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]
        subprocess.run([*base, "image", "bootstrap", "busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*base, "run", "-d", "--name", "target", "busybox", "sleep", "3600"],
                       check=True, stdout=subprocess.DEVNULL)
        figures: dict[str, Callable[[], float]] = {
            "dockyard run --rm": lambda: timed([*base, "run", "--rm", "busybox", "true"]),
            "dockyard exec": lambda: timed([*base, "exec", "target", "true"]),
        }
        podman = shutil.which("podman")
        if podman:
            archive = f"{tmp}/busybox.tar"
            subprocess.run([*base, "save", "-o", archive, "busybox"], check=True)
            subprocess.run([podman, "load", "-q", "-i", archive], check=True,
                           stdout=subprocess.DEVNULL)
            figures["podman run --rm"] = lambda: timed(
                [podman, "run", "--rm", "docker.io/library/busybox", "true"])
            figures["podman run --rm --network none"] = lambda: timed(
                [podman, "run", "--rm", "--network", "none", "docker.io/library/busybox",
                 "true"])
        samples: dict[str, list[float]] = {label: [] for label in figures}
        for _ in range(options.iterations):
            for label, run in figures.items():
                samples[label].append(run())
        monitor = rss_kib("dy-monitor") + rss_kib("dy-watchdog")
        subprocess.run([*base, "rm", "-f", "target"], check=True, stdout=subprocess.DEVNULL)

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
    medians = {label: statistics.median(times) for label, times in samples.items()}
    reference = medians["dockyard run --rm"]
    print(f"\n{'':34}{'median':>9}{'vs dockyard run':>17}   ({options.iterations} runs)")
    for label, median in medians.items():
        print(f"{label:34}{median * 1000:7.0f}ms{median / reference:16.2f}x")
    print(f"{options.parallel} x run -d at once: {started:.2f} s; {options.parallel} x rm -f "
          f"at once: {removed:.2f} s")
    print(f"idle container's monitor + watchdog: {monitor / 1024:.1f} MiB RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
