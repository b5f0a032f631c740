"""dockyard's images and the peers' agree: skopeo pushes what dockyard pulls with the same
manifest digest, and umoci unpacks dockyard's OCI layout into the same files dockyard's
own snapshot holds."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.engine.images import ImageService
from dockyard.images.archive import write_oci_layout
from dockyard.oci.image import Descriptor
from integration.test_engine_images import mounted_image
from interop.registry_fixtures import Registry, run_registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def _layout_of(service: ImageService, ref: str, directory: Path) -> None:
    image_id = service.resolve(ref)
    row = service.db.query("SELECT manifest_digest, manifest_media_type FROM images "
                           "WHERE id = ?", (image_id,))[0]
    descriptor = Descriptor(media_type=row["manifest_media_type"],
                            digest=row["manifest_digest"],
                            size=service.content.info(row["manifest_digest"]).size)
    write_oci_layout(service.content, [(descriptor, ["docker.io/library/busybox:latest"])],
                     str(directory))


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: type, mode, owner, and content digest or link target."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            entries[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode),
                                                     stat.S_IMODE(st.st_mode), st.st_uid,
                                                     st.st_gid, what)
    return entries


def test_skopeo_pushes_what_dockyard_pulls_with_the_same_digest(
        registry: Registry, tmp_path: Path) -> None:
    source = ImageService(str(tmp_path / "source"))
    source.bootstrap("busybox")
    layout = tmp_path / "layout"
    _layout_of(source, "busybox", layout)
    remote = f"{registry.host}/peers/busybox:skopeo"
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                    f"oci:{layout}:latest", f"docker://{remote}"], check=True)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{remote}"], check=True, capture_output=True).stdout
    skopeos = "sha256:" + hashlib.sha256(raw).hexdigest()

    puller = ImageService(str(tmp_path / "puller"))
    info = puller.pull(remote)
    assert info.manifest_digest == skopeos
    assert info.id == source.resolve("busybox")


def test_umoci_unpacks_dockyards_layout_into_dockyards_own_files(tmp_path: Path) -> None:
    service = ImageService(str(tmp_path / "root"))
    info = service.bootstrap("busybox")
    layout = tmp_path / "layout"
    _layout_of(service, "busybox", layout)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
                   check=True, capture_output=True)
    with mounted_image(service, info.id) as view:
        ours = _tree(view)
    theirs = _tree(bundle / "rootfs")
    assert ours == theirs
    assert ours["bin/busybox"][1] == 0o755
