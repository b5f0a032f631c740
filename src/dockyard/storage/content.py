"""A content-addressable store of blobs, named by their digest.

On-disk layout (version 1), under the store's root::

    blobs/<alg>/<hex>      committed blobs, read-only, never modified in place
    ingest/<alg>-<hex>/    an ingest of a known digest: ``data`` (the bytes so far) and
                           ``lock`` (flock'd by the one writer that owns the ingest)
    ingest/tmp-<random>/   an ingest whose digest is not known ahead, or a second writer
                           of a digest someone else is already ingesting

A blob is only ever made visible by ``rename(2)`` of a file that was hashed while it was
written, checked against the expected digest and size, and fsynced: a reader never sees
a partial blob, and a crash at any point leaves at most a stale ingest behind, which a
later writer of the same digest resumes or truncates.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.oci.image import Digest
from dockyard.storage.durable import fsync_dir

_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlobInfo:
    """What the store knows of a committed blob."""

    digest: Digest
    size: int


class Writer:
    """One ingest: bytes are hashed as they are written, and ``commit()`` publishes them.

    Use it as a context manager; leaving it without a commit keeps the partial data of a
    known digest for a later ``resume`` and deletes a temporary ingest.
    """

    def __init__(self, store: ContentStore, expected_digest: str | None,
                 expected_size: int | None, resume: bool) -> None:
        self._store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        alg = Digest(expected_digest).algorithm if expected_digest else "sha256"
        self._hash = hashlib.new(alg)
        self._lock_fd = -1
        self._fd = -1
        self._committed = False
        self._dir, self._resumable = self._claim_ingest(expected_digest)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        if not (resume and self._resumable):
            flags |= os.O_TRUNC
        self._fd = os.open(os.path.join(self._dir, "data"), flags, 0o600)
        self.offset = self._rehash() if resume and self._resumable else 0

    def _claim_ingest(self, digest: str | None) -> tuple[str, bool]:
        """The ingest directory this writer owns, and whether it is the shared, resumable one.

        The ingest of a digest is owned by whoever holds the flock on its ``lock`` file; a
        second concurrent writer of the same digest gets a private one instead, so both
        may finish and the second commit simply finds the blob there.
        """
        ingest = os.path.join(self._store.root, "ingest")
        if digest is not None:
            checked = Digest(digest)
            path = os.path.join(ingest, f"{checked.algorithm}-{checked.encoded}")
            os.makedirs(path, exist_ok=True)
            fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
            else:
                self._lock_fd = fd
                return path, True
        path = os.path.join(ingest, f"tmp-{secrets.token_hex(8)}")
        os.makedirs(path)
        return path, False

    def _rehash(self) -> int:
        """Feed the partial data of an earlier ingest to the hash: its state is not kept."""
        offset = 0
        while chunk := os.pread(self._fd, _CHUNK, offset):
            self._hash.update(chunk)
            offset += len(chunk)
        if self.expected_size is not None and offset > self.expected_size:
            # Longer than the blob can be: it cannot be a prefix of it, start over.
            os.ftruncate(self._fd, 0)
            self._hash = hashlib.new(self._hash.name)
            offset = 0
        os.lseek(self._fd, offset, os.SEEK_SET)
        return offset

    def write(self, data: bytes) -> int:
        """Append ``data``; refuse to go past the expected size."""
        if self.expected_size is not None and self.offset + len(data) > self.expected_size:
            raise InvalidArgument(f"blob {self.expected_digest or ''} is larger than its "
                                  f"expected size of {self.expected_size} bytes")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._hash.update(data)
        self.offset += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        """The digest of what was written so far."""
        return f"{self._hash.name}:{self._hash.hexdigest()}"

    def commit(self) -> Digest:
        """Check the size and digest, fsync, and move the blob into place; return its digest.

        A short ingest of a known digest stays for a resume; a wrong digest is deleted, so
        nothing of it is stored.
        """
        if self._committed:
            raise Conflict("the blob writer was committed already")
        if self.expected_size is not None and self.offset != self.expected_size:
            raise InvalidArgument(f"blob {self.expected_digest or ''} is short: got "
                                  f"{self.offset} of {self.expected_size} bytes; resume or "
                                  "fetch it again")
        actual = Digest(self.digest)
        if self.expected_digest is not None and actual != self.expected_digest:
            self.abort()
            raise InvalidArgument(f"blob digest mismatch: expected {self.expected_digest}, "
                                  f"got {actual}; the source sent different content")
        target = self._store.path(actual)
        if not os.path.exists(target):
            os.fsync(self._fd)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.fchmod(self._fd, 0o444)
            # rename(2) is atomic, and a racing writer of the same digest renames identical
            # bytes over it: readers see one blob or the other, both complete.
            os.rename(os.path.join(self._dir, "data"), target)
            fsync_dir(os.path.dirname(target))
        self._committed = True
        self._discard()
        return actual

    def _discard(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def close(self) -> None:
        """Release the ingest: a temporary one is deleted, a resumable one is kept."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._committed and not self._resumable:
            self._discard()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def abort(self) -> None:
        """Drop the ingest entirely, partial data included."""
        self.close()
        self._discard()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ContentStore:
    """Blobs by digest under ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(os.path.join(self.root, "blobs"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "ingest"), exist_ok=True)

    def path(self, digest: str) -> str:
        """Where the blob of ``digest`` lives (whether or not it is there)."""
        checked = Digest(digest)  # also keeps a digest from naming a path outside the store
        return os.path.join(self.root, "blobs", checked.algorithm, checked.encoded)

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None,
               *, resume: bool = False) -> Writer:
        """A ``Writer`` for one blob; with ``resume``, its ``offset`` says how many bytes of an
        earlier interrupted ingest of the same digest are kept (send only the rest)."""
        return Writer(self, expected_digest, expected_size, resume)

    def ingest(self, stream: BinaryIO, digest: str, size: int | None = None) -> str:
        """Copy ``stream`` into the store as the blob ``digest``, checked; return the digest."""
        if self.exists(digest):
            return digest
        with self.writer(digest, size) as writer:
            while chunk := stream.read(_CHUNK):
                writer.write(chunk)
            return writer.commit()

    def put(self, data: bytes, digest: str | None = None) -> BlobInfo:
        """Store ``data``, held in memory (a manifest, a config), as a blob unless it is
        there already; with ``digest``, the data is checked against it."""
        checked = Digest(digest) if digest is not None else Digest.of(data)
        if not self.exists(checked):
            with self.writer(checked, len(data)) as writer:
                writer.write(data)
                writer.commit()
        return BlobInfo(checked, len(data))

    def exists(self, digest: str) -> bool:
        """Whether the blob is committed."""
        return os.path.isfile(self.path(digest))

    def open(self, digest: str) -> BinaryIO:
        """The blob, opened for reading."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def info(self, digest: str) -> BlobInfo:
        """The blob's size."""
        try:
            return BlobInfo(Digest(digest), os.stat(self.path(digest)).st_size)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def delete(self, digest: str) -> None:
        """Remove the blob."""
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def walk(self) -> Iterator[BlobInfo]:
        """Every committed blob, in digest order."""
        blobs = os.path.join(self.root, "blobs")
        for alg in sorted(os.scandir(blobs), key=lambda e: e.name):
            if not alg.is_dir(follow_symlinks=False):
                continue
            for entry in sorted(os.scandir(alg.path), key=lambda e: e.name):
                with contextlib.suppress(InvalidArgument, FileNotFoundError):
                    yield BlobInfo(Digest(f"{alg.name}:{entry.name}"), entry.stat().st_size)

    def verify(self, digest: str) -> str | None:
        """Re-hash the blob: None if it is intact, else a line saying what is wrong."""
        checked = Digest(digest)
        hasher = hashlib.new(checked.algorithm)
        with self.open(digest) as blob:
            while chunk := blob.read(_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != checked.encoded:
            return (f"blob {digest} is corrupt: its content hashes to "
                    f"{checked.algorithm}:{hasher.hexdigest()}")
        return None

    def check(self) -> list[str]:
        """Re-hash every blob; one line per corrupt blob."""
        return [problem for info in self.walk() if (problem := self.verify(info.digest))]
