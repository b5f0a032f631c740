"""The last steps of making an image on this machine: its layers are blobs in the store
already; its config (``image_config``) and a manifest over them are stored
(``store_image``), and the image is complete.

Shared by every place that makes images without a registry: ``docker import``
(``rootfs_tar``), the base images (``bootstrap``) and docker-archives that carry no
manifest (``archive``).
"""

from __future__ import annotations

from collections.abc import Sequence

from dockyard.oci.image import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_MANIFEST,
    ContainerConfig,
    Descriptor,
    Digest,
    History,
    ImageConfig,
    Manifest,
    Platform,
    RootFS,
    dump,
)
from dockyard.storage.content import ContentStore

__all__ = ["image_config", "store_image"]

# Each manifest type, and the media type of the config it points to.
_CONFIG_TYPES = {OCI_MANIFEST: OCI_CONFIG, DOCKER_MANIFEST: DOCKER_CONFIG}


def image_config(platform: Platform, created: str, config: ContainerConfig,
                 diff_ids: Sequence[str], history: Sequence[History]) -> ImageConfig:
    """The config of a new image for ``platform``, made at ``created`` (RFC 3339): its
    layers' DiffIDs, bottom first, and its ``history``."""
    return ImageConfig(
        architecture=platform.architecture,
        os=platform.os,
        variant=platform.variant,
        created=created,
        config=config,
        rootfs=RootFS(diff_ids=list(diff_ids)),
        history=list(history),
    )


def store_image(store: ContentStore, config: ImageConfig | bytes,
                layers: Sequence[Descriptor], *, media_type: str = OCI_MANIFEST,
                platform: Platform | None = None) -> tuple[Descriptor, Digest]:
    """Store ``config`` and a manifest of ``layers`` (blobs the store holds) over it;
    return the manifest's descriptor and the config's digest (the image ID).

    ``config`` given as bytes is stored as it is (its digest must not change); an
    ``ImageConfig`` is encoded first. ``media_type`` is ``OCI_MANIFEST`` or
    ``DOCKER_MANIFEST``, and the config's media type goes with it. ``platform`` is set
    on the returned descriptor, as an index entry would carry it.
    """
    raw_config = config if isinstance(config, bytes) else dump(config)
    stored_config = store.put(raw_config)
    manifest = Manifest(
        schema_version=2,
        media_type=media_type,
        config=Descriptor(media_type=_CONFIG_TYPES[media_type], digest=stored_config.digest,
                          size=stored_config.size),
        layers=list(layers),
    )
    stored_manifest = store.put(dump(manifest))
    return (Descriptor(media_type=media_type, digest=stored_manifest.digest,
                       size=stored_manifest.size, platform=platform),
            stored_config.digest)
