"""Base images built locally: busybox from the static binary, Debian by debootstrap.

The layers are read back with tarfile, unpacked with dockyard's own ``apply_layer`` and
run for real with ``chroot``. The Debian test downloads from the machine's apt mirror:
debootstrap runs once per session (module-scope fixture), and an unreachable mirror is
a failure that says so, never a skip.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.errors import NotFound, Unavailable
from dockyard.images.bootstrap import (
    DEFAULT_PATH,
    BootstrapResult,
    apt_mirror,
    bootstrap_busybox,
    bootstrap_debian,
)
from dockyard.images.platform import host_platform
from dockyard.oci.image import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ImageConfig,
    Manifest,
    load_config,
    load_manifest,
)
from dockyard.storage.content import ContentStore
from dockyard.storage.layers import apply_layer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

BUSYBOX = "/usr/bin/busybox"


@dataclass
class Built:
    """A bootstrapped image, loaded back from the store."""

    store: ContentStore
    result: BootstrapResult
    manifest: Manifest
    config: ImageConfig
    seconds: float

    def layer_tar(self) -> tarfile.TarFile:
        """The (only) layer, opened as a tar; the caller closes it."""
        blob = self.store.open(self.manifest.layers[0].digest)
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=blob), mode="r:")

    def unpack(self, root: Path) -> Path:
        """Apply the layer with dockyard's own applier, checking its DiffID on the way."""
        root.mkdir()
        with self.store.open(self.manifest.layers[0].digest) as blob:
            diff_id, _ = apply_layer(blob, str(root), media_type=OCI_LAYER_GZIP)
        assert diff_id == self.config.rootfs.diff_ids[0]
        return root


def build(store: ContentStore, make: Callable[[ContentStore], BootstrapResult]) -> Built:
    """Run a bootstrap and load what it stored, checking every blob against its digest."""
    start = time.monotonic()
    result = make(store)
    seconds = time.monotonic() - start
    assert result.manifest.media_type == OCI_MANIFEST
    assert store.verify(result.manifest.digest) is None
    with store.open(result.manifest.digest) as file:
        manifest = load_manifest(file.read())
    assert manifest.config.media_type == OCI_CONFIG
    assert manifest.config.digest == result.config_digest
    assert [layer.media_type for layer in manifest.layers] == [OCI_LAYER_GZIP]
    for descriptor in (manifest.config, *manifest.layers):
        assert store.info(descriptor.digest).size == descriptor.size
        assert store.verify(descriptor.digest) is None
    with store.open(result.config_digest) as file:
        config = load_config(file.read())
    return Built(store, result, manifest, config, seconds)


def chroot(root: Path, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={"PATH": DEFAULT_PATH.removeprefix("PATH="), "LC_ALL": "C"})


# --- busybox ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("busybox-store")
    yield build(ContentStore(str(root)), bootstrap_busybox)
    shutil.rmtree(root)


def test_busybox_manifest_and_config(busybox_image: Built) -> None:
    config = busybox_image.config
    host = host_platform()
    assert busybox_image.result.tag == "busybox:latest"
    assert (config.os, config.architecture, config.variant) == (
        host.os, host.architecture, host.variant)
    assert config.config is not None
    assert config.config.cmd == ["sh"]
    assert config.config.env == [DEFAULT_PATH]
    assert config.created is not None
    mtime = int(os.stat(BUSYBOX).st_mtime)
    assert config.created == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    assert config.history is not None
    assert [h.empty_layer for h in config.history] == [None, True, True]
    assert "busybox" in (config.history[0].created_by or "")
    assert config.history[2].created_by == 'CMD ["sh"]'


def test_busybox_layer_content(busybox_image: Built) -> None:
    with busybox_image.layer_tar() as tf:
        members = {m.name.rstrip("/"): m for m in tf.getmembers()}
        names = [m.name for m in tf.getmembers()]
        uncompressed = hashlib.sha256()
        digest = busybox_image.manifest.layers[0].digest
        with busybox_image.store.open(digest) as blob, gzip.GzipFile(fileobj=blob) as plain:
            while chunk := plain.read(1 << 20):
                uncompressed.update(chunk)
    assert busybox_image.config.rootfs.diff_ids == [f"sha256:{uncompressed.hexdigest()}"]

    binary = members["bin/busybox"]
    assert binary.isreg() and binary.mode == 0o755
    assert binary.size == os.stat(BUSYBOX).st_size
    sh = members["bin/sh"]
    assert sh.issym() and os.path.basename(sh.linkname) == "busybox"
    assert members["usr/bin/awk"].linkname == "../../bin/busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["root"].mode == 0o700
    for empty in ("dev", "proc", "sys", "home", "var/spool/mail", "var/www"):
        assert members[empty].isdir(), empty
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "bin/busybox" in applets  # the binary lists itself: that one stays a file
    assert all(members[name].issym() for name in applets if name != "bin/busybox")
    history = (busybox_image.config.history or [])[0].created_by or ""
    assert f"{len(applets) - 1} applet links" in history
    # Deterministic headers: sorted per directory, root owned, no names, one mtime.
    assert names == sorted(names, key=lambda n: n.rstrip("/").split("/"))
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}
    assert {m.mtime for m in members.values()} == {int(os.stat(BUSYBOX).st_mtime)}
    with busybox_image.store.open(busybox_image.manifest.layers[0].digest) as blob:
        header = blob.read(10)
    assert header[4:8] == b"\0\0\0\0"  # the gzip header's mtime


