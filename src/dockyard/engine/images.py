"""The image service: pull, push, tag, remove, list, inspect, prune and check images.

Under the root (layout version 1)::

    dockyard.db             the state database (``dockyard.engine.db``): images, tags,
                            layers, leases
    content/                the content store: manifests, configs and layer blobs
    snapshots/<driver>/     the snapshotter: one committed snapshot per ChainID

A pull, as containerd and moby do it:

    resolve   the tag -> a manifest or an index; an index -> the platform's manifest
    fetch     the config, then the layer blobs, a few at a time (``max_downloads``),
              streamed into the content store, hashed as they arrive and resumed from a
              partial ingest left by an interrupted pull
    unpack    each layer, its DiffID checked against the config, committed under its
              ChainID (an image sharing the layers finds it there). On overlay, where a
              layer's directory holds only its own changes, a few layers at once, each
              as soon as its blob is in, into a staging directory, then adopted in
              order; on vfs (and for a layer that needs the layers below it), in order
              into a new active snapshot over its parent, then committed
    record    the image, its tags and its layers in one transaction, last

So a pull killed at any point has recorded nothing: the image is absent, not broken.
What it left (blobs, partial ingests, committed snapshots) is either picked up by the
next pull or collected by garbage collection. While a pull runs, a lease in the
database names the blobs and snapshots it made, so that a concurrent prune keeps
them; a lease whose process is dead is stale and ignored.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import fnmatch
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import msgspec

from dockyard.engine.config import RegistryOptions
from dockyard.engine.db import Database
from dockyard.engine.events import EventLog
from dockyard.engine.progress import Event, Progress, Status, short_id
from dockyard.errors import (
    Conflict,
    DockyardError,
    InvalidArgument,
    NotFound,
    Timeout,
    Unavailable,
)
from dockyard.images import reference as references
from dockyard.images.manifest import ACCEPT, check_config, check_image
from dockyard.images.platform import format_platform, host_platform, matches, parse_platform, select
from dockyard.oci.image import (
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    chain_ids,
    load_config,
    load_manifest,
    parse_any,
)
from dockyard.storage.content import ContentStore
from dockyard.storage.durable import pid_alive
from dockyard.storage.snapshots import Kind, Mount, Snapshotter, choose

if TYPE_CHECKING:
    from concurrent.futures import Future

    from dockyard.storage.layers import Assumptions

_CHUNK = 1 << 20
# Attempts per blob: a dropped connection resumes from what the ingest holds.
_ATTEMPTS = 3
# Prefix of the active snapshots a pull unpacks into, followed by the pull's pid, so
# that garbage collection recognises those of a dead pull.
_EXTRACT_PREFIX = "extract-"
_HEX_ID = re.compile(r"[0-9a-f]{1,64}")
_FILTERS = frozenset({"dangling", "reference", "label", "before", "since"})


class ImageInfo(msgspec.Struct, frozen=True):
    """What a pull (or ``add_image``) recorded. (These records are msgspec Structs,
    not dataclasses: a dataclass costs every command that imports this ~0.4 ms.)"""

    id: str
    reference: str
    manifest_digest: str
    repo_digest: str | None
    platform: str
    size: int


class ImageSummary(msgspec.Struct, frozen=True):
    """One line of ``dockyard images``, as Docker's ``ImageSummary``."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: int
    size: int
    labels: dict[str, str] = {}  # a new one for each instance


