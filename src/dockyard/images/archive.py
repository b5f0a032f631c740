"""Image archives over the content store: OCI image layouts and docker-archive tarballs.

An image here is a manifest (or index) descriptor whose blobs are in a ``ContentStore``,
and the references it is known by. Three formats:

``write_oci_layout``
    an OCI image layout directory: ``oci-layout``, ``index.json`` (one entry per tag,
    annotated ``org.opencontainers.image.ref.name`` = the tag and
    ``io.containerd.image.name`` = the full name, as containerd and Docker 25 write
    them) and ``blobs/<alg>/<hex>``.
``save_docker_archive``
    what ``docker save`` writes since Docker 25: that same layout in a tar, plus the
    legacy ``manifest.json`` (``Config``, ``RepoTags``, ``Layers`` as blob paths) and
    ``repositories`` that older loaders read. Streamed, sorted, with fixed times and
    owners, so one set of images always gives the same bytes.
``load_archive``
    reads docker-archives of every age (Docker < 25: ``<id>.json`` and
    ``<id>/layer.tar``; skopeo and podman: ``<hex>.json`` and ``<hex>.tar``; Docker 25:
    the OCI layout inside) and OCI layout tarballs, nested indexes included.

The archive being loaded is hostile. It is read as a stream, never extracted: each
member's name is taken apart (absolute names and ``..`` are refused), links may only
alias other members (Docker < 25 links identical ``layer.tar`` files), and every other
kind of member is refused. ``blobs/<alg>/<hex>`` members go straight into the store,
checked against their names; other members are either small JSON files kept in memory
or layers spooled into the store under the digest they hash to, since a
docker-archive's ``manifest.json`` may come after its layers. A docker-archive without
an OCI manifest gets a Docker v2 schema 2 manifest, built after checking that its
config's DiffIDs are the digests of its layers' uncompressed tars. Any problem is one
``InvalidArgument`` line, and nothing is returned then: blobs may stay in the store, but
no image is reported loaded that is not complete.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, BinaryIO

import msgspec

from dockyard.errors import DockyardError, InvalidArgument, NotFound
from dockyard.images import reference
from dockyard.images.building import store_image
from dockyard.images.manifest import check_config, check_image
from dockyard.images.platform import host_platform, select
from dockyard.oci.image import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    LAYOUT_VERSION,
    MANIFEST_TYPES,
    OCI_INDEX,
    Descriptor,
    Digest,
    ImageLayout,
    Index,
    Manifest,
    dump,
    load_config,
    load_index,
    load_layout,
    load_manifest,
)
from dockyard.storage.content import ContentStore
from dockyard.storage.streams import HashingReader, compression_of, decompressed

__all__ = [
    "NAME_ANNOTATION",
    "REF_NAME_ANNOTATION",
    "LoadedImage",
    "load_archive",
    "save_docker_archive",
    "write_oci_layout",
]

#: The tag of an image layout entry (image-spec).
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: The full image name of an image layout entry (containerd, Docker 25).
NAME_ANNOTATION = "io.containerd.image.name"

_CHUNK = 1 << 20
# Every JSON document of an archive (manifest.json, configs, manifests) is far smaller;
# the limit keeps a hostile archive from making us hold gigabytes in memory.
_JSON_LIMIT = 16 << 20
# Index nesting deeper than this is a loop or an attack, not an image.
_MAX_DEPTH = 8
_MAX_LINK_HOPS = 16
# Members kept in memory when not under blobs/: the documents of the archive formats.
_SMALL_NAMES = frozenset({"manifest.json", "repositories", "index.json", "oci-layout",
                          "json", "VERSION"})


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument(f"invalid image archive: {problem}")


# --- walking an image's blobs ------------------------------------------------------------


def _read_small(store: ContentStore, descriptor: Descriptor) -> bytes:
    """A manifest, index or config blob, checked against its descriptor's size."""
    info = store.info(descriptor.digest)
    if info.size != descriptor.size:
        raise InvalidArgument(f"blob {descriptor.digest} is {info.size} bytes but its "
                              f"descriptor says {descriptor.size}")
    if info.size > _JSON_LIMIT:
        raise InvalidArgument(f"blob {descriptor.digest} is too large for a "
                              f"{descriptor.media_type} document ({info.size} bytes)")
    with store.open(descriptor.digest) as blob:
        return blob.read()


