"""A spec rendered from ``docker run`` flags, run by dockyard-runtime: what the user sees.

The flags of ``docker run -u nobody -e A=1 -w /tmp -m 64m --cap-drop ALL --cap-add
NET_BIND_SERVICE --read-only --tmpfs /run busybox sh -c ...`` go through
``options.to_config`` and ``ocispec.render`` into ``config.json``; the container then
reports its identity, environment, limits and filesystems from inside.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

import pytest

from dockyard.engine.ocispec import render
from dockyard.engine.options import RunFlags, to_config
from dockyard.oci import runtime as oci

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root")

SCRIPT = """
echo "id=$(id)"
echo "pwd=$(pwd)"
env | sed 's/^/env:/'
for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max; do
    [ -r "$f" ] && echo "memory=$(cat "$f")"
done
grep -E '^Cap(Eff|Bnd):' /proc/self/status
touch /rootfs-write 2>/dev/null && echo "root=writable" || echo "root=read-only"
touch /run/x && echo "run=writable"
"""


def _run(dy: Any, flags: RunFlags) -> dict[str, str]:
    config, host = to_config(flags)
    bundle = dy.bundle_dir / uuid.uuid4().hex[:8]
    shutil.copytree(dy.sandbox.rootfs_template, bundle / "rootfs", symlinks=True)
    cid = dy.new_id()
    spec = render(config, host, None, rootfs=str(bundle / "rootfs"), container_id=cid)
    (bundle / "config.json").write_bytes(oci.dump(spec, indent=2))
    result = dy.ok("run", "--bundle", str(bundle), cid)
    facts: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=") if not line.startswith("Cap") else line.partition(":")
        facts[key] = value.strip()
    return facts


def test_docker_run_flags_hold_inside_the_container(dy: Any) -> None:
    facts = _run(dy, RunFlags(
        image="busybox", command=["sh", "-c", SCRIPT], user="nobody", env=["A=1"],
        workdir="/tmp", memory="64m", cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"],
        read_only=True, tmpfs=["/run"],
    ))
    assert facts["id"] == "uid=65534(nobody) gid=65534(nogroup)"
    assert facts["pwd"] == "/tmp"
    assert facts["env:A"] == "1"
    assert facts["env:PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert facts["env:HOME"] == "/nonexistent"
    assert facts["memory"] == str(64 << 20)
    # Only NET_BIND_SERVICE (bit 10) is left in the bounding set; a non-root user's
    # effective set is emptied by execve, as under Docker.
    assert facts["CapBnd"] == "0000000000000400"
    assert facts["CapEff"] == "0000000000000000"
    assert facts["root"] == "read-only"
    assert facts["run"] == "writable"


def test_root_keeps_only_the_added_capability(dy: Any) -> None:
    facts = _run(dy, RunFlags(command=["sh", "-c", SCRIPT], cap_drop=["ALL"],
                              cap_add=["NET_BIND_SERVICE"], tmpfs=["/run"]))
    assert facts["id"].startswith("uid=0(root) gid=0(root)")
    assert facts["CapEff"] == "0000000000000400"
    assert facts["root"] == "writable"
