"""Byte streams: compression told by media type or magic, undone while streaming, and
the hashing pass-throughs."""

import gzip
import hashlib
import io

import pytest
import zstandard

from dockyard.storage.streams import HashingReader, HashingWriter, compression_of, decompressed

PLAIN = b"a tar, say" * 1000
COMPRESSED = {None: PLAIN, "gzip": gzip.compress(PLAIN),
              "zstd": zstandard.ZstdCompressor().compress(PLAIN)}


@pytest.mark.parametrize("kind", [None, "gzip", "zstd"])
def test_decompressed_by_magic(kind: str | None) -> None:
    data = COMPRESSED[kind]
    assert compression_of(data[:4]) == kind
    assert decompressed(io.BytesIO(data)).read() == PLAIN


@pytest.mark.parametrize(("media_type", "kind"), [
    ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
    ("application/vnd.oci.image.layer.v1.tar", None),
    ("application/vnd.docker.image.rootfs.diff.tar", None),
])
def test_the_media_type_wins_over_the_magic(media_type: str, kind: str | None) -> None:
    assert compression_of(COMPRESSED["zstd" if kind == "gzip" else "gzip"][:4],
                          media_type) == kind


def test_an_unknown_media_type_falls_back_to_the_magic() -> None:
    assert compression_of(COMPRESSED["zstd"][:4], "application/octet-stream") == "zstd"


def test_reads_see_the_sniffed_bytes_first() -> None:
    stream = decompressed(io.BytesIO(b"abcdefgh"))
    assert stream.read(3) == b"abc"
    assert stream.read(1) + stream.read() == b"defgh"


def test_corrupt_zstd_is_an_oserror() -> None:
    with pytest.raises(OSError, match="corrupt zstd data"):
        decompressed(io.BytesIO(COMPRESSED["zstd"][:8] + b"\xff" * 64)).read()


def test_hashing_reader_and_writer() -> None:
    expected = f"sha256:{hashlib.sha256(PLAIN).hexdigest()}"
    reader = HashingReader(io.BytesIO(PLAIN))
    assert reader.read(10) == PLAIN[:10]
    reader.drain()
    assert (reader.digest, reader.size) == (expected, len(PLAIN))
    out = io.BytesIO()
    writer = HashingWriter(out)  # type: ignore[arg-type]
    assert writer.write(PLAIN) == len(PLAIN)
    assert (writer.digest, writer.size, out.getvalue()) == (expected, len(PLAIN), PLAIN)