def _children(store: ContentStore, descriptor: Descriptor) -> list[Descriptor]:
    """The blobs a manifest or index refers to (nothing for any other blob).

    An index's manifests that are not in the store are left out: a pull or load of
    one platform keeps the whole index but only that platform's blobs.
    """
    if descriptor.media_type in INDEX_TYPES:
        index = load_index(_read_small(store, descriptor))
        return [child for child in index.manifests if store.exists(child.digest)]
    if descriptor.media_type in MANIFEST_TYPES:
        manifest = load_manifest(_read_small(store, descriptor))
        # A foreign layer (one with urls) is fetched from elsewhere, never shipped.
        return [manifest.config, *(layer for layer in manifest.layers
                                   if not (layer.urls and not store.exists(layer.digest)))]
    return []


def _closure(store: ContentStore, roots: Sequence[Descriptor]) -> dict[str, int]:
    """Every blob the ``roots`` need, digest to size, checked to be in the store."""
    blobs: dict[str, int] = {}
    pending = [(root, 0) for root in roots]
    while pending:
        descriptor, depth = pending.pop()
        if descriptor.digest in blobs:
            continue
        if depth > _MAX_DEPTH:
            raise InvalidArgument(f"indexes nest deeper than {_MAX_DEPTH} levels at "
                                  f"{descriptor.digest}")
        size = store.info(descriptor.digest).size
        if size != descriptor.size:
            raise InvalidArgument(f"blob {descriptor.digest} is {size} bytes but its "
                                  f"descriptor says {descriptor.size}")
        blobs[descriptor.digest] = size
        pending.extend((child, depth + 1) for child in _children(store, descriptor))
    return dict(sorted(blobs.items()))


def _platform_manifest(store: ContentStore, descriptor: Descriptor,
                       depth: int = 0) -> tuple[Descriptor, Manifest]:
    """The image manifest that stands for ``descriptor``: itself, or for an index the
    entry for this machine (the first one present when none suits), recursively."""
    if descriptor.media_type in MANIFEST_TYPES:
        return descriptor, load_manifest(_read_small(store, descriptor))
    if descriptor.media_type not in INDEX_TYPES:
        raise InvalidArgument(f"{descriptor.digest} is a {descriptor.media_type}, "
                              "not an image manifest or index")
    if depth > _MAX_DEPTH:
        raise InvalidArgument(f"indexes nest deeper than {_MAX_DEPTH} levels at "
                              f"{descriptor.digest}")
    present = _children(store, descriptor)
    if not present:
        raise InvalidArgument(f"index {descriptor.digest} has none of its manifests")
    try:
        chosen = select(present, host_platform())
    except NotFound:
        chosen = present[0]
    return _platform_manifest(store, chosen, depth + 1)


def _layout_entries(images: Sequence[tuple[Descriptor, list[str]]]) -> list[Descriptor]:
    """The ``index.json`` entries: one per tag, or one unannotated for an untagged image."""
    entries = []
    for descriptor, tags in images:
        bare = msgspec.structs.replace(descriptor, annotations=None)
        if not tags:
            entries.append(bare)
        for tag in tags:
            ref = reference.parse(tag)
            annotations = {NAME_ANNOTATION: str(ref)}
            if ref.tag is not None:
                annotations[REF_NAME_ANNOTATION] = ref.tag
            entries.append(msgspec.structs.replace(bare, annotations=annotations))
    return entries


