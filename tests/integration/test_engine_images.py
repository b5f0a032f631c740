"""The image service without a registry: images made here and added with ``add_image``,
then tagged, listed, inspected, removed and pruned as a user would.

The image builder (``layer``, ``build_image``) is shared with the pull / push tests.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dockyard.engine.db import SCHEMA_VERSION
from dockyard.engine.images import ImageService
from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.oci.image import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    Digest,
    History,
    ImageConfig,
    Manifest,
    RootFS,
    dump,
)
from dockyard.storage.snapshots import mount_all, unmount

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def layer(files: dict[str, bytes], *, compress: bool = True) -> bytes:
    """A layer tar (gzip by default) of regular files; a ``.wh.`` name is a whiteout."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    # mtime=0: the same files give the same blob, so images can share layers.
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0) if compress else raw.getvalue()


@dataclass
class BuiltImage:
    """An image's documents and blobs, as a registry or the content store keeps them."""

    manifest: bytes
    config: bytes
    layers: list[tuple[Descriptor, bytes]]

    @property
    def id(self) -> str:
        return Digest.of(self.config)

    @property
    def digest(self) -> str:
        return Digest.of(self.manifest)

    def blobs(self) -> list[tuple[str, bytes]]:
        return [(d.digest, b) for d, b in self.layers] + [(self.id, self.config)]


def build_image(layers: list[bytes], *, arch: str = "amd64", labels: dict[str, str] | None = None,
                created: str = "2024-01-01T00:00:00Z", cmd: str = "sh") -> BuiltImage:
    """An OCI image of ``layers`` (gzip blobs), with one history step per layer."""
    descriptors = [(Descriptor(media_type=OCI_LAYER_GZIP, digest=Digest.of(b), size=len(b)), b)
                   for b in layers]
    diff_ids = [Digest.of(gzip.decompress(b)) for b in layers]
    config = dump(ImageConfig(
        architecture=arch, os="linux", created=created,
        config=ContainerConfig(cmd=[cmd], labels=labels, env=["PATH=/bin"]),
        rootfs=RootFS(diff_ids=diff_ids),
        history=[History(created=created, created_by=f"step {i}") for i in range(len(layers))]
        + [History(created=created, created_by="CMD", empty_layer=True)]))
    manifest = dump(Manifest(
        schema_version=2, media_type=OCI_MANIFEST,
        config=Descriptor(media_type=OCI_CONFIG, digest=Digest.of(config), size=len(config)),
        layers=[d for d, _ in descriptors]))
    return BuiltImage(manifest, config, descriptors)


def add(service: ImageService, image: BuiltImage, *tags: str) -> str:
    """Put the image's layer blobs in the store and record it; return its ID."""
    for desc, data in image.layers:
        with service.content.writer(desc.digest, desc.size) as writer:
            writer.write(data)
            writer.commit()
    return service.add_image(image.manifest, image.config, tags).id


@contextlib.contextmanager
def mounted_image(service: ImageService, image_id: str) -> Iterator[Path]:
    """A read-only view of the image's top layer, mounted while the block runs."""
    row = service.db.query("SELECT chain_id FROM images WHERE id = ?", (image_id,))[0]
    key = f"view-{os.getpid()}-{image_id[7:19]}"
    target = Path(tempfile.mkdtemp(prefix="view-"))
    mount_all(service.snapshots.view(key, row["chain_id"]), str(target))
    try:
        yield target
    finally:
        unmount(str(target))
        target.rmdir()
        service.snapshots.remove(key)


