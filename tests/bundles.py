"""Build OCI bundles for tests and benchmarks: a busybox rootfs and a ``config.json``.

A bundle is a directory holding ``rootfs/`` and ``config.json`` (OCI runtime-spec,
"Filesystem Bundle"). The rootfs is built once from the host's static busybox and
copied into each bundle, so that no test can see what another one wrote. The base
config is the one place that decides what "the default spec" is (``base_spec``).

Also the table of OCI runtimes the interop tests and benchmarks compare
(``RUNTIMES``), and ``run_runtime`` which runs one of them with its own ``--root``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOST_BUSYBOX = Path("/usr/bin/busybox")
# Every runtime invocation is bounded: a hung runtime must fail a test, not CI.
RUNTIME_TIMEOUT = 60.0

# ``id`` and ``chown`` in the container resolve names through these files.
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def dockyard_runtime_binary() -> str | None:
    """The project's own runtime: the virtualenv's console script, else the one on PATH."""
    venv_script = REPO / ".venv" / "bin" / "dockyard-runtime"
    if venv_script.exists():
        return str(venv_script)
    return shutil.which("dockyard-runtime")


# name -> absolute path, or None when not installed (tests then fail with a hint).
RUNTIMES: dict[str, str | None] = {
    "dockyard-runtime": dockyard_runtime_binary(),
    "runc": shutil.which("runc"),
    "crun": shutil.which("crun"),
}


def runtime_binary(name: str) -> str:
    """The path of runtime ``name``; raises with the fix when it is not installed."""
    binary = RUNTIMES[name]
    if binary is None:
        raise FileNotFoundError(f"{name} is not installed: run ./install.sh")
    if name == "crun" and _hybrid_with_v2_controllers():
        raise RuntimeError(
            "crun refuses cgroups in hybrid mode while the cgroup2 root holds a controller"
            " (hugetlb here): mount it as v1 as ./run-tests.sh does"
        )
    return binary


def _hybrid_with_v2_controllers() -> bool:
    # systemd's hybrid layout: v1 controllers plus a cgroup2 tree at .../unified. crun
    # only accepts it when that cgroup2 tree has no controller of its own.
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    return controllers.exists() and bool(controllers.read_text().split())


def build_busybox_rootfs(dest: Path) -> Path:
    """Make a minimal rootfs at ``dest``: static busybox, one symlink per applet.

    The applets are laid out where busybox itself would install them
    (``busybox --list-full``: bin/sh, usr/bin/env...), all pointing at /bin/busybox.
    """
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(HOST_BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run(
        [str(HOST_BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = dest / applet
        if not link.exists():
            link.symlink_to("/bin/busybox")
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    tmp = dest / "tmp"
    tmp.mkdir(exist_ok=True)
    # mkdir applies the umask; sticky world-writable needs an explicit chmod.
    tmp.chmod(0o1777)
    return dest


@functools.cache
def _runc_spec() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([runtime_binary("runc"), "spec", "--bundle", tmp], check=True)
        return json.loads((Path(tmp) / "config.json").read_text())


def base_spec() -> dict[str, Any]:
    """The default runtime spec every test bundle starts from (a fresh copy).

    Today this is ``runc spec``, the reference the other runtimes are compared with;
    it becomes ``dockyard.runtime.spec.default_spec()`` once that exists.
    """
    spec = copy.deepcopy(_runc_spec())
    # Tests capture stdio through pipes; a terminal needs a console socket.
    spec["process"]["terminal"] = False
    return spec


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` in place: dicts merge, anything else replaces."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def write_bundle(
    bundle: Path, rootfs_template: Path, args: Sequence[str], **overrides: Any
) -> Path:
    """Create bundle directory ``bundle`` running ``args``, with spec ``overrides`` merged in.

    ``overrides`` are top-level spec keys, deep-merged: ``hostname="x"``,
    ``linux={"resources": {"memory": {"limit": 1 << 26}}}``, ``process={"user": {...}}``.
    The rootfs is a real copy (runc refuses a symlinked root.path, and a bind mount
    would be one more thing to clean up).
    """
    bundle.mkdir(parents=True)
    shutil.copytree(rootfs_template, bundle / "rootfs", symlinks=True)
    spec = merge(base_spec(), overrides)
    spec["process"]["args"] = list(args)
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    return bundle


def run_runtime(
    binary: str,
    root: Path,
    *args: str,
    timeout: float = RUNTIME_TIMEOUT,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """Run ``binary --root ROOT ARGS...`` and return the finished process, output captured.

    Never raises on a non-zero exit: exit codes are what the tests compare. Output goes
    through files, not pipes: after ``create`` or ``run --detach`` the container holds
    the runtime's stdio, and a pipe would only reach EOF when the container exits.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [binary, "--root", str(root), *args],
            stdin=stdin,
            stdout=out,
            stderr=err,
            timeout=timeout,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            done.args, done.returncode, out.read().decode(), err.read().decode()
        )


def leftover_containers(root: Path) -> list[str]:
    """IDs of the containers whose state is still under ``root``.

    runc and crun both keep one directory per container ID under ``--root``; reading
    the directory still works when a runtime's ``list`` is broken. Names starting with
    a dot are the runtime's own (dockyard-runtime's compiled seccomp cache), never an ID.
    """
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(root)
                  if entry.is_dir() and not entry.name.startswith("."))


def mounts_under(path: Path) -> list[str]:
    """Mount points of this mount namespace at or below ``path``, innermost first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with space, tab, newline and \ octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found[::-1]
