"""What an image's manifest and config must satisfy before the engine uses them.

``dockyard.oci.image`` checks that documents are well formed; this module checks that
they describe something the engine can unpack and run, and that fetched content is the
content that was asked for. Each failure is one ``InvalidArgument`` line.
"""

from __future__ import annotations

from dockyard.errors import InvalidArgument
from dockyard.oci.image import (
    CONFIG_TYPES,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    LAYER_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Digest,
    ImageConfig,
    Manifest,
)

__all__ = ["ACCEPT", "check_config", "check_image", "verify"]

#: The manifest media types a client accepts, indexes first so that a multi-platform
#: image comes back as its index and the platform is chosen here, not by the registry.
ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)


def check_image(manifest: Manifest) -> None:
    """Refuse a manifest that is not a container image: an artifact (a Helm chart, a
    signature...) whose config is not an image config, or a layer that is not a tar."""
    config_type = manifest.config.media_type
    if config_type not in CONFIG_TYPES:
        raise InvalidArgument(
            f"not a container image: the config media type is {config_type!r} "
            "(an artifact, which cannot be run)"
        )
    for index, layer in enumerate(manifest.layers):
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(
                f"unsupported layer media type {layer.media_type!r} at $.layers[{index}].mediaType"
            )


def check_config(manifest: Manifest, config: ImageConfig) -> None:
    """Refuse a config whose layers (DiffIDs) do not pair one to one with the
    manifest's layer blobs, as Docker does: the snapshot of each layer is keyed by them."""
    diff_ids = config.rootfs.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument(
            f"image config lists {len(diff_ids)} layers but the manifest has "
            f"{len(manifest.layers)}: the image is corrupt, push it again"
        )


def verify(data: bytes, expected: str) -> Digest:
    """Check that ``data`` has the digest ``expected`` (hashing with its algorithm) and
    return it; a mismatch means the content was corrupted or substituted."""
    wanted = Digest(expected)
    actual = Digest.of(data, wanted.algorithm)
    if actual != wanted:
        raise InvalidArgument(f"digest mismatch: expected {wanted}, got {actual}")
    return actual
