"""Typed models of the OCI image specification 1.1 documents and their Docker equivalents.

The image manifest (``Manifest``), the image index / Docker manifest list (``Index``),
the content descriptor (``Descriptor``) and its ``Platform``, the image configuration
(``ImageConfig``) and the image-layout marker file (``ImageLayout``) are
``msgspec.Struct`` classes named like the Go types of ``image-spec/specs-go/v1``, except
that the configuration blob is ``ImageConfig`` (Go's ``Image``) and its ``config`` member
``ContainerConfig`` (Go's ``ImageConfig``, Docker's ``container.Config``). Docker's
v2 schema 2 documents have the same shape, so one model serves both; only the media
types differ, and both sets are defined here.

The rules of ``dockyard.oci.runtime`` hold: optional members default to ``None`` and are
left out when encoding, unknown keys are ignored on decode (so Docker's extra
``container_config``, ``Hostname``... do not break a load, but are not kept either),
and every problem becomes one line of ``InvalidArgument`` naming the JSON path.

Key spelling differs between documents, and the models follow the JSON: the manifest
and index are camelCase, ``config`` inside the image configuration is PascalCase
(Docker's ``container.Config``), and ``rootfs`` / ``history`` are snake_case.

Schema 1 manifests (signed JWS documents of Docker < 1.10) are refused with a message
that says how to get rid of them. Nothing here does I/O.
"""

# No `from __future__ import annotations`, for the reason given in dockyard.oci.runtime:
# msgspec would have to evaluate every annotation string when it builds a decoder.

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self, TypeVar

import msgspec

from dockyard.errors import InvalidArgument

# One base and one error format for every OCI document: the image models share the
# runtime models' conventions rather than restating them.
from dockyard.oci.document import Document, convert, dump

__all__ = [
    "CONFIG_TYPES",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_FOREIGN",
    "DOCKER_LAYER_FOREIGN_GZIP",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "LAYOUT_VERSION",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE",
    "OCI_LAYER_NONDISTRIBUTABLE_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "SCHEMA1",
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "HealthConfig",
    "History",
    "ImageConfig",
    "ImageLayout",
    "Index",
    "Manifest",
    "Platform",
    "RootFS",
    "chain_ids",
    "dump",
    "layer_compression",
    "load_config",
    "load_index",
    "load_layout",
    "load_manifest",
    "parse_any",
]

# --- media types ----------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
#: The config of an artifact that has none (image-spec 1.1 "empty descriptor").
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
# Deprecated by image-spec 1.1 but still found in Windows base images.
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = OCI_LAYER_NONDISTRIBUTABLE + "+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = OCI_LAYER_NONDISTRIBUTABLE + "+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = DOCKER_LAYER_FOREIGN + ".gzip"

#: Docker's pre-2016 signed manifests: recognised only to be refused clearly.
SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Each layer media type and the compression of its blob (None: a plain tar).
_LAYER_COMPRESSION: dict[str, str | None] = {
    OCI_LAYER: None,
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDISTRIBUTABLE: None,
    OCI_LAYER_NONDISTRIBUTABLE_GZIP: "gzip",
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD: "zstd",
    DOCKER_LAYER: None,
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN: None,
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
}
LAYER_TYPES = frozenset(_LAYER_COMPRESSION)

#: The only ``imageLayoutVersion`` an ``oci-layout`` file may carry.
LAYOUT_VERSION = "1.0.0"


