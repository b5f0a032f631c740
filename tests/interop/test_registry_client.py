"""The registry client against real Distribution registries, and skopeo as a second client.

Three registries run for the module, all on 127.0.0.1: one without auth, one with
htpasswd Basic auth, one trusting a token server of the fixtures (real ES256 JWTs), and
most tests run against each. Servers that misbehave on purpose (HTML, redirects, silence)
are small http.servers of the fixtures.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.errors import (
    DockyardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Timeout,
    Unavailable,
)
from dockyard.images.registry import (
    Credentials,
    RegistryClient,
    erase_credentials,
    load_credentials,
    login,
    store_credentials,
)
from interop.registry_fixtures import (
    Registry,
    ScriptedServer,
    TokenServer,
    basic_auth,
    free_port,
    run_registry,
    sha256_digest,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
USER, PASSWORD = "alice", "wonderland"
SKOPEO = "/usr/bin/skopeo"


@dataclass
class Target:
    """A registry under test and what a client needs to use it."""

    kind: str
    registry: Registry
    credentials: Credentials | None
    tokens: TokenServer | None = None

    @property
    def host(self) -> str:
        return self.registry.host

    def client(self, **kwargs: object) -> RegistryClient:
        return RegistryClient(self.host, credentials=self.credentials, **kwargs)  # type: ignore[arg-type]

    def skopeo_creds(self, flag: str) -> list[str]:
        return [flag, f"{USER}:{PASSWORD}"] if self.credentials else []


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    server = TokenServer(
        {
            USER: (PASSWORD, frozenset({"pull", "push", "delete"})),
            "reader": ("reader-pw", frozenset({"pull"})),
        },
        refresh_tokens={"refresh-me": USER},
    )
    with server.serve():
        yield server


@pytest.fixture(scope="module")
def registries(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer
) -> Iterator[dict[str, Target]]:
    tmp = tmp_path_factory.mktemp("registries")
    creds = Credentials(USER, PASSWORD)
    with (
        run_registry(tmp / "plain") as plain,
        run_registry(tmp / "basic", basic_auth(tmp / "basic", {USER: PASSWORD})) as basic,
        run_registry(tmp / "token", token_server.registry_auth(tmp / "token")) as token,
    ):
        yield {
            "plain": Target("plain", plain, None),
            "basic": Target("basic", basic, creds),
            "token": Target("token", token, creds, token_server),
        }


@pytest.fixture(params=["plain", "basic", "token"])
def target(request: pytest.FixtureRequest, registries: dict[str, Target]) -> Target:
    return registries[request.param]


@pytest.fixture
def client(target: Target) -> Iterator[RegistryClient]:
    with target.client() as registry_client:
        yield registry_client


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses."""
    return f"test/{uuid.uuid4().hex[:12]}"


def push(client: RegistryClient, repo: str, data: bytes, **kwargs: object) -> str:
    digest = sha256_digest(data)
    client.push_blob(repo, digest, len(data), io.BytesIO(data), **kwargs)  # type: ignore[arg-type]
    return digest


def manifest_for(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}
                for layer in layers
            ],
        }
    ).encode()


