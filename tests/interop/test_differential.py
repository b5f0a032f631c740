"""Differential tests: dockyard-runtime, runc and crun run the same bundle; the container
must see the same world in each.

Every check runs for three pairs. ``dockyard-runtime-vs-runc`` and
``dockyard-runtime-vs-crun`` are the point; ``runc-vs-crun`` proves the harness: the
normalisation below is exactly what it takes for the two reference runtimes to agree,
and each step of it says which legitimate difference it removes. A check therefore
fails only for a difference that runc and crun do not share.

Each run is ``RUNTIME --root R run --bundle B ID`` with ``process.terminal`` false, so
the container's stdout comes back through the runtime's own stdout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from subprocess import CompletedProcess
from typing import Any

import pytest

import bundles

PAIRS = [
    pytest.param("dockyard-runtime", "runc", id="dockyard-runtime-vs-runc"),
    pytest.param("dockyard-runtime", "crun", id="dockyard-runtime-vs-crun"),
    pytest.param("runc", "crun", id="runc-vs-crun"),
]
MEMORY_LIMIT = 64 << 20


@dataclass(frozen=True)
class Observation:
    """What the caller of a runtime can see of one container run."""

    exit_code: int
    stdout: str
    stderr: str


Observe = Callable[..., Observation]


@pytest.fixture
def observe(make_bundle, container_id, run_runtime) -> Observe:
    """``observe(runtime_name, args, **overrides)``: run a fresh bundle to completion."""

    def run(name: str, args: list[str], **overrides: Any) -> Observation:
        bundle = make_bundle(args, **overrides)
        done: CompletedProcess[str] = run_runtime(
            bundles.runtime_binary(name), "run", "--bundle", str(bundle), container_id()
        )
        return Observation(done.returncode, done.stdout, done.stderr)

    return run


def observe_ok(observe: Observe, name: str, args: list[str], **overrides: Any) -> str:
    """The stdout of a run that must succeed; a failure shows the runtime's stderr."""
    seen = observe(name, args, **overrides)
    assert seen.exit_code == 0, f"{name} exited {seen.exit_code}: {seen.stderr}"
    return seen.stdout


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_caps(observe: Observe, left: str, right: str) -> None:
    script = sh("grep Cap /proc/self/status")
    assert observe_ok(observe, left, script) == observe_ok(observe, right, script)


def normalise_mountinfo(text: str) -> list[tuple[str, ...]]:
    """The container's mount table as (mount point, fs type, per-mount options), sorted.

    Dropped, because runc and crun legitimately differ there:
    - mount and parent IDs, device numbers: allocated by the kernel at mount time;
    - the root within the source and the source: host paths (the bundle's location,
      the runtime's cgroup layout) and labels ("tmpfs" vs "cgroup" for /sys/fs/cgroup);
    - superblock options: runc mounts sysfs read-only at the superblock, crun mounts it
      read-write and makes the mount read-only; the container sees a read-only mount
      either way, and it cannot remount without CAP_SYS_ADMIN;
    - the order: both follow config.json, but crun mounts the cgroup v1 hierarchies in
      reverse and its masks after the read-only paths.
    A masked file (``linux.maskedPaths``) is a bind mount of a /dev/null: runc binds the
    one in the container's /dev tmpfs, crun the host's devtmpfs one, each with its own
    flags; only the fact that the path is masked is compared.
    """
    table = []
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        fs_type = after.split()[0]
        mount_root, point, options = fields[3], fields[4], fields[5]
        if mount_root == "/null" and fs_type in ("tmpfs", "devtmpfs"):
            table.append((point, "masked"))
        else:
            table.append((point, fs_type, options))
    return sorted(table)


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_mounts(observe: Observe, left: str, right: str) -> None:
    script = sh("cat /proc/self/mountinfo")
    assert normalise_mountinfo(observe_ok(observe, left, script)) == normalise_mountinfo(
        observe_ok(observe, right, script)
    )


@pytest.mark.parametrize(
    "user",
    [
        pytest.param({"uid": 0, "gid": 0}, id="root"),
        pytest.param({"uid": 65534, "gid": 65534}, id="nobody"),
    ],
)
@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_identity(observe: Observe, left: str, right: str, user: dict[str, int]) -> None:
    script = sh("id")
    seen = [observe_ok(observe, name, script, process={"user": user}) for name in (left, right)]
    assert seen[0] == seen[1]


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_hostname(observe: Observe, left: str, right: str) -> None:
    seen = [
        observe_ok(observe, name, sh("hostname"), hostname="differential") for name in (left, right)
    ]
    assert seen == ["differential\n", "differential\n"]


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_ulimits(observe: Observe, left: str, right: str) -> None:
    script = sh("ulimit -a")
    assert observe_ok(observe, left, script) == observe_ok(observe, right, script)


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_memory_limit(observe: Observe, left: str, right: str) -> None:
    # The limit as the container reads it from its own cgroup: v1's memory controller
    # on a v1 or hybrid host, memory.max on a unified one.
    script = sh(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
        " || cat /sys/fs/cgroup/memory.max"
    )
    limit = {"resources": {"memory": {"limit": MEMORY_LIMIT}}}
    seen = [observe_ok(observe, name, script, linux=limit) for name in (left, right)]
    assert seen == [f"{MEMORY_LIMIT}\n"] * 2


def normalise_dev(text: str) -> list[str]:
    """The /dev listing, without crun's extra ``/dev/core -> /proc/kcore`` symlink.

    crun adds it (libcrun's default symlinks, as Docker used to); neither runc nor the
    runtime-spec's list of default devices has it, and /proc/kcore is masked anyway.
    """
    return [line for line in text.splitlines() if not line.startswith("'/dev/core' ->")]


@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_dev(observe: Observe, left: str, right: str) -> None:
    # Name (with a symlink's target), type, mode, owner and device numbers: dates and
    # sizes differ by nature.
    script = sh("stat -c '%N %F %a %u:%g %t:%T' /dev/* /dev/pts/* /dev/shm /dev/mqueue")
    assert normalise_dev(observe_ok(observe, left, script)) == normalise_dev(
        observe_ok(observe, right, script)
    )


NO_PID_NAMESPACE = [n for n in bundles.base_spec()["linux"]["namespaces"] if n["type"] != "pid"]


@pytest.mark.parametrize(
    ("script", "overrides", "expected"),
    [
        pytest.param("exit 3", {}, 3, id="exit-3"),
        # PID 1 of a PID namespace never receives a signal it has no handler for from
        # inside its namespace (the kernel's SIGNAL_UNKILLABLE): the shell carries on
        # and exits 0. Every runtime must leave that kernel rule alone.
        pytest.param("kill -TERM $$", {}, 0, id="sigterm-as-pid1"),
        # Without a PID namespace the shell is an ordinary process, dies of SIGTERM, and
        # `run` reports it the way a shell does: 128 + 15.
        pytest.param(
            "kill -TERM $$",
            {"linux": {"namespaces": NO_PID_NAMESPACE}},
            143,
            id="sigterm-no-pidns",
        ),
    ],
)
@pytest.mark.parametrize(("left", "right"), PAIRS)
def test_same_exit_code(
    observe: Observe, left: str, right: str, script: str, overrides: dict[str, Any], expected: int
) -> None:
    codes = [observe(name, sh(script), **overrides).exit_code for name in (left, right)]
    assert codes == [expected, expected]
