"""The content store: blobs by digest, checked while they stream in."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from dockyard.errors import InvalidArgument, NotFound
from dockyard.storage.content import ContentStore


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(str(tmp_path / "content"))


def blobs_in(store: ContentStore) -> list[str]:
    return [info.digest for info in store.walk()]


def test_ingest_open_info_delete(store: ContentStore) -> None:
    data = b"hello layer" * 1000
    digest = store.ingest(io.BytesIO(data), digest_of(data), len(data))
    assert digest == digest_of(data)
    assert store.exists(digest)
    assert store.info(digest).size == len(data)
    with store.open(digest) as blob:
        assert blob.read() == data
    assert Path(store.path(digest)).parent.name == "sha256"
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(NotFound):
        store.open(digest)


def test_sha512_is_accepted(store: ContentStore) -> None:
    data = b"x" * 10
    assert store.ingest(io.BytesIO(data), digest_of(data, "sha512")) == digest_of(data, "sha512")
    assert blobs_in(store) == [digest_of(data, "sha512")]


def test_writer_without_expected_digest_names_the_blob(store: ContentStore) -> None:
    with store.writer() as writer:
        writer.write(b"abc")
        assert writer.commit() == digest_of(b"abc")
    assert os.listdir(Path(store.root) / "ingest") == []


def test_digest_mismatch_stores_nothing(store: ContentStore) -> None:
    expected = digest_of(b"good")
    with pytest.raises(InvalidArgument) as caught:
        store.ingest(io.BytesIO(b"evil"), expected, 4)
    assert expected in str(caught.value)
    assert digest_of(b"evil") in str(caught.value)
    assert blobs_in(store) == []
    assert os.listdir(Path(store.root) / "ingest") == []


def test_put_stores_bytes_once_and_checks_a_given_digest(store: ContentStore) -> None:
    info = store.put(b"{}")
    assert (info.digest, info.size) == (digest_of(b"{}"), 2)
    with store.open(info.digest) as blob:
        assert blob.read() == b"{}"
    assert store.put(b"{}") == info  # there already: nothing written again
    assert store.put(b"x", digest_of(b"x", "sha512")).digest == digest_of(b"x", "sha512")
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        store.put(b"evil", digest_of(b"good"))
    assert not store.exists(digest_of(b"good"))


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 32,
                                    "sha256:../../" + "0" * 58, "sha256:" + "A" * 64])
def test_malformed_digests_are_refused(store: ContentStore, digest: str) -> None:
    with pytest.raises(InvalidArgument):
        store.exists(digest)


def test_truncated_write_is_not_committed_and_resumes(store: ContentStore) -> None:
    data = os.urandom(3 << 20)
    digest = digest_of(data)
    with store.writer(digest, len(data)) as writer:
        writer.write(data[:1000])
        with pytest.raises(InvalidArgument, match="short"):
            writer.commit()
    assert not store.exists(digest)
    # A later pull resumes: the kept prefix is re-hashed, only the rest is sent.
    with store.writer(digest, len(data), resume=True) as writer:
        assert writer.offset == 1000
        writer.write(data[1000:])
        writer.commit()
    with store.open(digest) as blob:
        assert blob.read() == data
    # Without resume, a partial ingest is started over.
    with store.writer(digest_of(b"other"), 5) as writer:
        writer.write(b"ot")
    with store.writer(digest_of(b"other"), 5) as writer:
        assert writer.offset == 0


def test_write_past_expected_size_is_refused(store: ContentStore) -> None:
    with store.writer(digest_of(b"abc"), 3) as writer, pytest.raises(InvalidArgument):
        writer.write(b"abcd")


def test_concurrent_writers_of_the_same_blob(store: ContentStore) -> None:
    data = os.urandom(1 << 20)
    digest = digest_of(data)
    both_open = threading.Barrier(2)
    results: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with store.writer(digest, len(data)) as writer:
                both_open.wait(timeout=10)
                for i in range(0, len(data), 65536):
                    writer.write(data[i:i + 65536])
                results.append(writer.commit())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [digest, digest]
    assert blobs_in(store) == [digest]
    assert store.verify(digest) is None
    assert os.listdir(Path(store.root) / "ingest") == []


def test_check_finds_a_corrupt_blob(store: ContentStore) -> None:
    good, bad = b"good blob", b"soon corrupt"
    store.ingest(io.BytesIO(good), digest_of(good))
    store.ingest(io.BytesIO(bad), digest_of(bad))
    assert store.check() == []
    path = Path(store.path(digest_of(bad)))
    path.chmod(0o644)
    path.write_bytes(b"bit rot")
    problems = store.check()
    assert len(problems) == 1
    assert digest_of(bad) in problems[0]
    assert store.verify(digest_of(good)) is None
