"""The volume service on the real kernel: create, list, filter, inspect, remove, prune,
and what containers need of it: volumes mounted on use (tmpfs, bind) and unmounted on
release, and Docker's copy-up of an image's content into a new volume."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import bundles
from dockyard.engine.db import SCHEMA_VERSION, Database
from dockyard.engine.volumes import VolumeService
from dockyard.errors import Conflict, InvalidArgument, NotFound, SystemFailure
from dockyard.linux.mountinfo import is_mountpoint
from dockyard.volumes import ANONYMOUS_LABEL

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts volumes: needs root"),
]

TMPFS = {"type": "tmpfs", "device": "tmpfs", "o": "size=4m,mode=0750"}


@pytest.fixture
def users() -> dict[str, list[str]]:
    """The containers using each volume, as the container service would report them."""
    return {}


@pytest.fixture
def volumes(tmp_path: Path, users: dict[str, list[str]]) -> Iterator[VolumeService]:
    service = VolumeService(str(tmp_path / "root"), in_use=lambda name: users.get(name, []))
    yield service
    leaks = bundles.mounts_under(tmp_path)
    for point in leaks:
        subprocess.run(["umount", "--lazy", point], check=False)
    assert not leaks, f"mounts left behind: {leaks}"


def test_schema_has_volumes(tmp_path: Path) -> None:
    db = Database(str(tmp_path))
    assert db.query("SELECT version FROM schema_version")[0][0] == SCHEMA_VERSION
    assert db.query("SELECT name FROM volumes") == []


def test_create_and_inspect_in_dockers_shape(volumes: VolumeService) -> None:
    made = volumes.create("data", labels={"app": "web"})
    assert made == volumes.inspect("data")
    assert made["Name"] == "data" and made["Driver"] == "local" and made["Scope"] == "local"
    assert made["Labels"] == {"app": "web"} and made["Options"] == {}
    assert made["Mountpoint"] == os.path.join(volumes.root, "volumes", "data", "_data")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", made["CreatedAt"])
    assert sorted(made) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                            "Scope"]
    assert os.path.isdir(made["Mountpoint"])
    # Docker's create is idempotent for a name that exists.
    assert volumes.create("data") == made


def test_anonymous_volume_gets_a_hex_name_and_the_label(volumes: VolumeService) -> None:
    made = volumes.create()
    assert re.fullmatch(r"[0-9a-f]{64}", made["Name"])
    assert made["Labels"] == {ANONYMOUS_LABEL: ""}


@pytest.mark.parametrize("name", ["a", "foo/bar", "-x", ".x", "a b", "é1"])
def test_bad_names_are_refused_with_dockers_message(volumes: VolumeService, name: str) -> None:
    with pytest.raises(InvalidArgument, match=f"create {re.escape(name)}: "):
        volumes.create(name)
    assert volumes.ls() == []


def test_bad_driver_and_options_are_refused(volumes: VolumeService) -> None:
    with pytest.raises(NotFound, match='plugin "nfs" not found'):
        volumes.create("v1", driver="nfs")
    with pytest.raises(InvalidArgument, match='invalid option: "color"'):
        volumes.create("v1", options={"color": "red"})
    with pytest.raises(InvalidArgument, match='missing required option: "device"'):
        volumes.create("v1", options={"type": "tmpfs"})
    assert volumes.ls() == []


def test_ls_filters(volumes: VolumeService, users: dict[str, list[str]]) -> None:
    volumes.create("web-data", labels={"app": "web", "tier": "front"})
    volumes.create("db-data", labels={"app": "db"})
    anonymous = volumes.create()["Name"]
    users["db-data"] = ["c" * 64]

    def names(**filters: list[str]) -> list[str]:
        return [v["Name"] for v in volumes.ls(filters)]

    assert names() == sorted([anonymous, "db-data", "web-data"])
    assert names(dangling=["true"]) == sorted([anonymous, "web-data"])
    assert names(dangling=["false"]) == ["db-data"]
    assert names(name=["data"]) == ["db-data", "web-data"]
    assert names(name=["^web"]) == ["web-data"]
    assert names(label=["app"]) == ["db-data", "web-data"]
    assert names(label=["app=web"]) == ["web-data"]
    assert names(label=["app", "tier=front"]) == ["web-data"]
    assert names(label=[ANONYMOUS_LABEL]) == [anonymous]
    assert names(driver=["local"]) == names()
    assert names(driver=["other"]) == []
    with pytest.raises(InvalidArgument, match="invalid filter 'color'"):
        volumes.ls({"color": ["red"]})
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling=maybe'"):
        volumes.ls({"dangling": ["maybe"]})


def test_remove(volumes: VolumeService, users: dict[str, list[str]]) -> None:
    path = Path(volumes.create("data")["Mountpoint"])
    (path / "file").write_text("x")
    users["data"] = ["a" * 64, "b" * 64]
    with pytest.raises(Conflict, match=r"^remove data: volume is in use - \[a{64}, b{64}\]$"):
        volumes.remove("data", force=True)
    assert (path / "file").exists()
    users.clear()
    volumes.remove("data")
    assert not path.parent.exists()
    assert os.listdir(path.parent.parent) == []
    with pytest.raises(NotFound, match=r"^get data: no such volume$"):
        volumes.inspect("data")
    with pytest.raises(NotFound, match=r"^get data: no such volume$"):
        volumes.remove("data")
    volumes.remove("data", force=True)


def test_prune_takes_unused_anonymous_volumes_unless_all(
        volumes: VolumeService, users: dict[str, list[str]]) -> None:
    unused = volumes.create()["Name"]
    used = volumes.create()["Name"]
    users[used] = ["c" * 64]
    volumes.create("named")
    Path(volumes.inspect(unused)["Mountpoint"], "blob").write_bytes(b"x" * 3000)
    Path(volumes.inspect(unused)["Mountpoint"], "link").hardlink_to(
        Path(volumes.inspect(unused)["Mountpoint"], "blob"))
    assert volumes.prune() == ([unused], 3000)
    assert sorted(v["Name"] for v in volumes.ls()) == sorted([used, "named"])
    assert volumes.prune(all=True, filters={"label": ["nothing"]}) == ([], 0)
    assert volumes.prune(all=True) == (["named"], 0)
    assert [v["Name"] for v in volumes.ls()] == [used]


def test_tmpfs_volume_is_mounted_on_use_and_unmounted_by_the_last_release(
        volumes: VolumeService) -> None:
    path = volumes.create("scratch", options=TMPFS)["Mountpoint"]
    assert volumes.inspect("scratch")["Options"] == TMPFS
    assert not is_mountpoint(path)
    assert volumes.mount_path("scratch", "ctr1") == path
    assert volumes.mount_path("scratch", "ctr1") == path  # the same user: one use
    assert volumes.mount_path("scratch", "ctr2") == path
    assert is_mountpoint(path)
    assert os.statvfs(path).f_blocks * os.statvfs(path).f_frsize == 4 << 20
    assert oct(os.stat(path).st_mode & 0o7777) == oct(0o750)
    Path(path, "file").write_text("in memory")
    with pytest.raises(Conflict, match=r"volume is in use - \[ctr1, ctr2\]"):
        volumes.remove("scratch")
    volumes.release("scratch", "ctr1")
    assert is_mountpoint(path)
    volumes.release("scratch", "ctr2")
    volumes.release("scratch", "ctr2")  # twice is no error
    assert not is_mountpoint(path)
    assert os.listdir(path) == []
    volumes.remove("scratch")


def test_bind_volume_shows_a_host_directory_and_removing_it_keeps_the_directory(
        volumes: VolumeService, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "kept").write_text("host data")
    options = {"type": "none", "device": str(host), "o": "bind"}
    path = volumes.create("shared", options=options)["Mountpoint"]
    assert volumes.mount_path("shared", "ctr") == path
    assert Path(path, "kept").read_text() == "host data"
    Path(path, "new").write_text("from the volume")
    assert (host / "new").read_text() == "from the volume"
    volumes.release("shared", "ctr")
    assert not is_mountpoint(path)
    volumes.remove("shared")
    assert sorted(os.listdir(host)) == ["kept", "new"]


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    """A loop device holding a fresh ext4 filesystem of 8 MiB."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_block_device_volume_is_mounted_on_use(volumes: VolumeService,
                                               loop_device: str) -> None:
    path = volumes.create("disk", options={"type": "ext4", "device": loop_device})["Mountpoint"]
    volumes.mount_path("disk", "ctr")
    try:
        assert os.listdir(path) == ["lost+found"]
        Path(path, "kept").write_text("on the device")
    finally:
        volumes.release("disk", "ctr")
    assert os.listdir(path) == []
    volumes.mount_path("disk", "ctr")
    try:
        assert Path(path, "kept").read_text() == "on the device"
    finally:
        volumes.release("disk", "ctr")
    volumes.remove("disk")