@pytest.fixture(params=["overlay", "vfs"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> ImageService:
    return ImageService(str(tmp_path / "root"), storage_driver=request.param)


BASE = layer({"etc/os-release": b"ID=test\n", "bin/tool": b"v1"})


def test_added_image_unpacks_and_shares_base_layers(service: ImageService) -> None:
    one = build_image([BASE, layer({"app/one": b"1"})])
    two = build_image([BASE, layer({"app/two": b"2", "bin/.wh.tool": b""})], cmd="two")
    id_one = add(service, one, "app:one")
    id_two = add(service, two, "app:two")
    with mounted_image(service, id_one) as root:
        assert (root / "app/one").read_bytes() == b"1"
        assert (root / "bin/tool").read_bytes() == b"v1"
    with mounted_image(service, id_two) as root:
        assert (root / "app/two").read_bytes() == b"2"
        assert not (root / "bin/tool").exists()  # the whiteout hid it
        assert (root / "etc/os-release").exists()
    committed = [s for s in service.snapshots.walk() if s.kind.value == "committed"]
    assert len(committed) == 3  # the base once, one layer each
    assert service.check() == []


def test_tag_list_inspect_history(service: ImageService) -> None:
    old = build_image([BASE], labels={"tier": "base"}, created="2023-01-01T00:00:00Z")
    new = build_image([BASE, layer({"x": b"x" * 1000})], labels={"tier": "app", "v": "2"},
                      created="2024-06-01T12:00:00.123456789Z")
    id_old = add(service, old, "base:1")
    id_new = add(service, new, "registry.example:5000/team/app:2")
    service.tag("base:1", "base:latest")
    service.tag(id_new[7:19], "app")  # a short ID works as a source
    assert service.resolve("app") == id_new
    assert service.resolve(id_new) == service.resolve(id_new[:15]) == id_new
    with pytest.raises(NotFound, match="No such image: nope"):
        service.resolve("nope")
    with pytest.raises(InvalidArgument, match="digest"):
        service.tag("app", "app@sha256:" + "0" * 64)

    listed = service.list()
    assert [s.id for s in listed] == [id_new, id_old]  # newest first
    assert listed[0].repo_tags == ("app:latest", "registry.example:5000/team/app:2")
    assert listed[1].repo_tags == ("base:1", "base:latest")
    assert [s.id for s in service.list(filters={"reference": ["base"]})] == [id_old]
    assert [s.id for s in service.list(filters={"reference": ["*/team/*:2"]})] == [id_new]
    assert [s.id for s in service.list(filters={"label": ["tier=app"]})] == [id_new]
    assert [s.id for s in service.list(filters={"label": ["tier"]})] == [id_new, id_old]
    assert [s.id for s in service.list(filters={"since": ["base:1"]})] == [id_new]
    assert [s.id for s in service.list(filters={"before": ["app"]})] == [id_old]
    assert service.list(filters={"dangling": ["true"]}) == []
    with pytest.raises(InvalidArgument, match="invalid filter 'color'"):
        service.list(filters={"color": ["red"]})

    info = service.inspect("app")
    assert info["Id"] == id_new
    assert info["RepoTags"] == ["app:latest", "registry.example:5000/team/app:2"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Config"]["Cmd"] == ["sh"] and info["Config"]["Labels"]["v"] == "2"
    assert info["Config"]["Tty"] is False
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) == 2
    assert info["Size"] == service.list(filters={"reference": ["app"]})[0].size > 1000
    assert info["Metadata"]["LastTagTime"].endswith("Z")

    history = service.history("app")
    assert [h["CreatedBy"] for h in history] == ["CMD", "step 1", "step 0"]
    assert history[0]["Id"] == id_new and history[1]["Id"] == "<missing>"
    assert history[0]["Size"] == 0 and history[1]["Size"] > 1000
    assert history[0]["Tags"] == ["app:latest", "registry.example:5000/team/app:2"]
    assert history[0]["Created"] == 1717243200


def test_remove_untags_then_deletes_and_collects(service: ImageService) -> None:
    image = build_image([BASE, layer({"only": b"here"})])
    image_id = add(service, image, "one:latest", "two:latest")
    blobs_before = {b.digest for b in service.content.walk()}
    assert len(blobs_before) == 4  # two layers, config, manifest
    with pytest.raises(Conflict, match="must be forced"):
        service.remove(image_id)
    assert service.remove("one") == ["Untagged: one:latest"]
    busy = ImageService(service.root, storage_driver=service.snapshots.driver,
                        in_use=lambda i: i == image_id)
    with pytest.raises(Conflict, match="being used by a container"):
        busy.remove("two")
    assert service.remove("two") == ["Untagged: two:latest", f"Deleted: {image_id}"]
    assert list(service.content.walk()) == []
    assert list(service.snapshots.walk()) == []
    assert service.db.query("SELECT count(*) FROM layers")[0][0] == 0
    with pytest.raises(NotFound):
        service.inspect(image_id)


def test_prune_deletes_dangling_then_all(service: ImageService) -> None:
    first = build_image([BASE], created="2023-01-01T00:00:00Z")
    second = build_image([BASE, layer({"v": b"2"})])
    id_first = add(service, first, "app:latest")
    id_second = add(service, second, "app:latest")  # the tag moves: the first dangles
    assert [s.id for s in service.list(filters={"dangling": ["true"]})] == [id_first]
    assert service.list(filters={"dangling": ["true"]})[0].repo_tags == ()
    lines, reclaimed = service.prune()
    assert lines == [f"Deleted: {id_first}"]
    assert reclaimed > 0  # its config and manifest blobs
    assert service.check() == []
    lines, reclaimed = service.prune(all=True)
    assert lines == ["Untagged: app:latest", f"Deleted: {id_second}"]
    assert reclaimed > 0
    assert list(service.snapshots.walk()) == [] and list(service.content.walk()) == []


def test_a_layer_that_does_not_match_its_diff_id_is_refused(service: ImageService) -> None:
    good = build_image([layer({"a": b"a"})])
    liar = build_image([layer({"a": b"b"})])
    # The manifest of one image with the config of the other: DiffIDs do not match.
    forged = good.manifest.replace(good.id.encode(), liar.id.encode()).replace(
        str(len(good.config)).encode(), str(len(liar.config)).encode())
    for desc, data in good.layers:
        with service.content.writer(desc.digest, desc.size) as writer:
            writer.write(data)
            writer.commit()
    with pytest.raises(InvalidArgument, match=r"unpacks to .* but the image config says"):
        service.add_image(forged, liar.config, ["forged:latest"])
    assert service.list() == []
    assert [s for s in service.snapshots.walk() if s.kind.value == "committed"] == []


def test_a_failed_unpack_leaves_no_staged_layer(service: ImageService) -> None:
    layers = [layer({f"d{i}/f": bytes([i]) * 100_000}) for i in range(4)]
    good = build_image(layers)
    liar = build_image([*layers[:2], layer({"d2/f": b"lie"}), layers[3]])
    forged = good.manifest.replace(good.id.encode(), liar.id.encode()).replace(
        str(len(good.config)).encode(), str(len(liar.config)).encode())
    for desc, data in good.layers:
        with service.content.writer(desc.digest, desc.size) as writer:
            writer.write(data)
            writer.commit()
    with pytest.raises(InvalidArgument, match=r"unpacks to .* but the image config says"):
        service.add_image(forged, liar.config, ["forged:latest"])
    assert service.list() == []
    snapshots = Path(service.snapshots.root) / "snapshots"
    assert [n for n in os.listdir(snapshots) if n.startswith("staging-")] == []
    service.collect()
    assert list(service.snapshots.walk()) == [] and os.listdir(snapshots) == []


def raw_layer(entries: list[tuple[str, bytes | str | None, int]]) -> bytes:
    """A gzip layer of (name, content, mode): bytes a file, '>target' a hard link, None a
    directory; parent directories are listed only when given."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, value, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if value is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(value, str):
                info.type, info.linkname = tarfile.LNKTYPE, value.lstrip(">")
            else:
                info.size = len(value)
            tf.addfile(info, io.BytesIO(value) if isinstance(value, bytes) else None)
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def test_layers_that_need_the_layers_below_are_unpacked_over_them(
        service: ImageService, monkeypatch: pytest.MonkeyPatch) -> None:
    image = build_image([
        raw_layer([("bin", None, 0o755), ("bin/busybox", b"bb", 0o755),
                   ("tmp", None, 0o1777)]),
        # A hard link to a file of the layer below: copied up from there.
        raw_layer([("bin", None, 0o755), ("bin/ls", ">bin/busybox", 0o755)]),
        # tmp is not listed: its copy-up keeps the mode below, not a new dir's 0755.
        raw_layer([("tmp/cache/x", b"x", 0o644)]),
        # usr is not listed either, and nothing below has it: unpacked apart all right.
        raw_layer([("usr/local/y", b"y", 0o644)]),
    ])
    over_parents: list[str] = []
    unpack_over_parent = ImageService._unpack_over_parent

    def counted(self: ImageService, desc: Descriptor, *args: Any) -> int:
        over_parents.append(desc.digest)
        return unpack_over_parent(self, desc, *args)

    monkeypatch.setattr(ImageService, "_unpack_over_parent", counted)
    image_id = add(service, image, "needs:below")
    with mounted_image(service, image_id) as root:
        assert (root / "bin/ls").stat().st_ino == (root / "bin/busybox").stat().st_ino
        assert (root / "bin/ls").read_bytes() == b"bb"
        assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
        assert (root / "tmp/cache/x").read_bytes() == b"x"
        assert (root / "usr/local/y").read_bytes() == b"y"
    # overlay unpacks the others apart, vfs every layer over the one below.
    digests = [desc.digest for desc, _ in image.layers]
    expected = digests[1:3] if service.snapshots.stores_diffs else digests
    assert over_parents == expected
    assert service.check() == []
    snapshots = Path(service.snapshots.root) / "snapshots"
    assert [n for n in os.listdir(snapshots) if n.startswith("staging-")] == []


def test_state_survives_a_new_service_and_the_schema_is_versioned(tmp_path: Path) -> None:
    root = tmp_path / "root"
    image_id = add(ImageService(str(root)), build_image([BASE]), "keep:me")
    again = ImageService(str(root))
    assert again.resolve("keep:me") == image_id
    out = subprocess.run(["sqlite3", str(root / "dockyard.db"), "PRAGMA journal_mode;"],
                         capture_output=True, text=True, check=False)
    if out.returncode == 0:  # the sqlite3 shell is optional on this machine
        assert out.stdout.strip() == "wal"
    assert again.db.query("SELECT version FROM schema_version")[0][0] == SCHEMA_VERSION
