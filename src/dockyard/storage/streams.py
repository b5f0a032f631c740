"""Byte streams that layers and archives pass through: compression told by media type
or magic bytes and undone while streaming, and pass-throughs that hash what they see.

Every stream here is read or written once, front to back, never held whole.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

__all__ = ["HashingReader", "HashingWriter", "compression_of", "decompressed"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: How many first bytes ``compression_of`` needs to tell a compression.
_HEAD = 4
_CHUNK = 1 << 20


def compression_of(head: bytes, media_type: str | None = None) -> str | None:
    """``"gzip"``, ``"zstd"`` or ``None`` (plain): from ``media_type`` when it says (a
    ``+gzip``/``.gzip``, ``+zstd`` or plain ``.tar`` layer type), else from ``head``,
    the first bytes of the stream."""
    if media_type is not None:
        if media_type.endswith(("+gzip", ".gzip")):
            return "gzip"
        if media_type.endswith("+zstd"):
            return "zstd"
        if media_type.endswith((".tar", "layer.v1.tar")):
            return None
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return None


def decompressed(stream: BinaryIO, media_type: str | None = None) -> BinaryIO:
    """``stream`` uncompressed, streamed; its compression is told by ``compression_of``.

    Corrupt compressed data raises ``OSError`` (zstd's too, like gzip's) or, for a
    corrupt deflate stream, ``zlib.error``; a truncated one ``EOFError``.
    """
    head = stream.read(_HEAD)
    raw: BinaryIO = _Prefixed(head, stream)  # type: ignore[assignment]
    kind = compression_of(head, media_type)
    if kind == "gzip":
        return _GzipReader(raw)  # type: ignore[return-value]
    if kind == "zstd":
        return _ZstdReader(raw)  # type: ignore[return-value]
    return raw


class _Prefixed:
    """A stream whose first bytes were read already, to sniff its compression."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(n)
        if n < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """What ISA-L's reader reads through (it wraps its input in a buffer)."""
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class _GzipReader:
    """A gzip stream, decompressed with ISA-L (2 to 3 times zlib's speed: unpacking a
    pulled image is mostly inflating it); its errors are ``OSError``, like zlib's."""

    def __init__(self, raw: BinaryIO) -> None:
        from isal import igzip, isal_zlib

        self._reader = igzip.IGzipFile(fileobj=raw, mode="rb")
        self._error = isal_zlib.error

    def read(self, n: int = -1) -> bytes:
        try:
            return self._reader.read(n)
        except self._error as exc:
            raise OSError(f"corrupt gzip data: {exc}") from None


class _ZstdReader:
    """A zstd stream, decompressed; its errors are ``OSError`` like gzip's, so callers
    handle one kind of corrupt input."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard  # imported here: only zstd input needs it

        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        self._error = zstandard.ZstdError

    def read(self, n: int = -1) -> bytes:
        try:
            return self._reader.read(n)
        except self._error as exc:
            raise OSError(f"corrupt zstd data: {exc}") from None


class HashingReader:
    """A read-only stream that hashes (sha256) and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end (a tar's digest covers the padding after its end marker)."""
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of what was read so far."""
        return f"sha256:{self.hash.hexdigest()}"


class HashingWriter:
    """A write-only stream that hashes (sha256) and counts what passes through it on its
    way to ``raw``."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of what was written so far."""
        return f"sha256:{self.hash.hexdigest()}"