def assert_one_line(error: pytest.ExceptionInfo[DockyardError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message


# -- push and pull ---------------------------------------------------------------------


def test_push_and_pull_back_byte_identical(client: RegistryClient, repo: str) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    big, small = os.urandom(3 * 1024 * 1024 + 17), os.urandom(1000)
    push(client, repo, config)
    assert (
        client.push_blob(
            repo, sha256_digest(big), len(big), io.BytesIO(big), chunk_size=1024 * 1024
        )
        == "uploaded"
    )
    push(client, repo, small)
    manifest = manifest_for(config, [big, small])
    digest = client.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
    assert digest == sha256_digest(manifest)

    for reference in ("v1", digest):
        got = client.get_manifest(repo, reference)
        assert got == (manifest, OCI_MANIFEST, digest)
    assert client.head_manifest(repo, "v1") == (OCI_MANIFEST, digest, len(manifest))
    assert client.head_manifest(repo, "v2") is None
    assert client.tags(repo) == ["v1"]
    for data in (config, big, small):
        with client.get_blob(repo, sha256_digest(data)) as stream:
            assert stream.size == len(data)
            assert stream.read() == data

    client.delete_manifest(repo, digest)
    with pytest.raises(NotFound):
        client.get_manifest(repo, "v1")


def test_existing_blob_is_skipped(client: RegistryClient, repo: str) -> None:
    data = os.urandom(5000)
    digest = sha256_digest(data)
    assert client.blob_exists(repo, digest) is None
    assert client.push_blob(repo, digest, len(data), io.BytesIO(data)) == "uploaded"
    assert client.blob_exists(repo, digest) == len(data)
    # Nothing is read from a stream whose blob is already there.
    assert client.push_blob(repo, digest, len(data), io.BytesIO()) == "exists"


def test_cross_repository_mount(client: RegistryClient, repo: str) -> None:
    data = os.urandom(4000)
    digest = push(client, repo, data)
    other = repo + "-copy"
    assert client.push_blob(other, digest, len(data), io.BytesIO(), mount_from=repo) == "mounted"
    with client.get_blob(other, digest) as stream:
        assert stream.read() == data
    # A source without the blob: the registry opens a normal upload instead.
    fresh = os.urandom(100)
    assert (
        client.push_blob(
            other, sha256_digest(fresh), len(fresh), io.BytesIO(fresh), mount_from=repo + "-none"
        )
        == "uploaded"
    )


def test_resume_download_with_range(client: RegistryClient, repo: str) -> None:
    data = os.urandom(300_000)
    digest = push(client, repo, data)
    with client.get_blob(repo, digest) as stream:
        head = stream.read(100_000)
    # The interrupted stream's connection is dropped; the next request gets a fresh one.
    with client.get_blob(repo, digest, offset=len(head)) as stream:
        assert (stream.offset, stream.size) == (len(head), len(data))
        assert head + stream.read() == data


def test_concurrent_pulls_share_one_client(client: RegistryClient, repo: str) -> None:
    blobs = [os.urandom(200_000 + i) for i in range(6)]
    digests = [push(client, repo, data) for data in blobs]
    results: dict[int, bytes] = {}

    def pull(index: int) -> None:
        for _ in range(3):
            with client.get_blob(repo, digests[index]) as stream:
                results[index] = stream.read()

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(len(blobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(blobs))] == blobs


def test_blob_pushed_from_a_file_in_chunks_and_at_once(
    client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    data = os.urandom(250_000)
    file = tmp_path / "blob"
    file.write_bytes(data)
    digest = sha256_digest(data)
    with file.open("rb") as stream:
        assert client.push_blob(repo, digest, len(data), stream) == "uploaded"
    with file.open("rb") as stream:
        client.push_blob(repo + "-c", digest, len(data), stream, chunk_size=100_000)
    for name in (repo, repo + "-c"):
        with client.get_blob(name, digest) as blob:
            assert blob.read() == data


# -- errors ----------------------------------------------------------------------------


def test_unknown_manifest_and_blob_are_not_found(
    client: RegistryClient, repo: str, target: Target
) -> None:
    with pytest.raises(NotFound) as error:
        client.get_manifest(repo, "nope")
    assert_one_line(error, target.host, "manifest unknown", repo)
    with pytest.raises(NotFound) as error:
        client.get_blob(repo, sha256_digest(b"absent"))
    assert_one_line(error, target.host)


def test_digest_mismatch_is_detected(client: RegistryClient, repo: str, target: Target) -> None:
    config = b"{}"
    push(client, repo, config)
    manifest = manifest_for(config, [])
    digest = client.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
    # Corrupt what the registry stores: it serves the bytes as they are on disk.
    target.registry.blob_data(digest).write_bytes(manifest.replace(b'"layers"', b'"Layers"'))
    for reference in (digest, "v1"):
        with pytest.raises(InvalidArgument) as error:
            client.get_manifest(repo, reference)
        assert_one_line(error, target.host, digest, "altered")


def test_bad_input_is_refused(client: RegistryClient, repo: str) -> None:
    manifest = manifest_for(b"{}", [])
    with pytest.raises(InvalidArgument):
        client.put_manifest(repo, sha256_digest(b"other"), manifest, OCI_MANIFEST)
    with pytest.raises(InvalidArgument):
        client.get_manifest("Bad Name", "v1")
    with pytest.raises(InvalidArgument):
        client.get_blob(repo, "sha256:short")
    # The registry checks what was uploaded against the digest given.
    with pytest.raises(InvalidArgument) as error:
        client.push_blob(repo, sha256_digest(b"xyz"), 3, io.BytesIO(b"abc"))
    assert_one_line(error, "DIGEST_INVALID")
    with pytest.raises(InvalidArgument) as error:
        client.push_blob(repo, sha256_digest(b"abcdef"), 6, io.BytesIO(b"abc"))
    assert_one_line(error, "ended 3 bytes before")


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_wrong_or_missing_credentials_are_refused(registries: dict[str, Target], kind: str) -> None:
    host = registries[kind].host
    with RegistryClient(host, credentials=Credentials(USER, "wrong")) as client:
        with pytest.raises(PermissionDenied) as error:
            client.get_manifest("test/x", "v1")
        assert_one_line(error, host, "dockyard login")
    with RegistryClient(host) as client:
        with pytest.raises(PermissionDenied) as error:
            client.get_manifest("test/x", "v1")
        assert_one_line(error, host, "dockyard login")


def test_token_without_push_rights_is_denied(registries: dict[str, Target], repo: str) -> None:
    host = registries["token"].host
    with RegistryClient(host, credentials=Credentials("reader", "reader-pw")) as client:
        with pytest.raises(PermissionDenied) as error:
            push(client, repo, b"data")
        assert_one_line(error, host)


def test_tokens_are_cached_per_scope_until_they_expire(
    registries: dict[str, Target], token_server: TokenServer, repo: str
) -> None:
    target = registries["token"]
    with target.client() as client:
        digest = push(client, repo, b"layer")
        client.put_manifest(repo, "v1", manifest_for(b"layer", []), OCI_MANIFEST)

    first = len(token_server.requests)

    def asked(scope: str) -> int:
        return sum(scope in r.scopes for r in token_server.requests[first:])

    pull_scope = f"repository:{repo}:pull"
    with target.client() as client:
        for _ in range(3):
            client.get_manifest(repo, "v1")
            with client.get_blob(repo, digest) as stream:
                stream.read()
        assert asked(pull_scope) == 1
        token_server.expires_in = 1
        try:
            # A new scope, whose token lives one second.
            assert client.blob_exists(repo + "-other", digest) is None
            time.sleep(1.0)
            assert client.blob_exists(repo + "-other", digest) is None
        finally:
            token_server.expires_in = 300
        assert asked(f"repository:{repo}-other:pull") == 2


def test_identity_token_uses_oauth2_refresh(
    registries: dict[str, Target], token_server: TokenServer, repo: str
) -> None:
    target = registries["token"]
    with target.client() as client:
        push(client, repo, b"x")
    credentials = Credentials(identity_token="refresh-me")
    with RegistryClient(target.host, credentials=credentials) as client:
        assert client.blob_exists(repo, sha256_digest(b"x")) == 1
    assert token_server.requests[-1].method == "POST"


def test_garbage_answers_give_clear_errors() -> None:
    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        status, content_type, body = {
            "/v2/": (200, "text/html", b"<html><body>Welcome to nginx</body></html>"),
            "/v2/a/manifests/v1": (200, "text/html", b"<!DOCTYPE html><p>login</p>"),
            "/v2/a/tags/list": (200, "application/json", b"{not json"),
        }.get(handler.path, (502, "text/html", b"<html>Bad Gateway</html>"))
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with ScriptedServer(respond) as server, RegistryClient(server.host) as client:
        with pytest.raises(InvalidArgument) as error:
            client.ping()
        assert_one_line(error, f"registry {server.host} answered", "HTML page", "not look like")
        with pytest.raises(InvalidArgument) as error:
            client.get_manifest("a", "v1")
        assert_one_line(error, f"registry {server.host} answered", "HTML page", "not a manifest")
        with pytest.raises(InvalidArgument) as error:
            client.tags("a")
        assert_one_line(error, "'{not json'", "not a tag list")
        with pytest.raises(Unavailable) as error:
            client.blob_exists("a", sha256_digest(b""))
        assert_one_line(error, server.host, "HTTP 502")


def test_unreachable_and_silent_registries() -> None:
    port = free_port()
    with RegistryClient(f"127.0.0.1:{port}") as client:
        with pytest.raises(Unavailable) as error:
            client.ping()
        assert_one_line(error, f"127.0.0.1:{port}", "connection refused")

    release = threading.Event()

    def hang(handler: http.server.BaseHTTPRequestHandler) -> None:
        release.wait(5)

    with ScriptedServer(hang) as server:
        try:
            with RegistryClient(server.host, read_timeout=0.3) as client:
                with pytest.raises(Timeout) as error:
                    client.ping()
                assert_one_line(error, server.host)
        finally:
            release.set()


def test_redirect_to_storage_drops_authorization(registries: dict[str, Target]) -> None:
    seen: dict[str, str | None] = {}
    data = b"blob bytes from storage"

    def storage(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen["storage"] = handler.headers.get("Authorization")
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    with ScriptedServer(storage) as store:

        def registry(handler: http.server.BaseHTTPRequestHandler) -> None:
            seen["registry"] = handler.headers.get("Authorization")
            if seen["registry"] is None:
                handler.send_response(401)
                handler.send_header("WWW-Authenticate", 'Basic realm="test, with comma"')
            else:
                handler.send_response(307)
                handler.send_header("Location", f"http://{store.host}/data?sig=1")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with (
            ScriptedServer(registry) as server,
            RegistryClient(server.host, credentials=Credentials(USER, PASSWORD)) as client,
            client.get_blob("a", sha256_digest(data)) as stream,
        ):
            assert stream.read() == data
    assert seen["registry"] is not None and seen["registry"].startswith("Basic ")
    assert seen["storage"] is None


# -- credentials and login -------------------------------------------------------------


def test_credentials_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    file = tmp_path / "docker" / "config.json"
    file.parent.mkdir()
    file.write_text(
        json.dumps(
            {"auths": {"https://other.example/v1/": {"auth": "eDp5"}}, "credsStore": "keep-me"}
        )
    )
    assert load_credentials("example.com") is None
    store_credentials("example.com:5000", "bob", "p:ss")
    store_credentials("docker.io", "carol", "pw")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    config = json.loads(file.read_text())
    assert config["credsStore"] == "keep-me"
    assert "https://index.docker.io/v1/" in config["auths"]
    assert load_credentials("example.com:5000") == Credentials("bob", "p:ss")
    assert load_credentials("index.docker.io") == Credentials("carol", "pw")
    assert load_credentials("other.example") == Credentials("x", "y")
    assert erase_credentials("docker.io")
    assert not erase_credentials("docker.io")
    assert load_credentials("docker.io") is None
    config["auths"]["tok.example"] = {"auth": "", "identitytoken": "refresh"}
    file.write_text(json.dumps(config))
    assert load_credentials("tok.example") == Credentials(identity_token="refresh")
    file.write_text("{broken")
    with pytest.raises(InvalidArgument):
        load_credentials("example.com")


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_login_verifies_before_storing(
    registries: dict[str, Target], kind: str, tmp_path: Path
) -> None:
    host = registries[kind].host
    file = tmp_path / "config.json"
    with pytest.raises(PermissionDenied):
        login(host, USER, "wrong", path=file)
    assert not file.exists()
    assert login(host, USER, PASSWORD, path=file) == file
    assert load_credentials(host, file) == Credentials(USER, PASSWORD)


# -- skopeo ----------------------------------------------------------------------------


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SKOPEO, *args], capture_output=True, text=True, check=True, timeout=60)


def write_oci_layout(directory: Path, tag: str) -> tuple[bytes, list[bytes]]:
    """A one-layer image as an OCI layout made by hand; returns its manifest and blobs."""
    content = b"hello from dockyard\n"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        archive.addfile(info, io.BytesIO(content))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar.getvalue())]},
        }
    ).encode()
    manifest = manifest_for(config, [layer])
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (layer, config, manifest):
        (blobs / sha256_digest(data).split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sha256_digest(manifest),
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return manifest, [config, layer]


def test_skopeo_push_then_client_pull(
    client: RegistryClient, target: Target, repo: str, tmp_path: Path
) -> None:
    manifest, blobs = write_oci_layout(tmp_path / "layout", "v1")
    skopeo(
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        *target.skopeo_creds("--dest-creds"),
        f"oci:{tmp_path / 'layout'}:v1",
        f"docker://{target.host}/{repo}:v1",
    )
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        *target.skopeo_creds("--creds"),
        f"docker://{target.host}/{repo}:v1",
    ).stdout.encode()
    got = client.get_manifest(repo, "v1")
    assert got.data == raw == manifest
    assert got.digest == sha256_digest(raw)
    for data in blobs:
        with client.get_blob(repo, sha256_digest(data)) as stream:
            assert stream.read() == data


def test_client_push_then_skopeo_reads(
    client: RegistryClient, target: Target, repo: str, tmp_path: Path
) -> None:
    manifest, blobs = write_oci_layout(tmp_path / "layout", "v1")
    for data in blobs:
        push(client, repo, data)
    digest = client.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
    reference = f"docker://{target.host}/{repo}:v1"
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", *target.skopeo_creds("--creds"), reference).stdout
    )
    assert info["Digest"] == digest
    out = tmp_path / "copy"
    skopeo(
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=false",
        *target.skopeo_creds("--src-creds"),
        reference,
        f"oci:{out}:v1",
    )
    for data in (manifest, *blobs):
        assert (out / "blobs" / "sha256" / sha256_digest(data).split(":")[1]).read_bytes() == data
