"""Image archives against real peers: skopeo reads what we write and writes what we
load, umoci unpacks our OCI layouts to the files (owners and modes) we put in."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dockyard.images.archive import load_archive, save_docker_archive, write_oci_layout
from dockyard.oci.image import Descriptor, load_manifest
from dockyard.storage.content import ContentStore
from integration.test_image_archive import BASE_LAYERS, blob_closure, config_of, make_image

SKOPEO = "/usr/bin/skopeo"
UMOCI = "/usr/bin/umoci"

pytestmark = pytest.mark.skipif(not (os.access(SKOPEO, os.X_OK) and os.access(UMOCI, os.X_OK)),
                                reason="skopeo and umoci are needed")


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{args} failed: {result.stderr}"
    return result.stdout


def image_config_digest(store: ContentStore, image: Descriptor) -> str:
    return load_manifest(blob_closure(store, image)[image.digest]).config.digest


def test_skopeo_docker_archive_loads_with_matching_diff_ids(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    write_oci_layout(store, [(image, ["app:v1"])], tmp_path / "layout")
    archive = tmp_path / "skopeo.tar"
    run(SKOPEO, "copy", f"oci:{tmp_path / 'layout'}:v1",
        f"docker-archive:{archive}:example.com/team/app:v1")

    fresh = ContentStore(str(tmp_path / "f"))
    with open(archive, "rb") as stream:
        [loaded] = load_archive(fresh, stream)
    assert loaded.tags == ["example.com/team/app:v1"]
    original = config_of(store, image_config_digest(store, image))
    assert config_of(fresh, loaded.config).rootfs.diff_ids == original.rootfs.diff_ids
    # The layers skopeo wrote uncompressed are stored as they came: their digests are
    # the DiffIDs, and the manifest built for them says so.
    manifest = load_manifest(blob_closure(fresh, loaded.manifest)[loaded.manifest.digest])
    assert [layer.digest for layer in manifest.layers] == original.rootfs.diff_ids


def test_skopeo_reads_our_docker_archive(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    archive = tmp_path / "saved.tar"
    with open(archive, "wb") as out:
        save_docker_archive(store, [(image, ["busybox:latest"])], out)
    config_digest = image_config_digest(store, image)

    raw = json.loads(run(SKOPEO, "inspect", "--raw", f"docker-archive:{archive}"))
    assert raw["config"]["digest"] == config_digest
    named = json.loads(run(SKOPEO, "inspect", "--raw",
                           f"docker-archive:{archive}:busybox:latest"))
    assert named["config"]["digest"] == config_digest

    copy = tmp_path / "copy"
    run(SKOPEO, "copy", f"docker-archive:{archive}", f"oci:{copy}:tag")
    index = json.loads((copy / "index.json").read_text())
    [entry] = index["manifests"]
    hexa = entry["digest"].partition(":")[2]
    manifest = json.loads((copy / "blobs" / "sha256" / hexa).read_bytes())
    # skopeo re-encodes a Docker config as it makes it OCI: compare what it says.
    copied = json.loads((copy / "blobs" / "sha256" /
                         manifest["config"]["digest"].partition(":")[2]).read_bytes())
    original = config_of(store, config_digest)
    assert copied["rootfs"]["diff_ids"] == original.rootfs.diff_ids
    assert copied["config"]["Cmd"] == original.config.cmd  # type: ignore[union-attr]


def test_skopeo_inspects_our_oci_layout(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    other = make_image(store, BASE_LAYERS[:1], cmd=["other"])
    layout = tmp_path / "layout"
    write_oci_layout(store, [(image, ["busybox:1", "busybox:2"]), (other, ["x/other:3"])],
                     layout)
    for tag, wanted in (("1", image), ("2", image), ("3", other)):
        inspected = json.loads(run(SKOPEO, "inspect", f"oci:{layout}:{tag}"))
        assert inspected["Digest"] == wanted.digest


def test_umoci_unpacks_our_layout_with_owners_and_modes(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    layout = tmp_path / "layout"
    write_oci_layout(store, [(image, ["app:latest"])], layout)
    bundle = tmp_path / "bundle"
    run(UMOCI, "unpack", "--image", f"{layout}:latest", str(bundle))
    rootfs = bundle / "rootfs"

    def owner_mode(path: str) -> tuple[int, int, int]:
        st = os.lstat(rootfs / path)
        return st.st_uid, st.st_gid, st.st_mode & 0o7777

    # The last layer replaced etc/hello (0600) and added data/ (owned by 33).
    assert (rootfs / "etc" / "hello").read_bytes() == b"world\n"
    assert owner_mode("etc/hello") == (0, 0, 0o600)
    assert owner_mode("bin/tool") == (1000, 1000, 0o755)
    assert owner_mode("data") == (33, 33, 0o700)
    assert owner_mode("etc") == (0, 0, 0o755)
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/bin/tool"]
