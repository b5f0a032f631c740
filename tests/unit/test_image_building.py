"""Storing a new image's config and manifest over layers already in the store."""

from pathlib import Path

from dockyard.images.building import image_config, store_image
from dockyard.oci.image import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    Digest,
    History,
    Platform,
    dump,
    load_config,
    load_manifest,
)
from dockyard.storage.content import ContentStore

LAYER = Descriptor(media_type=OCI_LAYER_GZIP, digest=Digest.of(b"layer"), size=5)
DIFF_ID = Digest.of(b"plain layer")
ARM = Platform(architecture="arm", os="linux", variant="v7")


def test_image_config_carries_platform_layers_and_history() -> None:
    config = image_config(ARM, "2024-01-01T00:00:00Z", ContainerConfig(cmd=["sh"]), [DIFF_ID],
                          [History(created="2024-01-01T00:00:00Z", comment="made")])
    assert (config.architecture, config.os, config.variant) == ("arm", "linux", "v7")
    assert config.rootfs.diff_ids == [DIFF_ID]
    assert config.config is not None and config.config.cmd == ["sh"]
    assert [h.comment for h in config.history or []] == ["made"]


def test_store_image_stores_config_and_oci_manifest(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path))
    config = image_config(ARM, "2024-01-01T00:00:00Z", ContainerConfig(), [DIFF_ID], [])
    descriptor, config_digest = store_image(store, config, [LAYER], platform=ARM)
    assert config_digest == Digest.of(dump(config))
    assert (descriptor.media_type, descriptor.platform) == (OCI_MANIFEST, ARM)
    with store.open(descriptor.digest) as blob:
        raw = blob.read()
    assert (Digest.of(raw), len(raw)) == (descriptor.digest, descriptor.size)
    manifest = load_manifest(raw)
    assert (manifest.config.media_type, manifest.config.digest) == (OCI_CONFIG, config_digest)
    assert manifest.layers == [LAYER]
    with store.open(config_digest) as blob:
        assert load_config(blob.read()) == config


def test_store_image_keeps_config_bytes_as_given(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path))
    raw = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = Descriptor(media_type=DOCKER_LAYER, digest=Digest.of(b"layer"), size=5)
    descriptor, config_digest = store_image(store, raw, [layer], media_type=DOCKER_MANIFEST)
    assert config_digest == Digest.of(raw) and store.exists(config_digest)
    assert descriptor.media_type == DOCKER_MANIFEST and descriptor.platform is None
    with store.open(descriptor.digest) as blob:
        manifest = load_manifest(blob.read())
    assert (manifest.media_type, manifest.config.media_type) == (DOCKER_MANIFEST, DOCKER_CONFIG)