class _Reporter:
    """Calls the caller's ``Progress`` from one thread at a time, or does nothing."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if self._progress is not None:
            with self._lock:
                self._progress(event)


class _Lease:
    """The blobs and snapshots one operation in progress holds against collection."""

    def __init__(self, db: Database, lease_id: str) -> None:
        self._db = db
        self.id = lease_id

    def hold(self, kind: str, ref: str) -> None:
        """Keep ``ref`` (a blob digest or a snapshot key) until the lease ends."""
        with self._db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO lease_resources VALUES (?, ?, ?)",
                         (self.id, kind, ref))


class _Counting:
    """A read-only stream that reports how many bytes went through it, every MiB."""

    def __init__(self, raw: BinaryIO, report: Callable[[int], None]) -> None:
        self._raw = raw
        self._report = report
        self.count = 0
        self._reported = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.count += len(data)
        if self.count - self._reported >= _CHUNK or (not data and self.count > self._reported):
            self._reported = self.count
            self._report(self.count)
        return data

    def seekable(self) -> bool:
        return self._raw.seekable()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self.count = self._reported = pos
        return self._raw.seek(pos, whence)


class _Pulled(msgspec.Struct, frozen=True):
    """What ``_store_image`` records of one image."""

    manifest_data: bytes
    manifest_digest: str
    manifest_media_type: str
    manifest: Manifest
    config: ImageConfig
    config_digest: str
    chains: Sequence[Digest]
    names: Sequence[str]
    source: tuple[str, str] | None  # (registry, repository) the blobs came from


class _Staged(msgspec.Struct, frozen=True):
    """A layer unpacked apart from the layers below it, waiting to be adopted."""

    directory: str
    size: int
    assumptions: Assumptions


def _timestamp(created: str | None) -> float:
    """Unix time of an RFC 3339 ``created``; 0 when absent or unreadable.

    Go writes nanoseconds, which ``fromisoformat`` does not take: cut to microseconds.
    """
    if not created:
        return 0.0
    text = re.sub(r"(\.\d{6})\d+", r"\1", created.replace("Z", "+00:00"))
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _rfc3339(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat().replace(
        "+00:00", "Z")


def _name_of(ref: references.Reference) -> str:
    """The tags-table name of a reference: ``repo@digest`` when pinned, else ``repo:tag``."""
    if ref.digest is not None:
        return f"{ref.name}@{ref.digest}"
    return f"{ref.name}:{ref.tag}"


def _familiar(name: str) -> str:
    return references.parse(name).familiar()


def _check_diff_id(desc: Descriptor, got: str, diff_id: str) -> None:
    if got != diff_id:
        raise InvalidArgument(f"layer {desc.digest} unpacks to {got}, but the image "
                              f"config says {diff_id}: the image is corrupt")


def _apply_target(mounts: Sequence[Mount]) -> tuple[str, list[str]]:
    """The directory a layer is unpacked into and the lower layers, from the mounts of a
    fresh active snapshot, without mounting it (containerd's overlay fast path): a bind
    mount is the snapshot's own tree (vfs, or overlay's bottom layer); an overlay mount
    names its upperdir and lowerdirs. Nothing mounted means nothing left mounted by a
    pull that is killed."""
    if len(mounts) != 1:
        raise Unavailable(f"cannot unpack into a snapshot of {len(mounts)} mounts")
    mount = mounts[0]
    if mount.type == "bind":
        return mount.source, []
    options = dict(o.split("=", 1) for o in mount.options if "=" in o)
    return options["upperdir"], options["lowerdir"].split(":")


class ImageService:
    """The images of one root.

    ``storage_driver`` is ``overlay`` or ``vfs`` (default: overlay where it works).
    ``in_use(image_id)`` says whether a container uses an image: such an image is not
    removed without ``force`` (the container service will provide it). ``db`` is the
    root's state database when the caller has it open already.
    """

    def __init__(self, root: str, *, storage_driver: str | None = None,
                 registries: RegistryOptions | None = None,
                 in_use: Callable[[str], bool] | None = None,
                 db: Database | None = None) -> None:
        self.root = os.path.abspath(root)
        self.db = db or Database(self.root)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshots: Snapshotter = choose(os.path.join(self.root, "snapshots"),
                                             storage_driver)
        self.registries = registries or RegistryOptions()
        self.in_use = in_use or (lambda image_id: False)
        self.events = EventLog(self.root)

    # --- pull -----------------------------------------------------------------------------

    def _client(self, domain: str) -> Any:
        # Imported here: the registry client is not on the path of `run`.
        from dockyard.images.registry import RegistryClient, load_credentials

        host = references.registry_host(domain)
        insecure = True if host in self.registries.insecure else None
        return RegistryClient(host, insecure=insecure,
                              credentials=load_credentials(host, self.registries.auth_file))

    def pull(self, ref: str, *, platform: str | None = None,
             progress: Progress | None = None) -> ImageInfo:
        """Pull ``ref`` from its registry; return the image recorded.

        ``platform`` (``os/arch[/variant]``) picks the manifest of an index; it
        defaults to the host's. Blobs already in the store are not fetched again, and
        layers already unpacked (by any image) are not unpacked again.
        """
        reference = references.parse(ref)
        report = _Reporter(progress)
        want = parse_platform(platform) if platform else host_platform()
        with self._client(reference.domain) as client, self._lease() as lease:
            repo = reference.path
            report(Event(str(reference), Status.RESOLVING))
            top = client.get_manifest(repo, reference.digest or reference.tag, ACCEPT)
            document = parse_any(top.data, top.media_type)
            chosen = top
            if isinstance(document, Index):
                entry = select(document.manifests, want)
                chosen = client.get_manifest(repo, entry.digest, ACCEPT)
                document = parse_any(chosen.data, chosen.media_type)
                if isinstance(document, Index):
                    raise InvalidArgument(f"{reference}: the index entry for "
                                          f"{format_platform(want)} is an index itself; "
                                          "nested indexes are not supported")
            check_image(document)
            config_data = self._fetch_bytes(client, repo, document.config, lease)
            config = load_config(config_data)
            check_config(document, config)
            got = Platform(architecture=config.architecture, os=config.os,
                           variant=config.variant)
            if platform and not matches(want, got):
                raise NotFound(f"{reference} is for {format_platform(got)}, not "
                               f"{format_platform(want)}")
            chains = self._fetch_layers(client, repo, document, config, lease, report)
            self._put(chosen.data, chosen.digest, lease)
            names = [f"{reference.name}@{top.digest}"]
            if reference.tag is not None and reference.digest is None:
                names.insert(0, f"{reference.name}:{reference.tag}")
            info = self._store_image(_Pulled(
                chosen.data, chosen.digest, chosen.media_type, document, config,
                document.config.digest, chains, names,
                (references.registry_host(reference.domain), repo)))
        report(Event(str(reference), Status.DIGEST, detail=top.digest))
        self.events.image("pull", reference.familiar(), reference.familiar())
        return info

    def _fetch_bytes(self, client: Any, repo: str, desc: Descriptor, lease: _Lease) -> bytes:
        """A small blob (a config), from the store or the registry, checked."""
        lease.hold("blob", desc.digest)
        if not self.content.exists(desc.digest):
            self._download(client, repo, desc, lambda event: None, threading.Event())
        with self.content.open(desc.digest) as blob:
            return blob.read()

    def _put(self, data: bytes, digest: str, lease: _Lease | None) -> None:
        """Store ``data`` (a manifest) as the blob ``digest``, checked."""
        if lease is not None:
            lease.hold("blob", digest)
        if not self.content.exists(digest):
            with self.content.writer(digest, len(data)) as writer:
                writer.write(data)
                writer.commit()

    def _download(self, client: Any, repo: str, desc: Descriptor, report: _Reporter |
                  Callable[[Event], None], stop: threading.Event) -> None:
        """Stream one blob into the content store, resuming a partial ingest; a dropped
        connection is resumed too, up to ``_ATTEMPTS`` times."""
        sid = short_id(desc.digest)
        for attempt in range(1, _ATTEMPTS + 1):
            with self.content.writer(desc.digest, desc.size, resume=True) as writer:
                try:
                    with contextlib.closing(client.get_blob(repo, desc.digest,
                                                            writer.offset)) as stream:
                        while chunk := stream.read(_CHUNK):
                            if stop.is_set():
                                return
                            writer.write(chunk)
                            report(Event(sid, Status.DOWNLOADING, writer.offset, desc.size))
                    if writer.offset < desc.size:
                        raise Unavailable(f"the registry sent {writer.offset} of the "
                                          f"{desc.size} bytes of blob {desc.digest}")
                except (Unavailable, Timeout):
                    if attempt == _ATTEMPTS:
                        raise
                    continue
                report(Event(sid, Status.VERIFYING))
                try:
                    writer.commit()
                except InvalidArgument as error:
                    raise InvalidArgument(f"blob {desc.digest} of {repo}: {error}") from None
                report(Event(sid, Status.DOWNLOAD_COMPLETE))
                return

    def _fetch_layers(self, client: Any, repo: str, manifest: Manifest, config: ImageConfig,
                      lease: _Lease, report: _Reporter) -> list[Digest]:
        """Download the layers the store lacks and unpack them all; return their
        ChainIDs."""
        chains = chain_ids(config.rootfs.diff_ids)
        for desc, chain in zip(manifest.layers, chains, strict=True):
            lease.hold("blob", desc.digest)
            lease.hold("snapshot", chain)
        self._unpack_layers(manifest.layers, config.rootfs.diff_ids, chains, report,
                            lambda desc, stop: self._download(client, repo, desc, report,
                                                              stop))
        return chains

    def _unpack_layers(self, layers: Sequence[Descriptor], diff_ids: Sequence[str],
                       chains: Sequence[Digest], report: Callable[[Event], None],
                       download: Callable[[Descriptor, threading.Event], None] | None = None
                       ) -> None:
        """Unpack each layer as the committed snapshot of its ChainID and record it;
        ``download`` first fetches the blobs the store lacks, ``max_downloads`` at once.

        Where a snapshot holds only its own changes (overlay), a layer can be unpacked
        before the layers below it: each is unpacked apart into a staging directory as
        soon as its blob is in, ``os.cpu_count()`` at once (inflating, hashing and
        writing release the GIL), and the staged layers are adopted in order. Otherwise
        (vfs, or a layer that needs the layers below), a layer is unpacked in order over
        its committed parent, as soon as it and those below it are in.
        """
        # Here, not at the top: concurrent.futures (and logging) cost `run` ~3 ms.
        from concurrent.futures import ThreadPoolExecutor

        apart = self.snapshots.stores_diffs
        stop = threading.Event()
        # Every staging started, so that a failed pull removes those it did not adopt.
        started: list[Future[_Staged | None]] = []

        with ThreadPoolExecutor(max(1, self.registries.max_downloads),
                                thread_name_prefix="pull") as fetchers, \
                ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="unpack") as unpackers:

            def stage(position: int) -> Future[_Staged | None] | None:
                if not apart or self._committed(chains[position]):
                    return None
                future = unpackers.submit(self._stage, layers[position], diff_ids[position],
                                          report)
                started.append(future)
                return future

            def fetch_then_stage(position: int) -> Future[_Staged | None] | None:
                assert download is not None
                download(layers[position], stop)
                return None if stop.is_set() else stage(position)

            # Per layer: its download, which starts its staging (None: the blob is in the
            # store), or its staging started at once.
            fetching: list[Future[Future[_Staged | None] | None] | None] = []
            staging: list[Future[_Staged | None] | None] = []
            try:
                for position, desc in enumerate(layers):
                    if download is not None and not self.content.exists(desc.digest):
                        report(Event(short_id(desc.digest), Status.WAITING))
                        fetching.append(fetchers.submit(fetch_then_stage, position))
                        staging.append(None)
                    else:
                        fetching.append(None)
                        staging.append(stage(position))
                for position, desc in enumerate(layers):
                    fetched = fetching[position]
                    started_at = fetched.result() if fetched is not None else staging[position]
                    self._unpack(desc, diff_ids[position], chains, position, report,
                                 downloaded=fetched is not None,
                                 staged=started_at.result() if started_at is not None else None)
            except BaseException:
                # Downloads in flight stop at their next chunk (their ingests stay for the
                # next pull to resume); stagings in flight finish, then what was staged and
                # not adopted goes (an adopted one was moved: its path is gone).
                stop.set()
                fetchers.shutdown(wait=True, cancel_futures=True)
                unpackers.shutdown(wait=True, cancel_futures=True)
                for future in started:
                    if (not future.cancelled() and future.exception() is None
                            and (staged := future.result()) is not None):
                        shutil.rmtree(staged.directory, ignore_errors=True)
                raise

    def _committed(self, key: str) -> bool:
        try:
            return self.snapshots.stat(key).kind is Kind.COMMITTED
        except NotFound:
            return False

    def _stage(self, desc: Descriptor, diff_id: str,
               report: Callable[[Event], None]) -> _Staged | None:
        """Unpack a layer apart from the layers below it into a staging directory; None
        when an entry needs them (a hard link to a file only they have): the layer is
        then unpacked in order. Found out while unpacking, not by a look at the layer
        first: that would inflate every layer twice, where this costs only the part
        done, and only for such a layer."""
        from dockyard.storage.layers import LowerLayersNeeded, apply_layer_apart

        directory = self.snapshots.stage()
        try:
            with self._layer_stream(desc, report) as stream:
                got, size, assumptions = apply_layer_apart(stream, directory,
                                                           media_type=desc.media_type)
            _check_diff_id(desc, got, diff_id)
            return _Staged(directory, size, assumptions)
        except BaseException as error:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(error, LowerLayersNeeded):
                return None
            raise

    @contextlib.contextmanager
    def _layer_stream(self, desc: Descriptor,
                      report: Callable[[Event], None]) -> Iterator[BinaryIO]:
        """The layer's blob, reporting the extraction's progress as it is read."""
        sid = short_id(desc.digest)
        with self.content.open(desc.digest) as blob:
            # A stream by duck typing: it has what apply_layer reads through.
            yield cast(BinaryIO, _Counting(blob, lambda n: report(
                Event(sid, Status.EXTRACTING, n, desc.size))))

    def _unpack(self, desc: Descriptor, diff_id: str, chains: Sequence[Digest], position: int,
                report: Callable[[Event], None], *, downloaded: bool = True,
                staged: _Staged | None = None) -> None:
        """Make the committed snapshot of the layer ``position``'s ChainID, unless there is
        one already: adopt ``staged`` if it is what unpacking over the layers below
        makes, else unpack the layer into an active snapshot over its parent and commit
        that. Record it in ``layers``."""
        sid = short_id(desc.digest)
        chain = chains[position]
        parent = chains[position - 1] if position else None
        if staged is not None and staged.assumptions.hold(
                staged.directory, self.snapshots.layers(parent) if parent else []):
            size = staged.size
            try:
                self.snapshots.adopt(chain, parent, staged.directory)
            except Conflict:
                # Another pull committed the same layer meanwhile: use theirs.
                shutil.rmtree(staged.directory, ignore_errors=True)
        else:
            if staged is not None:
                # A directory it does not list is not what the layers below have.
                shutil.rmtree(staged.directory, ignore_errors=True)
            if self._committed(chain):
                report(Event(sid, Status.PULL_COMPLETE if downloaded
                             else Status.ALREADY_EXISTS))
                self._record_layer(chain, diff_id, parent, None)
                return
            size = self._unpack_over_parent(desc, diff_id, chain, parent, report)
        self._record_layer(chain, diff_id, parent, size)
        report(Event(sid, Status.PULL_COMPLETE))

    def _unpack_over_parent(self, desc: Descriptor, diff_id: str, chain: str,
                            parent: str | None, report: Callable[[Event], None]) -> int:
        """Unpack the layer into a new active snapshot over ``parent`` and commit it as
        ``chain``; return the layer's size."""
        # Here and in _stage, not at the top: layer code (tarfile, gzip) is not on the
        # path of `run`.
        from dockyard.storage.layers import apply_layer

        key = f"{_EXTRACT_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        target, lowers = _apply_target(self.snapshots.prepare(key, parent))
        try:
            with self._layer_stream(desc, report) as stream:
                got, size = apply_layer(stream, target, media_type=desc.media_type,
                                        whiteout_mode=self._whiteouts(), lowers=lowers)
            _check_diff_id(desc, got, diff_id)
            try:
                self.snapshots.commit(chain, key)
            except Conflict:
                # Another pull committed the same layer meanwhile: use theirs.
                self.snapshots.remove(key)
        except BaseException:
            with contextlib.suppress(DockyardError, OSError):
                self.snapshots.remove(key)
            raise
        return size

    def _whiteouts(self) -> str:
        return "overlay" if self.snapshots.driver == "overlay" else "vfs"

    def _record_layer(self, chain: str, diff_id: str, parent: str | None,
                      size: int | None) -> None:
        """Record a committed snapshot. ``size`` None: it was committed by an earlier
        pull; a pull killed between its commit and this row left no size, so its disk
        usage stands in."""
        if size is None:
            if self.db.query("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)):
                return
            size = self.snapshots.usage(chain).size
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO layers VALUES (?, ?, ?, ?, ?)",
                         (chain, diff_id, parent, chain, size))

    @contextlib.contextmanager
    def _lease(self) -> Iterator[_Lease]:
        lease = _Lease(self.db, os.urandom(8).hex())
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO leases VALUES (?, ?, ?)",
                         (lease.id, os.getpid(), time.time()))
        try:
            yield lease
        finally:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM leases WHERE id = ?", (lease.id,))

    def _store_image(self, image: _Pulled) -> ImageInfo:
        """Record the image, its layers and names in one transaction."""
        image_id = image.config_digest
        platform = format_platform(Platform(architecture=image.config.architecture,
                                            os=image.config.os, variant=image.config.variant))
        blobs = {image.manifest_digest, image.config_digest,
                 *(d.digest for d in image.manifest.layers)}
        now = time.time()
        with self.db.transaction() as conn:
            sizes = {row["chain_id"]: row["size"] for row in conn.execute(
                f"SELECT chain_id, size FROM layers WHERE chain_id IN "
                f"({','.join('?' * len(image.chains))})", list(image.chains))}
            size = sum(sizes.get(c, 0) for c in image.chains)
            conn.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                "SET manifest_digest = excluded.manifest_digest, manifest_media_type = "
                "excluded.manifest_media_type, added = excluded.added",
                (image_id, image.manifest_digest, image.manifest_media_type, platform,
                 image.config.created or "", size,
                 image.chains[-1] if image.chains else None, now))
            conn.executemany("INSERT OR IGNORE INTO image_blobs VALUES (?, ?)",
                             [(image_id, d) for d in blobs])
            conn.execute("DELETE FROM image_layers WHERE image_id = ?", (image_id,))
            conn.executemany("INSERT INTO image_layers VALUES (?, ?, ?)",
                             [(image_id, i, c) for i, c in enumerate(image.chains)])
            for name in image.names:
                self._set_tag(conn, name, image_id, image.manifest_digest, now)
            if image.source is not None:
                conn.executemany("INSERT OR IGNORE INTO blob_sources VALUES (?, ?, ?)",
                                 [(d, *image.source) for d in blobs])
        digest = next((n.partition("@")[2] for n in image.names if "@" in n), None)
        return ImageInfo(image_id, image.names[0] if image.names else image_id,
                         image.manifest_digest, digest, platform, size)

    @staticmethod
    def _set_tag(conn: Any, name: str, image_id: str, manifest_digest: str,
                 now: float) -> None:
        conn.execute("INSERT INTO tags VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                     "image_id = excluded.image_id, manifest_digest = excluded.manifest_digest, "
                     "added = excluded.added", (name, image_id, manifest_digest, now))

    def add_image(self, manifest_data: bytes, config_data: bytes, tags: Sequence[str] = (),
                  *, media_type: str | None = None) -> ImageInfo:
        """Record an image whose layer blobs are in the content store already (for load,
        import and bootstrap): the manifest and config are stored, the layers unpacked
        and checked, and the image tagged with ``tags``."""
        manifest = load_manifest(manifest_data)
        check_image(manifest)
        config = load_config(config_data)
        check_config(manifest, config)
        manifest_digest = Digest.of(manifest_data)
        config_digest = Digest.of(config_data)
        if config_digest != manifest.config.digest:
            raise InvalidArgument(f"the config given hashes to {config_digest}, but the "
                                  f"manifest names {manifest.config.digest}")
        names = [_name_of(references.parse(tag)) for tag in tags]
        with self._lease() as lease:
            for desc in manifest.layers:
                lease.hold("blob", desc.digest)
                if not self.content.exists(desc.digest):
                    raise NotFound(f"layer blob {desc.digest} is not in the content store")
            self._put(config_data, config_digest, lease)
            self._put(manifest_data, manifest_digest, lease)
            chains = chain_ids(config.rootfs.diff_ids)
            for chain in chains:
                lease.hold("snapshot", chain)
            self._unpack_layers(manifest.layers, config.rootfs.diff_ids, chains,
                                lambda event: None)
            return self._store_image(_Pulled(
                manifest_data, manifest_digest,
                media_type or manifest.media_type or "application/vnd.oci.image.manifest.v1+json",
                manifest, config, config_digest, chains, names, None))

    # --- archives and base images ---------------------------------------------------------

    def save(self, refs: Sequence[str], out: BinaryIO) -> None:
        """Write the images named by ``refs`` to ``out`` as a docker-archive (``docker
        save``); a reference keeps its tag, an image ID saves the image untagged."""
        from dockyard.images.archive import save_docker_archive

        chosen: dict[str, tuple[Descriptor, builtins.list[str]]] = {}
        for ref in refs:
            image_id = self.resolve(ref)
            row = self.db.query("SELECT manifest_digest, manifest_media_type FROM images "
                                "WHERE id = ?", (image_id,))[0]
            digest = row["manifest_digest"]
            descriptor, tags = chosen.get(image_id, (Descriptor(
                media_type=row["manifest_media_type"], digest=digest,
                size=self.content.info(digest).size), []))
            name = self._tag_named(ref)
            if name is not None:
                tags.append(name)
            chosen[image_id] = (descriptor, tags)
        save_docker_archive(self.content, list(chosen.values()), out)
        for image_id in chosen:
            self.events.image("save", image_id, image_id)

    def load(self, stream: BinaryIO) -> builtins.list[str]:
        """Load every image of a docker-archive or OCI-layout tarball (``docker load``);
        returns Docker's ``Loaded image: NAME`` / ``Loaded image ID: ID`` lines."""
        from dockyard.images.archive import load_archive

        lines = []
        for loaded in load_archive(self.content, stream):
            with self.content.open(loaded.manifest.digest) as f:
                manifest_data = f.read()
            with self.content.open(loaded.config) as f:
                config_data = f.read()
            info = self.add_image(manifest_data, config_data, loaded.tags,
                                  media_type=loaded.manifest.media_type)
            self.events.image("load", info.id, info.id)
            lines += [f"Loaded image: {_familiar(tag)}" for tag in loaded.tags] or \
                [f"Loaded image ID: {info.id}"]
        return lines

    def import_image(self, stream: BinaryIO, ref: str | None = None, *,
                     changes: Sequence[str] = (), message: str | None = None) -> ImageInfo:
        """Make an image of a root filesystem tarball (``docker import``)."""
        from dockyard.images.rootfs_tar import import_rootfs

        descriptor, config_digest = import_rootfs(self.content, stream, changes=changes,
                                                  message=message)
        info = self._add_stored(descriptor.digest, config_digest, [ref] if ref else [])
        self.events.image("import", info.id, info.id)
        return info

    def bootstrap(self, name: str) -> ImageInfo:
        """Build a base image without a registry: ``busybox`` from the busybox-static
        binary, ``debian[:SUITE]`` with debootstrap from the host's package mirror."""
        from dockyard.images import bootstrap

        reference = references.parse(name)
        base = reference.path.removeprefix("library/")
        if reference.domain != references.DEFAULT_DOMAIN or base not in ("busybox", "debian"):
            raise InvalidArgument(f"cannot bootstrap {name!r}: only busybox and "
                                  "debian[:SUITE] can be built without a registry")
        tags = [str(reference)]
        if base == "busybox":
            result = bootstrap.bootstrap_busybox(self.content)
        else:
            # debian:latest is today's stable release, as on Docker Hub.
            suite = "bookworm" if reference.tag == references.DEFAULT_TAG else reference.tag
            result = bootstrap.bootstrap_debian(self.content, suite)
            tags.append(f"debian:{suite}")
        return self._add_stored(result.manifest.digest, result.config_digest, tags)

    def _tag_named(self, ref: str) -> str | None:
        """The full tag ``ref`` names, or None when it is an image ID (or its prefix)."""
        try:
            name = _name_of(references.parse(ref))
        except InvalidArgument:
            return None
        found = self.db.query("SELECT 1 FROM tags WHERE name = ?", (name,))
        return name if found else None

    def _add_stored(self, manifest_digest: str, config_digest: str,
                    tags: Sequence[str]) -> ImageInfo:
        with self.content.open(manifest_digest) as f:
            manifest_data = f.read()
        with self.content.open(config_digest) as f:
            config_data = f.read()
        return self.add_image(manifest_data, config_data, tags)

    # --- push -----------------------------------------------------------------------------

    def push(self, ref: str, *, progress: Progress | None = None) -> str:
        """Push the image tagged ``ref`` to its registry; return the manifest digest.

        Blobs the registry has are skipped; one it has in another repository we pulled
        it from (or pushed it to) is mounted from there rather than uploaded. The
        single-platform manifest is pushed, even when the image was pulled by an index.
        """
        reference = references.parse(ref)
        if reference.digest is not None:
            raise InvalidArgument(f"cannot push {ref}: push a tag, not a digest")
        name = _name_of(reference)
        rows = self.db.query("SELECT t.image_id, i.manifest_digest, i.manifest_media_type "
                             "FROM tags t JOIN images i ON i.id = t.image_id WHERE t.name = ?",
                             (name,))
        if not rows:
            raise NotFound(f"an image does not exist locally with the tag: "
                           f"{reference.familiar()}")
        manifest_digest, media_type = rows[0]["manifest_digest"], rows[0]["manifest_media_type"]
        with self.content.open(manifest_digest) as blob:
            manifest_data = blob.read()
        manifest = load_manifest(manifest_data)
        registry = references.registry_host(reference.domain)
        repo = reference.path
        report = _Reporter(progress)
        with self._client(reference.domain) as client:
            for desc in [*manifest.layers, manifest.config]:
                self._push_blob(client, registry, repo, desc, report)
            digest: str = client.put_manifest(repo, reference.tag or "latest", manifest_data,
                                              media_type)
        with self.db.transaction() as conn:
            self._set_tag(conn, f"{reference.name}@{digest}", rows[0]["image_id"],
                          manifest_digest, time.time())
        report(Event(str(reference), Status.DIGEST, detail=digest))
        self.events.image("push", reference.familiar(), reference.familiar())
        return digest

    def _push_blob(self, client: Any, registry: str, repo: str, desc: Descriptor,
                   report: _Reporter) -> None:
        sid = short_id(desc.digest)
        report(Event(sid, Status.PREPARING))
        sources = [row["repository"] for row in self.db.query(
            "SELECT repository FROM blob_sources WHERE digest = ? AND registry = ? "
            "AND repository != ?", (desc.digest, registry, repo))]
        mount_from = sources[0] if sources else None
        with self.content.open(desc.digest) as blob:
            counted = _Counting(blob, lambda n: report(
                Event(sid, Status.PUSHING, n, desc.size)))
            result = client.push_blob(repo, desc.digest, desc.size, counted,
                                      mount_from=mount_from)
        status = {"exists": Status.LAYER_EXISTS, "mounted": Status.MOUNTED,
                  "uploaded": Status.PUSHED}[result]
        report(Event(sid, status, detail=f"from {mount_from}" if result == "mounted" else None))
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO blob_sources VALUES (?, ?, ?)",
                         (desc.digest, registry, repo))

    # --- names and lookups ----------------------------------------------------------------

    def _lookup(self, ref_or_id: str) -> tuple[str, str | None]:
        """The image ``ref_or_id`` names, and the tags-table name when it was a reference.

        As Docker: a full ID, then a reference, then a unique ID prefix.
        """
        hexa = ref_or_id.removeprefix("sha256:")
        if len(hexa) == 64 and _HEX_ID.fullmatch(hexa) and self.db.query(
                "SELECT 1 FROM images WHERE id = ?", (f"sha256:{hexa}",)):
            return f"sha256:{hexa}", None
        if not ref_or_id.startswith("sha256:"):
            with contextlib.suppress(InvalidArgument):
                name = _name_of(references.parse(ref_or_id))
                rows = self.db.query("SELECT image_id FROM tags WHERE name = ?", (name,))
                if rows:
                    return rows[0]["image_id"], name
        if _HEX_ID.fullmatch(hexa):
            rows = self.db.query("SELECT id FROM images WHERE id LIKE ?",
                                 (f"sha256:{hexa}%",))
            if len(rows) > 1:
                raise InvalidArgument(f"{ref_or_id} is ambiguous: {len(rows)} images have "
                                      "an ID that starts with it; give more digits")
            if rows:
                return rows[0]["id"], None
        raise NotFound(f"No such image: {ref_or_id}")

    def resolve(self, ref_or_id: str) -> str:
        """The ID of the image ``ref_or_id`` names (a reference, an ID or an ID prefix)."""
        return self._lookup(ref_or_id)[0]

    def tag(self, source: str, target: str) -> None:
        """Give the image ``source`` names the tag ``target`` (moved from another image
        if it had it)."""
        image_id = self.resolve(source)
        reference = references.parse(target)
        if reference.digest is not None:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {target}")
        with self.db.transaction() as conn:
            row = conn.execute("SELECT manifest_digest FROM images WHERE id = ?",
                               (image_id,)).fetchone()
            self._set_tag(conn, _name_of(reference), image_id, row[0], time.time())
        self.events.image("tag", image_id, reference.familiar())

    def _names(self, image_id: str) -> tuple[list[str], list[str]]:
        """The repo tags and repo digests of an image, in full form."""
        names = [row["name"] for row in self.db.query(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY name", (image_id,))]
        return [n for n in names if "@" not in n], [n for n in names if "@" in n]

    # --- removal and garbage collection ---------------------------------------------------

    def remove(self, ref_or_id: str, *, force: bool = False) -> list[str]:
        """Untag ``ref_or_id``, and delete the image when that was its last tag or its ID
        was given; return Docker's ``Untagged: ...`` / ``Deleted: ...`` lines.

        An ID of an image with several tags, or an image a container uses, needs
        ``force``.
        """
        image_id, name = self._lookup(ref_or_id)
        tags, _ = self._names(image_id)
        if name is not None and set(tags) - {name}:
            # Other tags keep the image: only this name goes.
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM tags WHERE name = ?", (name,))
            self.events.image("untag", image_id, image_id)
            return [f"Untagged: {_familiar(name)}"]
        if not force and name is None and len(tags) > 1:
            raise Conflict(f"conflict: unable to delete {short_id(image_id)} (must be forced) "
                           "- image is referenced in multiple repositories")
        if not force and self.in_use(image_id):
            raise Conflict(f"conflict: unable to remove {ref_or_id} (must be forced) - "
                           f"image {short_id(image_id)} is being used by a container")
        lines = self._delete_image(image_id)
        self.collect()
        return lines

    def _delete_image(self, image_id: str) -> list[str]:
        tags, digests = self._names(image_id)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
        for _ in tags + digests:
            self.events.image("untag", image_id, image_id)
        self.events.image("delete", image_id, image_id)
        return [f"Untagged: {_familiar(n)}" for n in tags + digests] + [f"Deleted: {image_id}"]

    def prune(self, *, all: bool = False) -> tuple[list[str], int]:
        """Delete dangling images (no tag), or with ``all`` every image no container
        uses, then collect garbage; return the lines and the bytes reclaimed."""
        lines: list[str] = []
        for row in self.db.query("SELECT id FROM images ORDER BY added"):
            tags, _ = self._names(row["id"])
            if (all or not tags) and not self.in_use(row["id"]):
                lines += self._delete_image(row["id"])
        return lines, self.collect()

    def collect(self) -> int:
        """Garbage collection: delete the blobs and snapshots no image and no live lease
        holds, and what dead pulls left; return the bytes reclaimed.

        It runs inside one write transaction, so that no pull can take hold of a blob
        between the decision and the deletion: a pull takes its hold before it looks
        whether the blob is there.
        """
        reclaimed = 0
        with self.db.transaction() as conn:
            for row in conn.execute("SELECT id, pid FROM leases").fetchall():
                if not pid_alive(row["pid"]):
                    conn.execute("DELETE FROM leases WHERE id = ?", (row["id"],))
            held = {(row[0], row[1]) for row in conn.execute(
                "SELECT kind, ref FROM lease_resources")}
            blobs = {row[0] for row in conn.execute("SELECT digest FROM image_blobs")}
            blobs |= {ref for kind, ref in held if kind == "blob"}
            for info in list(self.content.walk()):
                if info.digest not in blobs:
                    with contextlib.suppress(NotFound):
                        self.content.delete(info.digest)
                        reclaimed += info.size
            chains = {row[0] for row in conn.execute("SELECT chain_id FROM image_layers")}
            chains |= {ref for kind, ref in held if kind == "snapshot"}
            reclaimed += self._collect_snapshots(conn, chains)
        self.snapshots.cleanup()
        return reclaimed

    def _collect_snapshots(self, conn: Any, keep: set[str]) -> int:
        """Remove unheld committed snapshots (children first: a parent cannot go before
        them) and active ones a dead pull was extracting into."""
        reclaimed = 0
        removed = True
        while removed:
            removed = False
            for info in list(self.snapshots.walk()):
                if info.kind is Kind.COMMITTED:
                    garbage = info.name not in keep
                else:
                    pid = info.name.removeprefix(_EXTRACT_PREFIX).partition("-")[0]
                    garbage = (info.name.startswith(_EXTRACT_PREFIX) and pid.isdigit()
                               and not pid_alive(int(pid)))
                if not garbage:
                    continue
                with contextlib.suppress(Conflict, NotFound):
                    usage = self.snapshots.usage(info.name).size
                    self.snapshots.remove(info.name)
                    conn.execute("DELETE FROM layers WHERE chain_id = ?", (info.name,))
                    reclaimed += usage
                    removed = True
        return reclaimed

    # --- reading --------------------------------------------------------------------------

    def _image_row(self, image_id: str) -> Any:
        return self.db.query("SELECT * FROM images WHERE id = ?", (image_id,))[0]

    def _raw_config(self, image_id: str) -> dict[str, Any]:
        with self.content.open(image_id) as blob:
            config: dict[str, Any] = json.load(blob)
        return config

    def inspect(self, ref_or_id: str) -> dict[str, Any]:
        """The image in the shape of ``docker image inspect``."""
        image_id = self.resolve(ref_or_id)
        row = self._image_row(image_id)
        raw = self._raw_config(image_id)
        tags, digests = self._names(image_id)
        last_tag = self.db.query("SELECT max(added) FROM tags WHERE image_id = ?",
                                 (image_id,))[0][0]
        container_config = {
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
            "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
            "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
            "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
            **(raw.get("config") or {})}
        result: dict[str, Any] = {
            "Id": image_id,
            "RepoTags": [_familiar(n) for n in tags],
            "RepoDigests": [_familiar(n) for n in digests],
            "Parent": "",
            "Comment": raw.get("comment", ""),
            "Created": raw.get("created", ""),
            "DockerVersion": raw.get("docker_version", ""),
            "Author": raw.get("author", ""),
            "Config": container_config,
            "Architecture": raw.get("architecture", ""),
            "Os": raw.get("os", ""),
            "Size": row["size"],
            "GraphDriver": {"Name": self.snapshots.driver, "Data": None},
            "RootFS": {"Type": "layers", "Layers": list(raw.get("rootfs", {})
                                                        .get("diff_ids", []))},
            "Metadata": {"LastTagTime": _rfc3339(last_tag) if last_tag else ""},
        }
        if raw.get("variant"):
            result["Variant"] = raw["variant"]
        return result

    def history(self, ref_or_id: str) -> builtins.list[dict[str, Any]]:
        """The build steps of the image, newest first, as ``docker history`` shows them."""
        image_id = self.resolve(ref_or_id)
        config = load_config(json.dumps(self._raw_config(image_id)))
        sizes = [row["size"] for row in self.db.query(
            "SELECT l.size FROM image_layers il JOIN layers l ON l.chain_id = il.chain_id "
            "WHERE il.image_id = ? ORDER BY il.position", (image_id,))]
        steps = config.history or []
        entries: builtins.list[dict[str, Any]] = []
        layer = 0
        for step in steps:
            size = 0
            if not step.empty_layer and layer < len(sizes):
                size = sizes[layer]
                layer += 1
            entries.append({"Id": "<missing>", "Created": int(_timestamp(step.created)),
                            "CreatedBy": step.created_by or "", "Tags": None, "Size": size,
                            "Comment": step.comment or ""})
        # Layers the history does not account for (an image made without one).
        entries += [{"Id": "<missing>", "Created": int(_timestamp(config.created)),
                     "CreatedBy": "", "Tags": None, "Size": size, "Comment": ""}
                    for size in sizes[layer:]]
        if not entries:
            entries.append({"Id": "<missing>", "Created": int(_timestamp(config.created)),
                            "CreatedBy": "", "Tags": None, "Size": 0, "Comment": ""})
        entries.reverse()
        tags, _ = self._names(image_id)
        entries[0]["Id"] = image_id
        entries[0]["Tags"] = [_familiar(n) for n in tags] or None
        return entries

    def check(self) -> builtins.list[str]:
        """Re-hash every blob and check that every image has its manifest, config, layer
        blobs and snapshots; one line per problem (``dockyard system check``)."""
        problems = self.content.check()
        for row in self.db.query("SELECT image_id, digest FROM image_blobs ORDER BY image_id"):
            if not self.content.exists(row["digest"]):
                problems.append(f"image {short_id(row['image_id'])}: blob {row['digest']} "
                                "is missing")
        for row in self.db.query(
                "SELECT il.image_id, il.chain_id, l.snapshot_key FROM image_layers il "
                "LEFT JOIN layers l ON l.chain_id = il.chain_id ORDER BY il.image_id"):
            if row["snapshot_key"] is None:
                problems.append(f"image {short_id(row['image_id'])}: layer {row['chain_id']} "
                                "is not recorded")
            elif not self._committed(row["snapshot_key"]):
                problems.append(f"image {short_id(row['image_id'])}: the snapshot of layer "
                                f"{row['chain_id']} is missing")
        return problems

    def list(self, *, all: bool = False,
             filters: dict[str, builtins.list[str]] | None = None) -> builtins.list[ImageSummary]:
        """The images, newest first, as ``docker images`` lists them.

        ``filters``: ``dangling`` (true|false), ``reference`` (a glob on the name, with
        or without tag), ``label`` (``key`` or ``key=value``), ``before`` / ``since``
        (an image). ``all`` also lists the intermediate images of builds (the parents
        of the build cache's steps), which are hidden otherwise unless tagged.
        """
        filters = filters or {}
        unknown = set(filters) - _FILTERS
        if unknown:
            raise InvalidArgument(f"invalid filter {sorted(unknown)[0]!r}: use one of "
                                  f"{', '.join(sorted(_FILTERS))}")
        dangling = {v.lower() for v in filters.get("dangling", [])}
        if dangling - {"true", "false", "1", "0"}:
            raise InvalidArgument("invalid filter 'dangling': use true or false")
        bounds = {key: _timestamp(self._image_row(self.resolve(v[-1]))["created"])
                  for key in ("before", "since") if (v := filters.get(key))}
        hidden = set() if all else {
            r[0] for r in self.db.query("SELECT DISTINCT parent_id FROM build_cache")}
        result = []
        for row in self.db.query("SELECT * FROM images"):
            tags, digests = self._names(row["id"])
            if not tags and row["id"] in hidden:
                continue
            created = _timestamp(row["created"])
            labels = (self._raw_config(row["id"]).get("config") or {}).get("Labels") or {}
            if dangling and (not tags) != bool(dangling & {"true", "1"}):
                continue
            if "before" in bounds and created >= bounds["before"]:
                continue
            if "since" in bounds and created <= bounds["since"]:
                continue
            if not builtins.all(_label_matches(labels, want) for want in filters.get("label", [])):
                continue
            patterns = filters.get("reference", [])
            if patterns:
                # Like docker, an image matches by its tags, and shows only those.
                tags = [n for n in tags if any(_reference_matches(n, p) for p in patterns)]
                if not tags:
                    continue
            result.append(ImageSummary(row["id"], tuple(_familiar(n) for n in tags),
                                       tuple(_familiar(n) for n in digests), int(created),
                                       row["size"], dict(labels)))
        result.sort(key=lambda s: s.created, reverse=True)
        return result


def _label_matches(labels: dict[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _reference_matches(name: str, pattern: str) -> bool:
    """Docker's reference filter: the glob against the familiar name with and without
    its tag (``busybox``, ``busybox:latest``)."""
    ref = references.parse(name)
    return any(fnmatch.fnmatchcase(candidate, pattern)
               for candidate in (ref.familiar_name, ref.familiar()))
