"""Image archives over a real content store: save / load round trips, archives as old
Docker wrote them, hostile archives, and ``docker import``.

The images are made here, with tarfile, into a ``ContentStore`` in the test's own
temporary directory; ``make_image`` and ``layer_tar`` are also what the interop tests
(skopeo, umoci) build their images with.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from dockyard.errors import InvalidArgument
from dockyard.images.archive import (
    LoadedImage,
    load_archive,
    save_docker_archive,
    write_oci_layout,
)
from dockyard.images.rootfs_tar import import_rootfs
from dockyard.oci.image import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    RootFS,
    dump,
    load_config,
    load_manifest,
)
from dockyard.storage.content import ContentStore

# (name, content or None for a directory, mode, uid, gid)
Entry = tuple[str, bytes | None, int, int, int]

BASE_LAYERS: list[list[Entry]] = [
    [("etc", None, 0o755, 0, 0), ("etc/hello", b"hello\n", 0o644, 0, 0)],
    [("bin", None, 0o755, 0, 0), ("bin/tool", b"#!/bin/sh\necho tool\n", 0o755, 1000, 1000)],
    [("etc/hello", b"world\n", 0o600, 0, 0), ("data", None, 0o700, 33, 33)],
]


def layer_tar(entries: list[Entry]) -> bytes:
    """An uncompressed layer tar of ``entries``, with fixed times."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_700_000_000
            if content is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return out.getvalue()


def put(store: ContentStore, data: bytes) -> Digest:
    digest = Digest.of(data)
    store.ingest(io.BytesIO(data), digest, len(data))
    return digest


def make_image(store: ContentStore, layers: list[list[Entry]] = BASE_LAYERS, *,
               docker: bool = False, compress: bool = True,
               cmd: list[str] | None = None) -> Descriptor:
    """An image of ``layers`` in ``store``: OCI (gzip layers by default) or Docker v2."""
    tars = [layer_tar(entries) for entries in layers]
    blobs = [gzip.compress(tar, mtime=0) if compress else tar for tar in tars]
    if docker:
        layer_type = DOCKER_LAYER + (".gzip" if compress else "")
        config_type, manifest_type = DOCKER_CONFIG, DOCKER_MANIFEST
    else:
        layer_type = OCI_LAYER_GZIP if compress else OCI_LAYER
        config_type, manifest_type = OCI_CONFIG, OCI_MANIFEST
    config = ImageConfig(
        architecture="amd64", os="linux", created="2024-01-02T03:04:05Z",
        config=ContainerConfig(cmd=cmd or ["/bin/tool"], env=["PATH=/bin"]),
        rootfs=RootFS(diff_ids=[str(Digest.of(tar)) for tar in tars]),
    )
    config_bytes = dump(config)
    manifest = Manifest(
        schema_version=2, media_type=manifest_type,
        config=Descriptor(media_type=config_type, digest=put(store, config_bytes),
                          size=len(config_bytes)),
        layers=[Descriptor(media_type=layer_type, digest=put(store, blob), size=len(blob))
                for blob in blobs],
    )
    data = dump(manifest)
    return Descriptor(media_type=manifest_type, digest=put(store, data), size=len(data))


def blob_closure(store: ContentStore, descriptor: Descriptor) -> dict[str, bytes]:
    """Every blob of an image (manifest or index), by digest."""
    with store.open(descriptor.digest) as f:
        data = f.read()
    blobs = {descriptor.digest: data}
    document = json.loads(data)
    children = document.get("manifests", [])
    if "config" in document:
        children = [document["config"], *document["layers"]]
    for child in children:
        if child["mediaType"] in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST):
            blobs.update(blob_closure(store, Descriptor(media_type=child["mediaType"],
                                                        digest=child["digest"],
                                                        size=child["size"])))
        else:
            with store.open(child["digest"]) as f:
                blobs[child["digest"]] = f.read()
    return blobs


def config_of(store: ContentStore, digest: str) -> ImageConfig:
    with store.open(digest) as f:
        return load_config(f.read())


