"""Containers with volumes, through the real CLI: named volumes that outlive their
containers, anonymous ones (``-v /path``, an image's ``VOLUME``) filled from the image
and removed with ``rm -v`` or ``--rm``, read-only volumes, ``--mount type=volume``,
``inspect``'s ``Mounts``, ``ps --filter volume=`` and ``volume rm`` of a volume in use.

The roots, the busybox image and the leftovers check (no mount left under the test's
directory) are those of ``test_cli_containers`` (its ``user`` fixture).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest

from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

BUSYBOX = "/usr/bin/busybox"
ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")


def _volumes(user: User) -> list[str]:
    return user("volume", "ls", "-q").stdout.split()


def _mounts(user: User, container: str) -> list[dict[str, object]]:
    return json.loads(user("inspect", container).stdout)[0]["Mounts"]


def _image_with_volume(user: User) -> str:
    """Import a busybox image whose ``VOLUME /var/lib/x`` holds a file owned by 1000."""
    tar_path = user.home / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
        for applet in ("sh", "cat", "stat", "ls"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for directory, mode in (("var", 0o755), ("var/lib", 0o755), ("var/lib/x", 0o750)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            if directory == "var/lib/x":
                info.uid = info.gid = 1000
            tar.addfile(info)
        seed = b"from the image\n"
        info = tarfile.TarInfo("var/lib/x/seed")
        info.size, info.mode, info.uid, info.gid = len(seed), 0o640, 1000, 1000
        tar.addfile(info, io.BytesIO(seed))
    user("import", "-c", "VOLUME /var/lib/x", "-c", 'CMD ["sh"]', str(tar_path), "withvol")
    return "withvol"


def test_named_volume_outlives_its_containers(user: User) -> None:
    user("run", "--name", "writer", "-v", "data:/data", "busybox", "sh", "-c",
         "echo kept > /data/f")
    user("rm", "-v", "writer")  # -v removes anonymous volumes only: data stays
    assert _volumes(user) == ["data"]
    assert user("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f").stdout == \
        "kept\n"
    mountpoint = user.home / "root" / "volumes" / "data" / "_data"
    assert (mountpoint / "f").read_text() == "kept\n"

    cid = user("create", "--name", "user", "-v", "data:/data", "busybox").stdout.strip()
    refused = user("volume", "rm", "data", ok=False)
    assert refused.returncode == 1
    assert refused.stderr == f"Error: remove data: volume is in use - [{cid}]\n"
    assert "data" not in user("volume", "prune", "-a", "-f").stdout
    user("rm", "user")
    assert user("volume", "rm", "data").stdout == "data\n"
    assert _volumes(user) == []


def test_image_volume_is_filled_from_the_image_and_removed_by_rm_v(user: User) -> None:
    image = _image_with_volume(user)
    result = user("run", "--name", "box", "-v", "keep:/keep", image, "sh", "-c",
                  "cat /var/lib/x/seed; stat -c '%u %a' /var/lib/x /var/lib/x/seed")
    assert result.stdout == "from the image\n1000 750\n1000 640\n"
    mounts = {m["Destination"]: m for m in _mounts(user, "box")}
    anonymous = str(mounts["/var/lib/x"]["Name"])
    assert ANONYMOUS.match(anonymous)
    source = Path(str(mounts["/var/lib/x"]["Source"]))
    assert source == user.home / "root" / "volumes" / anonymous / "_data"
    assert (source / "seed").read_text() == "from the image\n"
    assert sorted(_volumes(user)) == sorted([anonymous, "keep"])

    user("rm", "-v", "box")
    assert _volumes(user) == ["keep"]


def test_run_rm_removes_anonymous_volumes(user: User) -> None:
    user("run", "--rm", "-v", "/scratch", "-v", "named:/named", "--mount",
         "type=volume,target=/other", "busybox", "sh", "-c", "echo x > /scratch/f")
    assert _volumes(user) == ["named"]
    # Detached, the first command that sees it exited removes it, and its volumes.
    user("run", "-d", "--rm", "-v", "/scratch", "busybox", "true")
    deadline = time.monotonic() + 10
    while user.all_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert user.all_ids() == []
    assert _volumes(user) == ["named"]


def test_read_only_volume_and_mount_flag(user: User) -> None:
    user("run", "--rm", "--mount", "type=volume,source=conf,target=/conf", "busybox",
         "sh", "-c", "echo v1 > /conf/setting")
    refused = user("run", "--rm", "-v", "conf:/conf:ro", "busybox", "sh", "-c",
                   "cat /conf/setting; echo v2 > /conf/setting", ok=False)
    assert refused.returncode != 0
    assert refused.stdout == "v1\n"
    assert "Read-only file system" in refused.stderr
    refused = user("run", "--rm", "--mount", "type=volume,source=conf,target=/conf,readonly",
                   "busybox", "touch", "/conf/new", ok=False)
    assert "Read-only file system" in refused.stderr
    assert user("run", "--rm", "-v", "conf:/conf", "busybox", "cat",
                "/conf/setting").stdout == "v1\n"
    subpath = user("run", "--rm", "--mount", "type=volume,source=conf,target=/conf,"
                   "volume-subpath=sub", "busybox", "true", ok=False)
    assert subpath.returncode == 125
    assert "volume-subpath are not supported yet" in subpath.stderr


def test_inspect_mounts_and_ps_filter(user: User) -> None:
    user("create", "--name", "box", "-v", "data:/data:ro", "--mount",
         "type=volume,target=/anon", "busybox")
    user("create", "--name", "other", "busybox")
    mounts = sorted(_mounts(user, "box"), key=lambda m: str(m["Destination"]))
    anonymous = str(mounts[0]["Name"])
    assert ANONYMOUS.match(anonymous)
    volumes = user.home / "root" / "volumes"
    assert mounts == [
        {"Type": "volume", "Name": anonymous, "Source": str(volumes / anonymous / "_data"),
         "Destination": "/anon", "Driver": "local", "Mode": "", "RW": True,
         "Propagation": ""},
        {"Type": "volume", "Name": "data", "Source": str(volumes / "data" / "_data"),
         "Destination": "/data", "Driver": "local", "Mode": "ro", "RW": False,
         "Propagation": ""},
    ]
    for wanted in ("volume=data", f"volume={anonymous}", "volume=/anon"):
        assert user("ps", "-a", "--format", "{{.Names}}", "-f", wanted).stdout == "box\n"
    assert user("ps", "-a", "-q", "-f", "volume=nothing").stdout == ""
    volume_users = user("volume", "ls", "-q", "-f", "dangling=false").stdout.split()
    assert sorted(volume_users) == sorted([anonymous, "data"])


def test_driver_volume_is_mounted_while_a_container_runs(user: User) -> None:
    user("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m",
         "mem")
    mountpoint = str(user.home / "root" / "volumes" / "mem" / "_data")
    user("run", "-d", "--name", "mem-user", "-v", "mem:/mem", "busybox", "sh", "-c",
         "echo x > /mem/f; sleep 60")
    with open("/proc/self/mountinfo") as f:
        assert mountpoint in [line.split()[4] for line in f]
    user("rm", "-f", "mem-user")
    with open("/proc/self/mountinfo") as f:
        assert mountpoint not in [line.split()[4] for line in f]