def test_busybox_passwd_and_group(busybox_image: Built) -> None:
    with busybox_image.layer_tar() as tf:
        passwd = tf.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        group = tf.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    users = [line.split(":")[0] for line in passwd.splitlines()]
    assert users == ["root", "daemon", "bin", "sys", "sync", "mail", "www-data", "operator",
                     "nobody"]
    assert "root:x:0:0:root:/root:/bin/sh" in passwd.splitlines()
    assert "root:x:0:" in group.splitlines()
    assert "nogroup:x:65534:" in group.splitlines()


def test_busybox_is_reproducible(busybox_image: Built, tmp_path: Path) -> None:
    again = build(ContentStore(str(tmp_path / "other")), bootstrap_busybox)
    assert again.result.config_digest == busybox_image.result.config_digest
    assert again.result.manifest.digest == busybox_image.result.manifest.digest
    assert again.manifest.layers[0].digest == busybox_image.manifest.layers[0].digest


def test_busybox_runs_in_a_chroot(busybox_image: Built, tmp_path: Path) -> None:
    root = busybox_image.unpack(tmp_path / "rootfs")
    try:
        result = chroot(root, "echo hi; id; ls -ld /tmp")
    finally:
        shutil.rmtree(root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hi"
    assert lines[1].startswith("uid=0(root) gid=0(root)")
    assert lines[2].startswith("drwxrwxrwt")


def test_busybox_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="busybox-static"):
        bootstrap_busybox(ContentStore(str(tmp_path)), busybox=str(tmp_path / "nope"))


# --- Debian ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("debian-store")
    try:
        built = build(ContentStore(str(root)), bootstrap_debian)
    except Unavailable as exc:
        shutil.rmtree(root)
        pytest.fail(f"the Debian mirror {apt_mirror('bookworm')} cannot be reached: {exc}")
    yield built
    shutil.rmtree(root)


@pytest.mark.timeout(300)
def test_debian_bootstrap(debian_image: Built, tmp_path: Path) -> None:
    config = debian_image.config
    assert debian_image.result.tag == "debian:bookworm"
    assert config.config is not None
    assert config.config.cmd == ["bash"]
    assert config.config.env == [DEFAULT_PATH]
    assert config.architecture == host_platform().architecture

    with debian_image.layer_tar() as tf:
        members = {m.name.rstrip("/"): m for m in tf.getmembers()}
        version = tf.extractfile("etc/debian_version").read().decode()  # type: ignore[union-attr]
    # bookworm is merged-/usr: /bin/bash is usr/bin/bash through the bin -> usr/bin link.
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["usr/bin/bash"].isreg() and members["usr/bin/apt"].isreg()
    assert version.startswith("12.")
    # Owners, setuid bits, hard links and device nodes survive.
    assert members["usr/bin/passwd"].mode & stat.S_ISUID
    assert (members["etc/shadow"].gid, members["etc/shadow"].mode) == (42, 0o640)  # shadow
    assert any(m.islnk() for m in members.values())
    assert members["dev/null"].ischr()
    assert (members["dev/null"].devmajor, members["dev/null"].devminor) == (1, 3)
    # Cleaned like the official images.
    assert not any(n.startswith("var/lib/apt/lists/") and n != "var/lib/apt/lists/partial"
                   for n in members)
    assert not any(n.endswith(".deb") for n in members)
    assert not any(n.startswith("var/cache/debconf/") and n.endswith("-old") for n in members)
    assert not any(n.startswith("var/log/") and members[n].isreg() for n in members)
    assert members["etc/resolv.conf"].size == 0

    root = debian_image.unpack(tmp_path / "rootfs")
    try:
        assert (root / "bin/bash").is_file()
        result = chroot(root, "dpkg -l | wc -l")
    finally:
        shutil.rmtree(root)  # some 130 MB: not left to pytest's tmp_path retention
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 50
    size = debian_image.manifest.layers[0].size
    print(f"debian bootstrap: {debian_image.seconds:.1f} s, {config.created}, "
          f"layer {size / 1e6:.1f} MB compressed")


def test_debian_unreachable_mirror_is_one_line(tmp_path: Path) -> None:
    # Port 9 (discard) on the loopback refuses at once: debootstrap fails on the Release.
    with pytest.raises(Unavailable) as info:
        bootstrap_debian(ContentStore(str(tmp_path)), mirror="http://127.0.0.1:9/debian")
    message = str(info.value)
    assert "\n" not in message
    assert "Failed getting release file" in message and "Connection refused" in message


def test_debian_without_debootstrap(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="apt-get install debootstrap"):
        bootstrap_debian(ContentStore(str(tmp_path)), debootstrap="no-such-debootstrap")