def load_bytes(store: ContentStore, data: bytes) -> list[LoadedImage]:
    return load_archive(store, io.BytesIO(data))


def saved(store: ContentStore, images: list[tuple[Descriptor, list[str]]]) -> bytes:
    out = io.BytesIO()
    save_docker_archive(store, images, out)
    return out.getvalue()


# -- round trips ----------------------------------------------------------------------


def test_save_load_round_trip_keeps_digests_and_blobs(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "a"))
    oci = make_image(store)
    docker = make_image(store, BASE_LAYERS[:2], docker=True, compress=False, cmd=["sh"])
    images = [(oci, ["busybox:latest", "example.com:5000/team/app:v1"]), (docker, ["tool"])]
    data = saved(store, images)
    assert data == saved(store, images), "the same images must give the same archive"

    fresh = ContentStore(str(tmp_path / "b"))
    loaded = load_bytes(fresh, data)
    assert [(image.manifest.digest, image.manifest.media_type, image.tags)
            for image in loaded] == [
        (oci.digest, OCI_MANIFEST, ["docker.io/library/busybox:latest",
                                    "example.com:5000/team/app:v1"]),
        (docker.digest, DOCKER_MANIFEST, ["docker.io/library/tool:latest"]),
    ]
    for descriptor in (oci, docker):
        assert blob_closure(fresh, descriptor) == blob_closure(store, descriptor)
    assert loaded[0].config == load_manifest(blob_closure(store, oci)[oci.digest]).config.digest


def test_saved_archive_layout_is_docker25s(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    with tarfile.open(fileobj=io.BytesIO(saved(store, [(image, ["busybox"])]))) as tf:
        names = tf.getnames()
        assert names == sorted(names)
        assert {m.mtime for m in tf.getmembers()} == {0}
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        repositories = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
        assert json.load(tf.extractfile("oci-layout")) == {  # type: ignore[arg-type]
            "imageLayoutVersion": "1.0.0"}
    parsed = load_manifest(blob_closure(store, image)[image.digest])
    assert manifest == [{
        "Config": f"blobs/sha256/{Digest(parsed.config.digest).encoded}",
        "RepoTags": ["busybox:latest"],
        "Layers": [f"blobs/sha256/{Digest(layer.digest).encoded}" for layer in parsed.layers],
    }]
    assert index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "docker.io/library/busybox:latest",
        "org.opencontainers.image.ref.name": "latest"}
    assert set(repositories) == {"busybox"}
    for path in manifest[0]["Layers"]:
        assert path in names