def layer_compression(media_type: str) -> str | None:
    """The compression of a layer blob of ``media_type``: ``"gzip"``, ``"zstd"`` or
    ``None`` for a plain tar; ``InvalidArgument`` if it is not a layer type."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise InvalidArgument(
            f"unsupported layer media type {media_type!r}: expected a tar, tar+gzip or "
            "tar+zstd layer"
        ) from None


# --- digests --------------------------------------------------------------------------

# The algorithms of the image-spec's registry, with the length of their hex encoding.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX_DIGITS = frozenset("0123456789abcdef")

# A digest as a document member; decoding checks it (Digest() checks constructed ones).
DigestStr = Annotated[str, msgspec.Meta(pattern=r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")]
MediaType = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
    ),
]
Size = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Digest(str):
    """A validated content digest, ``sha256:<64 hex>`` or ``sha512:<128 hex>``.

    It is a ``str``, so it compares, hashes and encodes as its text; building one checks
    the text, and ``Digest.of`` computes one from bytes.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        """Check ``value`` and wrap it; ``InvalidArgument`` says what is wrong."""
        algorithm, colon, encoded = value.partition(":")
        if not colon:
            raise InvalidArgument(
                f"invalid digest {value!r}: expected <algorithm>:<hex>, such as sha256:<64 hex>"
            )
        length = _HEX_LENGTHS.get(algorithm)
        if length is None:
            raise InvalidArgument(
                f"unsupported digest algorithm {algorithm!r} in {value!r}: use sha256 or sha512"
            )
        if len(encoded) != length or not _HEX_DIGITS.issuperset(encoded):
            raise InvalidArgument(
                f"invalid {algorithm} digest {value!r}: expected {length} lowercase hex digits"
            )
        return super().__new__(cls, value)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Self:
        """The digest of ``data`` with ``algorithm`` (sha256 or sha512)."""
        if algorithm not in _HEX_LENGTHS:
            raise InvalidArgument(
                f"unsupported digest algorithm {algorithm!r}: use sha256 or sha512"
            )
        # hashlib costs milliseconds to import (OpenSSL); only hashing pays for it.
        import hashlib

        return cls(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")

    @property
    def algorithm(self) -> str:
        """The part before the colon: ``sha256`` or ``sha512``."""
        return self.partition(":")[0]

    @property
    def encoded(self) -> str:
        """The hex digits after the colon."""
        return self.partition(":")[2]


def chain_ids(diff_ids: Sequence[str]) -> list[Digest]:
    """The ChainID of each layer stack: the first is the first DiffID, then
    ``ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))``.

    A snapshot is keyed by its ChainID, which names a layer together with everything
    beneath it; the DiffID alone would let two stacks share one snapshot.
    """
    chain: list[Digest] = []
    for diff_id in diff_ids:
        layer = Digest(diff_id)
        chain.append(Digest.of(f"{chain[-1]} {layer}".encode()) if chain else layer)
    return chain


# --- descriptors, manifests, indexes --------------------------------------------------


class Platform(Document):
    """The platform an image runs on, as a manifest list entry or a config states it."""

    architecture: str
    os: str
    os_version: str | None = msgspec.field(default=None, name="os.version")
    os_features: list[str] | None = msgspec.field(default=None, name="os.features")
    variant: str | None = None
    features: list[str] | None = None


class Descriptor(Document):
    """A reference to a blob by media type, digest and size, with optional hints."""

    media_type: MediaType
    digest: DigestStr
    size: Size
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    data: str | None = None  # the blob itself, base64-encoded
    platform: Platform | None = None
    artifact_type: MediaType | None = None


class Manifest(Document, kw_only=True):
    """An image manifest: a config blob and an ordered list of layer blobs.

    ``schema_version`` must always be given (it is 2): a default would be left out
    when encoding, and the specification requires the member.
    """

    schema_version: Literal[2]
    media_type: MediaType | None = None
    artifact_type: MediaType | None = None
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class Index(Document, kw_only=True):
    """An image index (OCI) or manifest list (Docker): one manifest per platform.

    Also the model of an image layout's ``index.json``.
    """

    schema_version: Literal[2]
    media_type: MediaType | None = None
    artifact_type: MediaType | None = None
    manifests: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class ImageLayout(Document):
    """The ``oci-layout`` file at the root of an OCI image layout."""

    image_layout_version: Literal["1.0.0"]


# --- the image configuration ----------------------------------------------------------


class HealthConfig(Document, rename="pascal"):
    """Docker's ``HEALTHCHECK``: the test command and its timing, in nanoseconds."""

    test: list[str] | None = None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


class ContainerConfig(Document, rename="pascal"):
    """The defaults a container of the image starts with (``config`` of the image
    configuration). ``healthcheck``, ``on_build`` and ``shell`` are Docker's."""

    user: str | None = None
    exposed_ports: dict[str, dict[str, Any]] | None = None
    env: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    args_escaped: bool | None = None
    healthcheck: HealthConfig | None = None
    on_build: list[str] | None = None
    shell: list[str] | None = None


class RootFS(Document, rename=None, omit_defaults=False):
    """The layers of the image, by DiffID (the digest of the uncompressed tar).

    Both members are required by the specification, so defaults are written too.
    """

    type: Literal["layers"] = "layers"
    diff_ids: list[DigestStr] = msgspec.field(default_factory=list)


class History(Document, rename=None):
    """One build step; ``empty_layer`` steps (ENV, CMD...) produced no layer."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool | None = None


class ImageConfig(Document, kw_only=True):
    """The image configuration blob: platform, run defaults, layers and history.

    ``created`` stays the RFC 3339 text of the document, so re-encoding keeps it as is.
    """

    architecture: str
    os: str
    os_version: str | None = msgspec.field(default=None, name="os.version")
    os_features: list[str] | None = msgspec.field(default=None, name="os.features")
    variant: str | None = None
    created: str | None = None
    author: str | None = None
    config: ContainerConfig | None = None
    rootfs: RootFS
    history: list[History] | None = None


# --- encoding and decoding ------------------------------------------------------------


_SCHEMA1_REFUSAL = (
    "schema 1 manifests are not supported: push the image again with a current client"
)


def _parse_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse JSON text that must hold an object; the typed conversion comes after, so
    that the media type and schema version can be looked at first."""
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidArgument(f"invalid {what}: expected a JSON object at $")
    return obj


def _refuse_schema1(obj: dict[str, Any], media_type: str | None = None) -> None:
    declared = obj.get("mediaType")
    if (
        media_type in SCHEMA1
        or (isinstance(declared, str) and declared in SCHEMA1)
        or obj.get("schemaVersion") == 1
    ):
        raise InvalidArgument(_SCHEMA1_REFUSAL)


# What each top-level document is called in errors, and the media types it may declare.
_KINDS: dict[type, tuple[str, frozenset[str]]] = {
    Manifest: ("image manifest", MANIFEST_TYPES),
    Index: ("image index", INDEX_TYPES),
}


_Top = TypeVar("_Top", Manifest, Index)


def _typed(obj: dict[str, Any], kind: type[_Top]) -> _Top:
    what, allowed = _KINDS[kind]
    document = convert(obj, kind, what)
    if document.media_type is not None and document.media_type not in allowed:
        raise InvalidArgument(
            f"invalid {what}: mediaType {document.media_type!r} at $.mediaType is not one of "
            f"{', '.join(sorted(allowed))}"
        )
    return document


def load_manifest(data: bytes | str) -> Manifest:
    """Decode an image manifest (OCI or Docker v2 schema 2); refuses schema 1, a
    ``mediaType`` that is not a manifest's, and ill-typed members, naming the JSON path."""
    obj = _parse_object(data, "image manifest")
    _refuse_schema1(obj)
    return _typed(obj, Manifest)


def load_index(data: bytes | str) -> Index:
    """Decode an image index or Docker manifest list (or a layout's ``index.json``)."""
    obj = _parse_object(data, "image index")
    _refuse_schema1(obj)
    return _typed(obj, Index)


def load_config(data: bytes | str) -> ImageConfig:
    """Decode an image configuration blob (OCI or Docker)."""
    return convert(_parse_object(data, "image config"), ImageConfig, "image config")


def load_layout(data: bytes | str) -> ImageLayout:
    """Decode an ``oci-layout`` file; any version but 1.0.0 is refused."""
    return convert(_parse_object(data, "oci-layout"), ImageLayout, "oci-layout")


def parse_any(data: bytes | str, media_type: str | None = None) -> Manifest | Index:
    """Decode what a registry or layout returned for a manifest reference.

    ``media_type`` is the Content-Type it was served with (parameters are ignored), or
    ``None`` to go by the document's own ``mediaType`` and, failing that, its shape. A
    served type that contradicts the document's, an unknown type and schema 1 are
    refused with one line of ``InvalidArgument``.
    """
    served = media_type.split(";", 1)[0].strip() if media_type else None
    obj = _parse_object(data, "manifest")
    _refuse_schema1(obj, served)
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidArgument("invalid manifest: expected a string at $.mediaType")
    # OCI lets both documents leave mediaType out; only an index has "manifests".
    kind = served or declared or (OCI_INDEX if "manifests" in obj else OCI_MANIFEST)
    if kind in MANIFEST_TYPES | INDEX_TYPES and declared is not None and declared != kind:
        raise InvalidArgument(
            f"invalid manifest: served as {kind!r} but its mediaType is {declared!r}"
        )
    if kind in MANIFEST_TYPES:
        return _typed(obj, Manifest)
    if kind in INDEX_TYPES:
        return _typed(obj, Index)
    raise InvalidArgument(
        f"unsupported manifest media type {kind!r}: expected an OCI or Docker v2 image "
        "manifest or index"
    )
