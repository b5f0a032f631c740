"""How fast ``dockyard build`` is, cold (``--no-cache``) and warm (every step cached),
beside ``podman build`` and ``buildah bud``.

    sudo .venv/bin/python bench/build_bench.py [-n 10]

Three contexts, built in a root of their own with the busybox image bootstrapped:

- ``four-step``: FROM busybox, COPY, RUN, CMD: the build the issue's aims are set on
  (docker's classic builder takes about 0.5 s for it cold, podman about 0.6 s);
- ``app``: the small multi-stage application of ``tests/data/build/app`` (two stages,
  COPY --from, an ARG, three RUNs);
- ``two-stage``: two stages that do not depend on each other (WORKDIR, COPY, two RUNs
  each), which dockyard builds at once, and a third that copies from both.

podman and buildah, where installed, get the same busybox image (``dockyard save``
piped into ``podman load``) in a storage root of their own under the temporary
directory, a ``containers.conf`` there (``$CONTAINERS_CONF``: ``cgroup_manager =
"cgroupfs"`` and ``events_logger = "file"``, as a host without systemd needs) and
``--network none`` for RUN, which is what dockyard's RUN has by default. Each build is
timed N times, the engines alternating; prints the medians and their ratios to
dockyard's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))
APP = Path(__file__).resolve().parent.parent / "tests" / "data" / "build" / "app"
FOUR_STEP = """FROM busybox
COPY config.txt /etc/app.conf
RUN wc -c /etc/app.conf > /size.txt
CMD ["cat", "/size.txt"]
"""
TWO_STAGE = """FROM busybox AS left
WORKDIR /src
COPY config.txt .
RUN wc -c config.txt > size.txt
RUN sha256sum config.txt > sum.txt

FROM busybox AS right
WORKDIR /src
COPY config.txt .
RUN md5sum config.txt > sum.txt
RUN cp config.txt copy.txt

FROM busybox
COPY --from=left /src/ /left/
COPY --from=right /src/ /right/
CMD ["cat", "/left/sum.txt", "/right/sum.txt"]
"""
CONTAINERS_CONF = """[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def contexts(tmp: str) -> dict[str, str]:
    """The contexts, made under ``tmp``."""
    app = os.path.join(tmp, "app")
    shutil.copytree(APP, app)
    four = os.path.join(tmp, "four-step")
    os.mkdir(four)
    shutil.copy(APP / "config.txt", four)
    Path(four, "Dockerfile").write_text(FOUR_STEP)
    two = os.path.join(tmp, "two-stage")
    os.mkdir(two)
    shutil.copy(APP / "config.txt", two)
    Path(two, "Dockerfile").write_text(TWO_STAGE)
    return {"four-step": four, "app": app, "two-stage": two}


def peers(tmp: str, dockyard: list[str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The installed peers: name -> (their build command's start, their environment),
    with the busybox image loaded into their storage."""
    storage = ["--root", os.path.join(tmp, "storage"), "--runroot", os.path.join(tmp, "runstorage")]
    conf = os.path.join(tmp, "containers.conf")
    Path(conf).write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": conf}
    found: dict[str, tuple[list[str], dict[str, str]]] = {}
    podman = shutil.which("podman")
    if podman:
        save = subprocess.Popen([*dockyard, "save", "busybox"], stdout=subprocess.PIPE)
        subprocess.run([podman, *storage, "load", "-q"], stdin=save.stdout, check=True,
                       stdout=subprocess.DEVNULL, env=env)
        assert save.stdout is not None
        save.stdout.close()
        if save.wait() != 0:
            raise SystemExit("dockyard save failed")
        found["podman build"] = ([podman, *storage, "build", "-q", "--network", "none"], env)
        buildah = shutil.which("buildah")
        if buildah:
            found["buildah bud"] = ([buildah, *storage, "bud", "-q", "--layers",
                                     "--network", "none"], env)
    else:
        print("podman is not installed: only dockyard is measured", file=sys.stderr)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--iterations", type=int, default=10)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="build-bench-") as tmp:
        dockyard = [DOCKYARD, "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]
        subprocess.run([*dockyard, "image", "bootstrap", "busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        engines = {"dockyard build": ([*dockyard, "build", "-q"], dict(os.environ)),
                   **peers(tmp, dockyard)}
        figures: dict[str, Callable[[], float]] = {}
        for name, context in contexts(tmp).items():
            for engine, (command, env) in engines.items():
                tag = ["-t", f"bench-{name}"]
                # One build first, so that the warm figure finds every step cached.
                subprocess.run([*command, *tag, context], check=True,
                               stdout=subprocess.DEVNULL, env=env)
                figures[f"{name} cold  {engine}"] = (
                    lambda c=command, t=tag, x=context, e=env: timed([*c, "--no-cache", *t, x],
                                                                      e))
                figures[f"{name} warm  {engine}"] = (
                    lambda c=command, t=tag, x=context, e=env: timed([*c, *t, x], e))
        samples: dict[str, list[float]] = {label: [] for label in figures}
        for _ in range(options.iterations):
            for label, run in figures.items():
                samples[label].append(run())
    medians = {label: statistics.median(times) for label, times in samples.items()}
    print(f"\n{'':40}{'median':>9}{'/ dockyard':>12}   ({options.iterations} runs, alternating)")
    for label, median in medians.items():
        ours = medians[label.rsplit("  ", 1)[0] + "  dockyard build"]
        print(f"{label:40}{median * 1000:7.0f}ms{median / ours:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