def test_a_mount_that_fails_says_so(volumes: VolumeService, tmp_path: Path) -> None:
    volumes.create("broken", options={"type": "none", "device": str(tmp_path / "missing"),
                                      "o": "bind"})
    with pytest.raises(SystemFailure, match="failed to mount local volume broken"):
        volumes.mount_path("broken", "ctr")
    assert volumes.users("broken") == []


def _rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    data = rootfs / "srv" / "data"
    (data / "sub").mkdir(parents=True)
    (data / "conf").write_text("setting=1")
    os.chown(data / "conf", 42, 43)
    os.chmod(data / "conf", 0o640)
    os.setxattr(data / "conf", "user.origin", b"image")
    os.chown(data / "sub", 1000, 1000)
    os.chmod(data / "sub", 0o2770)
    os.chown(data, 1234, 5678)
    os.chmod(data, 0o750)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "marker").write_text("the image's /etc")
    # An image's symlink that would reach the host's /etc if followed outside the rootfs.
    (rootfs / "escape").symlink_to("/etc")
    return rootfs


def test_populate_copies_the_images_content_with_owners_modes_and_xattrs(
        volumes: VolumeService, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    path = Path(volumes.create("data")["Mountpoint"])
    assert volumes.populate("data", str(rootfs), "/srv/data")
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o750)
    conf = (path / "conf").stat()
    assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o7777) == (42, 43, 0o640)
    assert (path / "conf").read_text() == "setting=1"
    assert os.getxattr(path / "conf", "user.origin") == b"image"
    assert (path / "sub").stat().st_mode & 0o7777 == 0o2770
    # A volume that holds something already is left as it is.
    (path / "conf").write_text("changed")
    assert not volumes.populate("data", str(rootfs), "/srv/data")
    assert (path / "conf").read_text() == "changed"


def test_populate_stays_inside_the_rootfs(volumes: VolumeService, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    path = Path(volumes.create("etc")["Mountpoint"])
    assert volumes.populate("etc", str(rootfs), "/escape")
    assert os.listdir(path) == ["marker"]
    assert not volumes.populate("etc", str(rootfs), "/nowhere")


def test_populate_fills_a_tmpfs_volume_its_container_has_mounted(
        volumes: VolumeService, tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    path = volumes.create("scratch", options=TMPFS)["Mountpoint"]
    volumes.mount_path("scratch", "ctr")
    try:
        assert volumes.populate("scratch", str(rootfs), "/srv/data")
        assert is_mountpoint(path)
        assert Path(path, "conf").read_text() == "setting=1"
    finally:
        volumes.release("scratch", "ctr")
    assert not is_mountpoint(path)