def tar_directory(directory: Path, *, compress: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as tf:
        for name in sorted(os.listdir(directory)):
            tf.add(directory / name, arcname=name)
    return out.getvalue()


def test_oci_layout_tarball_with_nested_index_loads(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    inner = dump(Index(schema_version=2, media_type=OCI_INDEX, manifests=[
        Descriptor(media_type=OCI_MANIFEST, digest=image.digest, size=image.size,
                   platform=Platform(architecture="amd64", os="linux"))]))
    inner_desc = Descriptor(media_type=OCI_INDEX, digest=put(store, inner), size=len(inner))
    outer = dump(Index(schema_version=2, media_type=OCI_INDEX, manifests=[inner_desc]))
    outer_desc = Descriptor(media_type=OCI_INDEX, digest=put(store, outer), size=len(outer))
    layout = tmp_path / "layout"
    write_oci_layout(store, [(outer_desc, ["registry.local/app:2"]), (image, [])], layout)

    fresh = ContentStore(str(tmp_path / "f"))
    loaded = load_bytes(fresh, tar_directory(layout, compress=True))
    assert [image.manifest.digest for image in loaded] == [outer_desc.digest, image.digest]
    assert loaded[0].tags == ["registry.local/app:2"] and loaded[1].tags == []
    assert loaded[0].config == loaded[1].config
    assert blob_closure(fresh, outer_desc) == blob_closure(store, outer_desc)


def old_docker_archive(tars: list[bytes], *, config_name: str | None = None,
                       tag: str = "old:1.0") -> bytes:
    """An archive as Docker 20 saved it: ``<v1 id>/{VERSION,json,layer.tar}``,
    ``<config hex>.json``, ``manifest.json``, ``repositories``; a layer that comes twice
    is a symlink to the first copy, as Docker wrote it."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(t)) for t in tars]},
    }).encode()
    config_hex = Digest.of(config).encoded
    out = io.BytesIO()
    seen: dict[bytes, str] = {}
    layer_paths = []
    with tarfile.open(fileobj=out, mode="w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for position, tar in enumerate(tars):
            v1 = hashlib.sha256(f"v1-{position}".encode()).hexdigest()
            add(f"{v1}/VERSION", b"1.0")
            add(f"{v1}/json", json.dumps({"id": v1}).encode())
            if tar in seen:
                link = tarfile.TarInfo(f"{v1}/layer.tar")
                link.type, link.linkname = tarfile.SYMTYPE, f"../{seen[tar]}/layer.tar"
                tf.addfile(link)
            else:
                add(f"{v1}/layer.tar", tar)
                seen[tar] = v1
            layer_paths.append(f"{v1}/layer.tar")
        add(config_name or f"{config_hex}.json", config)
        add("manifest.json", json.dumps([{"Config": f"{config_hex}.json", "RepoTags": [tag],
                                          "Layers": layer_paths}]).encode())
        name, _, version = tag.partition(":")
        add("repositories", json.dumps({name: {version: layer_paths[-1]}}).encode())
    return out.getvalue()


def test_docker20_archive_with_linked_layer_loads(tmp_path: Path) -> None:
    tars = [layer_tar(BASE_LAYERS[0]), layer_tar(BASE_LAYERS[1]), layer_tar(BASE_LAYERS[0])]
    store = ContentStore(str(tmp_path / "s"))
    [image] = load_bytes(store, old_docker_archive(tars))
    assert image.tags == ["docker.io/library/old:1.0"]
    assert image.manifest.media_type == DOCKER_MANIFEST
    manifest = load_manifest(blob_closure(store, image.manifest)[image.manifest.digest])
    assert manifest.config.digest == image.config
    assert [layer.digest for layer in manifest.layers] == [str(Digest.of(t)) for t in tars]
    assert {layer.media_type for layer in manifest.layers} == {DOCKER_LAYER}
    assert config_of(store, image.config).config.cmd == ["sh"]  # type: ignore[union-attr]


def test_gzip_layers_in_a_docker_archive_get_the_gzip_type(tmp_path: Path) -> None:
    tar = layer_tar(BASE_LAYERS[0])
    archive = old_docker_archive([tar])
    # Swap the layer for its gzip: a Docker 25 with the containerd store does this.
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, \
            tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name.endswith("layer.tar"):
                data = gzip.compress(data, mtime=0)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    store = ContentStore(str(tmp_path / "s"))
    [image] = load_bytes(store, out.getvalue())
    manifest = load_manifest(blob_closure(store, image.manifest)[image.manifest.digest])
    assert [layer.media_type for layer in manifest.layers] == [DOCKER_LAYER + ".gzip"]
    assert config_of(store, image.config).rootfs.diff_ids == [str(Digest.of(tar))]


def test_zstd_compressed_archive_loads(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    image = make_image(store)
    data = zstandard.ZstdCompressor().compress(saved(store, [(image, ["z"])]))
    [loaded] = load_bytes(ContentStore(str(tmp_path / "f")), data)
    assert loaded.manifest.digest == image.digest


# -- hostile archives ---------------------------------------------------------------------


def raw_tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def edited(archive: bytes, name: str, data: bytes) -> bytes:
    """``archive`` with the content of member ``name`` replaced."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, \
            tarfile.open(fileobj=out, mode="w") as dst:
        for info in src.getmembers():
            content = src.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            if info.name == name:
                content = data
            info.size = len(content) if info.isfile() else 0
            dst.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return out.getvalue()


def _tampered_blob(store: ContentStore) -> bytes:
    image = make_image(store)
    archive = saved(store, [(image, ["x"])])
    manifest = load_manifest(blob_closure(store, image)[image.digest])
    name = f"blobs/sha256/{Digest(manifest.layers[0].digest).encoded}"
    return edited(archive, name, gzip.compress(b"evil" * 100, mtime=0))


def _wrong_diff_id(_: ContentStore) -> bytes:
    archive = old_docker_archive([layer_tar(BASE_LAYERS[0])])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        layer = next(n for n in tf.getnames() if n.endswith("layer.tar"))
    return edited(archive, layer, layer_tar(BASE_LAYERS[1]))


HOSTILE: dict[str, tuple[Callable[[ContentStore], bytes], str]] = {
    "dotdot": (lambda _: raw_tar((member("../../etc/passwd"), b"x")), "has a '..' in its path"),
    "absolute": (lambda _: raw_tar((member("/etc/passwd"), b"x")), "has an absolute path"),
    "symlink-out": (lambda _: raw_tar((member("manifest.json", tarfile.SYMTYPE,
                                              "../../etc/passwd"), b"")),
                    "points outside the archive"),
    "symlink-absolute": (lambda _: raw_tar((member("a/layer.tar", tarfile.SYMTYPE,
                                                   "/etc/shadow"), b"")),
                         "points outside the archive"),
    "device": (lambda _: raw_tar((member("dev", tarfile.CHRTYPE), b"")),
               "is not a file, directory or link"),
    "blob-mismatch": (_tampered_blob, "blob digest mismatch"),
    "missing-layer": (lambda _: raw_tar((member("c.json"), b'{"architecture":"amd64","os":'
                                         b'"linux","rootfs":{"type":"layers","diff_ids":[]}}'),
                                        (member("manifest.json"),
                                         b'[{"Config":"c.json","Layers":[]},'
                                         b'{"Config":"gone.json","Layers":[]}]')),
                      "references 'gone.json', which is not in the archive"),
    "malformed-manifest": (lambda _: raw_tar((member("manifest.json"), b"[{not json")),
                           "manifest.json: JSON is malformed"),
    "malformed-index": (lambda _: raw_tar((member("oci-layout"), b'{"imageLayoutVersion":'
                                           b'"1.0.0"}'), (member("index.json"), b"{]")),
                        "invalid image index"),
    "index-blob-missing": (lambda _: raw_tar(
        (member("oci-layout"), b'{"imageLayoutVersion":"1.0.0"}'),
        (member("index.json"), json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 10}]}).encode())),
        "is not in the archive's blobs"),
    "wrong-diff-id": (_wrong_diff_id, "but the config says"),
    "config-renamed": (lambda _: old_docker_archive([layer_tar(BASE_LAYERS[0])],
                                                    config_name="0" * 64 + ".json"),
                       "is not in the archive"),
    "not-a-tar": (lambda _: b"hello, this is not an archive" * 40, "not a tar archive"),
    "empty": (lambda _: raw_tar(), "neither manifest.json"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_on_one_line(tmp_path: Path, case: str) -> None:
    build, message = HOSTILE[case]
    data = build(ContentStore(str(tmp_path / "src")))
    with pytest.raises(InvalidArgument) as caught:
        load_bytes(ContentStore(str(tmp_path / "dst")), data)
    assert message in str(caught.value)
    assert str(caught.value).startswith("invalid image archive: ")
    assert "\n" not in str(caught.value)


def test_config_that_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    archive = old_docker_archive([layer_tar(BASE_LAYERS[0])])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        config_name = next(n for n in tf.getnames() if len(n) == 69 and n.endswith(".json"))
        config = json.load(tf.extractfile(config_name))  # type: ignore[arg-type]
    config["config"]["Cmd"] = ["evil"]
    with pytest.raises(InvalidArgument, match="does not match its name"):
        load_bytes(ContentStore(str(tmp_path / "s")),
                   edited(archive, config_name, json.dumps(config).encode()))


# -- import -------------------------------------------------------------------------------


ROOTFS = layer_tar([*BASE_LAYERS[0], *BASE_LAYERS[1]])


@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
def test_import_rootfs_makes_a_one_layer_image(tmp_path: Path, compression: str) -> None:
    data = {"plain": ROOTFS, "gzip": gzip.compress(ROOTFS),
            "zstd": zstandard.ZstdCompressor().compress(ROOTFS)}[compression]
    store = ContentStore(str(tmp_path / "s"))
    descriptor, config_digest = import_rootfs(store, io.BytesIO(data))
    manifest = load_manifest(blob_closure(store, descriptor)[descriptor.digest])
    assert descriptor.media_type == OCI_MANIFEST and manifest.config.digest == config_digest
    [layer] = manifest.layers
    assert layer.media_type == OCI_LAYER_GZIP
    with store.open(layer.digest) as f:
        assert gzip.decompress(f.read()) == ROOTFS
    config = config_of(store, config_digest)
    assert config.rootfs.diff_ids == [str(Digest.of(ROOTFS))]
    assert config.history[0].comment == "Imported from -"  # type: ignore[index]
    assert config.os == "linux" and config.architecture == "amd64"


def test_import_rootfs_applies_changes(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    changes = [
        'CMD ["sh", "-c", "echo hi"]',
        "ENTRYPOINT /bin/tool --flag",
        "ENV PATH=/bin:/usr/bin GREETING=\"hello world\"",
        "ENV LEGACY some value",
        "ENV PATH=/sbin",
        "EXPOSE 80 53/udp 8000-8001",
        'LABEL org.example.name="my app" version=1',
        "USER 1000:1000",
        "WORKDIR /srv",
        "WORKDIR app",
        'VOLUME ["/data", "/logs"]',
        "STOPSIGNAL SIGTERM",
    ]
    _, config_digest = import_rootfs(store, io.BytesIO(ROOTFS), changes=changes,
                                     platform=Platform(architecture="arm64", os="linux",
                                                       variant="v8"),
                                     message="from the test")
    config = config_of(store, config_digest)
    run = config.config
    assert run is not None
    assert run.cmd == ["sh", "-c", "echo hi"]
    assert run.entrypoint == ["/bin/sh", "-c", "/bin/tool --flag"]
    assert run.env == ["GREETING=hello world", "LEGACY=some value", "PATH=/sbin"]
    assert run.exposed_ports == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert run.labels == {"org.example.name": "my app", "version": "1"}
    assert run.user == "1000:1000"
    assert run.working_dir == "/srv/app"
    assert run.volumes == {"/data": {}, "/logs": {}}
    assert run.stop_signal == "SIGTERM"
    assert (config.architecture, config.variant) == ("arm64", "v8")
    assert config.history[0].comment == "from the test"  # type: ignore[index]


@pytest.mark.parametrize(("change", "message"), [
    ("RUN rm -rf /", "RUN is not supported"),
    ("EXPOSE 99999", "ports are 1 to 65535"),
    ("EXPOSE 80/icmp", "expected PORT"),
    ("USER a b", "exactly one argument"),
    ("CMD", "needs an argument"),
    ("ENV =x", "is not KEY=VALUE"),
])
def test_import_refuses_bad_changes_before_storing(tmp_path: Path, change: str,
                                                   message: str) -> None:
    store = ContentStore(str(tmp_path / "s"))
    with pytest.raises(InvalidArgument, match=message):
        import_rootfs(store, io.BytesIO(ROOTFS), changes=[change])
    assert list(store.walk()) == []


def test_import_refuses_what_is_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a tar archive"):
        import_rootfs(ContentStore(str(tmp_path / "s")), io.BytesIO(b"x" * 2048))


def test_imported_image_round_trips(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "s"))
    descriptor, config = import_rootfs(store, io.BytesIO(ROOTFS), changes=["CMD sh"])
    [loaded] = load_bytes(ContentStore(str(tmp_path / "f")),
                          saved(store, [(descriptor, ["imported:1"])]))
    assert (loaded.manifest.digest, loaded.config) == (descriptor.digest, config)