def _blob_path(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _layout_documents(images: Sequence[tuple[Descriptor, list[str]]]) -> dict[str, bytes]:
    return {
        "oci-layout": dump(ImageLayout(image_layout_version=LAYOUT_VERSION)),
        "index.json": dump(Index(schema_version=2, media_type=OCI_INDEX,
                                 manifests=_layout_entries(images))),
    }


# --- writing -----------------------------------------------------------------------------


def write_oci_layout(store: ContentStore, images: Sequence[tuple[Descriptor, list[str]]],
                     directory: str | os.PathLike[str]) -> None:
    """Write ``images`` (descriptor, tags) as an OCI image layout in ``directory``.

    Blobs already in the directory are kept (an existing layout is added to only by
    blobs; its ``index.json`` is replaced). Each file appears by ``rename(2)``, so a
    reader never sees a partial blob.
    """
    documents = _layout_documents(images)
    blobs = _closure(store, [descriptor for descriptor, _ in images])
    root = os.fspath(directory)
    for digest in blobs:
        target = os.path.join(root, _blob_path(digest))
        if os.path.exists(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = f"{target}.partial"
        with store.open(digest) as source, open(partial, "wb") as copy:
            shutil.copyfileobj(source, copy, _CHUNK)
        os.rename(partial, target)
    for name, data in documents.items():
        partial = os.path.join(root, f"{name}.partial")
        with open(partial, "wb") as file:
            file.write(data)
        os.rename(partial, os.path.join(root, name))


def _legacy_documents(store: ContentStore,
                      images: Sequence[tuple[Descriptor, list[str]]]) -> dict[str, bytes]:
    """``manifest.json`` and ``repositories`` (when any image is tagged), as Docker 25
    writes them: paths are the blobs of the layout, tags are familiar."""
    entries: dict[str, dict[str, object]] = {}
    repositories: dict[str, dict[str, str]] = {}
    for descriptor, tags in images:
        _, manifest = _platform_manifest(store, descriptor)
        layers = [_blob_path(layer.digest) for layer in manifest.layers]
        entry = entries.setdefault(manifest.config.digest, {
            "Config": _blob_path(manifest.config.digest), "RepoTags": None, "Layers": layers,
        })
        for tag in tags:
            ref = reference.parse(tag)
            if ref.tag is None:
                continue  # a digest reference is no tag: docker save leaves it out too
            entry["RepoTags"] = [*(entry["RepoTags"] or []), ref.familiar()]  # type: ignore[misc]
            if manifest.layers:
                top = Digest(manifest.layers[-1].digest).encoded
                repositories.setdefault(ref.familiar_name, {})[ref.tag] = top
    documents = {"manifest.json": json.dumps(list(entries.values()),
                                             separators=(",", ":")).encode()}
    if repositories:
        documents["repositories"] = json.dumps(repositories, sort_keys=True,
                                               separators=(",", ":")).encode()
    return documents


def _tar_info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    # Fixed owner, mode and time: the same images always give the same archive.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    return info


def save_docker_archive(store: ContentStore, images: Sequence[tuple[Descriptor, list[str]]],
                        out: BinaryIO) -> None:
    """Write ``images`` (descriptor, tags) to ``out`` as ``docker save`` does.

    The tar is streamed to ``out`` blob by blob; its members are in name order:
    ``blobs/...``, ``index.json``, ``manifest.json``, ``oci-layout``, ``repositories``.
    """
    documents = {**_layout_documents(images), **_legacy_documents(store, images)}
    blobs = _closure(store, [descriptor for descriptor, _ in images])
    members: dict[str, tuple[str, int] | bytes | None] = {}
    for digest, size in blobs.items():
        path = _blob_path(digest)
        members[posixpath.dirname(posixpath.dirname(path)) + "/"] = None
        members[posixpath.dirname(path) + "/"] = None
        members[path] = (digest, size)
    members.update(documents)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT,
                      bufsize=_CHUNK, copybufsize=_CHUNK) as archive:
        for name in sorted(members):
            content = members[name]
            if content is None:
                archive.addfile(_tar_info(name.rstrip("/"), directory=True))
            elif isinstance(content, bytes):
                archive.addfile(_tar_info(name, len(content)), _BytesReader(content))
            else:
                digest, size = content
                with store.open(digest) as blob:
                    archive.addfile(_tar_info(name, size), blob)


class _BytesReader:
    """The least a tar member's source needs: ``read``."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        n = len(self._view) if n < 0 else n
        data, self._view = self._view[:n], self._view[n:]
        return bytes(data)


# --- loading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedImage:
    """An image found complete in an archive: its manifest (or index) descriptor, the
    config digest of the image (of this machine's manifest, for an index), and the
    full references it was tagged with (``docker.io/library/busybox:latest``)."""

    manifest: Descriptor
    config: Digest
    tags: list[str] = field(default_factory=list)


def _member_name(raw: str) -> str:
    """The normalised name of a member; absolute names and ``..`` refused."""
    if raw.startswith("/"):
        raise _invalid(f"member {raw!r} has an absolute path")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _invalid(f"member {raw!r} has a '..' in its path")
    return "/".join(parts)


def _blob_digest(name: str) -> Digest | None:
    """The digest a ``blobs/<alg>/<hex>`` member must have, or None for other names."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    try:
        return Digest(f"{parts[1]}:{parts[2]}")
    except InvalidArgument:
        return None


class _Members:
    """What was read from the archive: small files, stored blobs, and link aliases."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.small: dict[str, bytes] = {}
        self.stored: dict[str, tuple[Digest, int]] = {}
        self.links: dict[str, str] = {}

    def read(self, archive: tarfile.TarFile) -> None:
        for member in archive:
            name = _member_name(member.name)
            if not name or member.isdir():
                continue
            if member.issym() or member.islnk():
                self.links[name] = self._link_target(name, member)
            elif not member.isreg():
                raise _invalid(f"member {name!r} is not a file, directory or link")
            else:
                source = archive.extractfile(member)
                assert source is not None  # a regular file always has data
                self._take(name, member.size, source)

    @staticmethod
    def _link_target(name: str, member: tarfile.TarInfo) -> str:
        target = member.linkname
        if target.startswith("/"):
            raise _invalid(f"link {name!r} points outside the archive, to {target!r}")
        # A symlink is relative to its directory, a hard link to the archive's root.
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise _invalid(f"link {name!r} points outside the archive, to {target!r}")
        return resolved

    def _take(self, name: str, size: int, source: IO[bytes]) -> None:
        expected = _blob_digest(name)
        if expected is not None:
            self.stored[name] = (self._store(source, name, expected, size), size)
        elif posixpath.basename(name) in _SMALL_NAMES or name.endswith(".json"):
            if size > _JSON_LIMIT:
                raise _invalid(f"{name} is too large ({size} bytes) for a JSON document")
            self.small[name] = source.read()
        else:
            self.stored[name] = (self._store(source, name, None, size), size)

    def _store(self, source: IO[bytes], name: str, expected: Digest | None,
               size: int) -> Digest:
        if expected is not None and self.store.exists(expected):
            return expected  # tarfile skips the unread data when moving to the next member
        try:
            with self.store.writer(expected, size) as writer:
                while chunk := source.read(_CHUNK):
                    writer.write(chunk)
                return Digest(writer.commit())
        except InvalidArgument as exc:
            raise _invalid(f"{name}: {exc}") from None

    def resolve(self, name: str, referrer: str) -> str:
        """The name of the member ``name`` stands for, following links."""
        path = _member_name(name)
        for _ in range(_MAX_LINK_HOPS):
            if path not in self.links:
                if path in self.small or path in self.stored:
                    return path
                raise _invalid(f"{referrer} references {name!r}, which is not in the archive")
            path = self.links[path]
        raise _invalid(f"{referrer} references {name!r} through a loop of links")

    def document(self, name: str, referrer: str) -> bytes:
        """The bytes of a small member (or of a stored one, size permitting)."""
        path = self.resolve(name, referrer)
        if path in self.small:
            return self.small[path]
        digest, size = self.stored[path]
        if size > _JSON_LIMIT:
            raise _invalid(f"{path} is too large ({size} bytes) for a JSON document")
        with self.store.open(digest) as blob:
            return blob.read()

    def layer(self, name: str, referrer: str) -> tuple[Digest, int]:
        path = self.resolve(name, referrer)
        if path not in self.stored:
            raise _invalid(f"{referrer} references {name!r} as a layer, but it is a JSON file")
        return self.stored[path]


class _LegacyEntry(msgspec.Struct, rename="pascal"):
    """One image of a docker-archive's ``manifest.json``."""

    config: str
    layers: list[str]
    repo_tags: list[str] | None = None


def _full_names(tags: Sequence[str], where: str) -> list[str]:
    try:
        return [str(reference.parse(tag)) for tag in tags]
    except InvalidArgument as exc:
        raise _invalid(f"{where}: {exc}") from None


def _diff_id(store: ContentStore, digest: Digest, compression: str | None) -> Digest:
    """The digest of a stored layer's uncompressed tar."""
    if compression is None:
        return digest
    with store.open(digest) as blob:
        tar = HashingReader(decompressed(blob))
        tar.drain()
    return Digest(tar.digest)


class _Loader:
    """Turns the members of an archive into complete images in the store."""

    def __init__(self, store: ContentStore, members: _Members) -> None:
        self.store = store
        self.members = members
        self.diff_ids: dict[Digest, Digest] = {}

    # -- OCI image layouts (and Docker 25's docker-archives) --

    def oci_images(self) -> list[LoadedImage]:
        load_layout(self.members.document("oci-layout", "the archive"))
        index = load_index(self.members.document("index.json", "the archive"))
        # One image per manifest: a layout has an entry per tag, the caller wants the
        # image once with all its names.
        images: dict[str, LoadedImage] = {}
        for position, entry in enumerate(index.manifests):
            where = f"index.json entry {position} ({entry.digest})"
            if not self.store.exists(entry.digest):
                raise _invalid(f"{where} is not in the archive's blobs")
            self._check(entry, where, 0)
            _, manifest = _platform_manifest(self.store, entry)
            names = self._layout_names(entry.annotations or {}, where)
            if entry.digest in images:
                images[entry.digest].tags.extend(n for n in names
                                                 if n not in images[entry.digest].tags)
                continue
            descriptor = msgspec.structs.replace(entry, annotations=None)
            images[entry.digest] = LoadedImage(descriptor, Digest(manifest.config.digest),
                                               names)
        return list(images.values())

    def _check(self, descriptor: Descriptor, where: str, depth: int) -> None:
        """Check that everything an image needs is in the store and well formed."""
        if depth > _MAX_DEPTH:
            raise _invalid(f"{where}: indexes nest deeper than {_MAX_DEPTH} levels")
        try:
            if descriptor.media_type in INDEX_TYPES:
                children = _children(self.store, descriptor)
                if not children:
                    raise InvalidArgument(f"none of the manifests of index "
                                          f"{descriptor.digest} is in the archive")
                for child in children:
                    self._check(child, where, depth + 1)
                return
            manifest = load_manifest(_read_small(self.store, descriptor))
            check_image(manifest)
            config = load_config(_read_small(self.store, manifest.config))
            check_config(manifest, config)
            for layer in manifest.layers:
                if layer.urls and not self.store.exists(layer.digest):
                    continue
                size = self.store.info(layer.digest).size
                if size != layer.size:
                    raise InvalidArgument(f"layer {layer.digest} is {size} bytes but the "
                                          f"manifest says {layer.size}")
        except (NotFound, InvalidArgument) as exc:
            raise _invalid(f"{where}: {exc}") from None

    @staticmethod
    def _layout_names(annotations: dict[str, str], where: str) -> list[str]:
        name = annotations.get(NAME_ANNOTATION)
        if name:
            return _full_names([name], where)
        # A bare tag ("latest") names no repository; only a full reference is a name.
        ref_name = annotations.get(REF_NAME_ANNOTATION, "")
        if ":" in ref_name or "/" in ref_name:
            try:
                return [str(reference.parse(ref_name))]
            except InvalidArgument:
                pass
        return []

    # -- docker-archives without an OCI manifest --

    def legacy_images(self, entries: list[_LegacyEntry]) -> list[LoadedImage]:
        return [self._legacy_image(position, entry)
                for position, entry in enumerate(entries)]

    def _legacy_image(self, position: int, entry: _LegacyEntry) -> LoadedImage:
        where = f"manifest.json entry {position}"
        raw_config = self.members.document(entry.config, where)
        config_digest = Digest.of(raw_config)
        # Docker names the config after its digest: a mismatch is a tampered archive.
        stem = posixpath.basename(entry.config).removesuffix(".json")
        if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) \
                and stem != config_digest.encoded:
            raise _invalid(f"{where}: config {entry.config} does not match its name: its "
                           f"content is {config_digest}")
        try:
            config = load_config(raw_config)
        except InvalidArgument as exc:
            raise _invalid(f"{where}: {entry.config}: {exc}") from None
        diff_ids = config.rootfs.diff_ids
        if len(diff_ids) != len(entry.layers):
            raise _invalid(f"{where}: the config lists {len(diff_ids)} layers but "
                           f"manifest.json has {len(entry.layers)}")
        layers = [self._legacy_layer(path, expected, where)
                  for path, expected in zip(entry.layers, diff_ids, strict=True)]
        manifest, _ = store_image(self.store, raw_config, layers, media_type=DOCKER_MANIFEST)
        return LoadedImage(manifest, config_digest, _full_names(entry.repo_tags or [], where))

    def _legacy_layer(self, path: str, expected: str, where: str) -> Descriptor:
        digest, size = self.members.layer(path, where)
        with self.store.open(digest) as blob:
            compression = compression_of(blob.read(4))
        if compression not in (None, "gzip"):
            raise _invalid(f"{where}: layer {path} is {compression}-compressed, which a "
                           "Docker v2 manifest cannot describe")
        if digest not in self.diff_ids:
            try:
                self.diff_ids[digest] = _diff_id(self.store, digest, compression)
            except (OSError, EOFError, zlib.error) as exc:
                raise _invalid(f"{where}: layer {path} cannot be decompressed: {exc}") from None
        if self.diff_ids[digest] != expected:
            raise _invalid(f"{where}: layer {path} has DiffID {self.diff_ids[digest]} but "
                           f"the config says {expected}")
        media_type = DOCKER_LAYER_GZIP if compression == "gzip" else DOCKER_LAYER
        return Descriptor(media_type=media_type, digest=digest, size=size)


def _legacy_entries(members: _Members) -> list[_LegacyEntry]:
    try:
        return msgspec.json.decode(members.small["manifest.json"], type=list[_LegacyEntry])
    except msgspec.DecodeError as exc:
        raise _invalid(f"manifest.json: {exc}") from None


def _merge_tags(images: list[LoadedImage], entries: list[_LegacyEntry],
                members: _Members) -> list[LoadedImage]:
    """Add the ``RepoTags`` of ``manifest.json`` to the layout's images, by config: a
    Docker 25 archive names its images in both places, older tools read only one."""
    tags: dict[str, list[str]] = {}
    for position, entry in enumerate(entries):
        config = Digest.of(members.document(entry.config, f"manifest.json entry {position}"))
        tags.setdefault(config, []).extend(
            _full_names(entry.repo_tags or [], f"manifest.json entry {position}"))
    return [LoadedImage(image.manifest, image.config,
                        list(dict.fromkeys([*image.tags, *tags.get(image.config, [])])))
            for image in images]


def load_archive(store: ContentStore, stream: BinaryIO) -> list[LoadedImage]:
    """Load a docker-archive or OCI layout tarball (plain or compressed) from ``stream``
    into ``store``; return the images it holds, each complete and verified.

    ``InvalidArgument`` names the first problem, and then no image is returned.
    """
    members = _Members(store)
    try:
        # gzip and zstd are undone here (Docker loads both); tarfile's "r|*" would
        # still see bzip2 and xz, but knows no zstd.
        with tarfile.open(fileobj=decompressed(stream), mode="r|*",
                          bufsize=_CHUNK) as archive:
            members.read(archive)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _invalid(f"not a tar archive, or a truncated one ({exc})") from None
    except OSError as exc:  # gzip.BadGzipFile and friends
        raise _invalid(f"cannot read it ({exc})") from None
    loader = _Loader(store, members)
    try:
        if "oci-layout" in members.small and "index.json" in members.small:
            images = loader.oci_images()
            if "manifest.json" in members.small:
                images = _merge_tags(images, _legacy_entries(members), members)
            return images
        if "manifest.json" in members.small:
            return loader.legacy_images(_legacy_entries(members))
    except DockyardError as exc:
        if str(exc).startswith("invalid image archive"):
            raise
        raise _invalid(str(exc)) from None
    if "repositories" in members.small:
        raise _invalid("it has no manifest.json: it was saved by Docker before 1.10, "
                       "load it with a newer Docker and save it again")
    raise _invalid("it has neither manifest.json (docker-archive) nor oci-layout and "
                   "index.json (OCI layout)")
