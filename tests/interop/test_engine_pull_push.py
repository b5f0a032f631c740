"""The image service against a real Distribution registry: pull, push, corruption,
a pull killed with SIGKILL, token authentication; skopeo as the second opinion.

Images are made in the test (``build_image``) and pushed with the registry client.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.engine.images import ImageService, RegistryOptions
from dockyard.engine.progress import Event, Status
from dockyard.errors import InvalidArgument, PermissionDenied
from dockyard.images.registry import Credentials, RegistryClient
from dockyard.oci.image import OCI_INDEX, OCI_MANIFEST, Descriptor, Index, Platform, dump
from integration.test_engine_images import BuiltImage, build_image, layer, mounted_image
from interop.registry_fixtures import Registry, ScriptedServer, TokenServer, run_registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

SKOPEO = "/usr/bin/skopeo"
BASE = layer({"etc/os-release": b"ID=test\n", "bin/sh": b"#!shell"})


def push_image(client: RegistryClient, repo: str, tag: str, image: BuiltImage) -> str:
    for digest, data in image.blobs():
        client.push_blob(repo, digest, len(data), io.BytesIO(data))
    return client.put_manifest(repo, tag, image.manifest, OCI_MANIFEST)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def service(tmp_path: Path) -> ImageService:
    return ImageService(str(tmp_path / "root"))


def _repo(tmp_path: Path) -> str:
    # One repository per test: the module shares the registry.
    return "t/" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:10]


def test_pull_unpacks_tags_and_a_second_pull_downloads_nothing(
        registry: Registry, service: ImageService, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    image = build_image([BASE, layer({"app/main": b"hello"})], labels={"k": "v"})
    with RegistryClient(registry.host) as client:
        digest = push_image(client, repo, "1", image)
        shared = build_image([BASE, layer({"app/other": b"o"})], cmd="other")
        push_image(client, repo, "other", shared)
    events: list[Event] = []
    info = service.pull(f"{registry.host}/{repo}:1", progress=events.append)
    assert info.id == image.id and info.manifest_digest == digest
    assert info.repo_digest == digest and info.platform == "linux/amd64"
    statuses = {e.status for e in events}
    assert {Status.DOWNLOADING, Status.EXTRACTING, Status.PULL_COMPLETE} <= statuses
    with mounted_image(service, info.id) as root:
        assert (root / "app/main").read_bytes() == b"hello"
        assert (root / "etc/os-release").read_bytes() == b"ID=test\n"
    inspected = service.inspect(f"{registry.host}/{repo}:1")
    assert inspected["RepoTags"] == [f"{registry.host}/{repo}:1"]
    assert inspected["RepoDigests"] == [f"{registry.host}/{repo}@{digest}"]
    assert inspected["Config"]["Labels"] == {"k": "v"}

    events.clear()
    assert service.pull(f"{registry.host}/{repo}:1", progress=events.append) == info
    assert Status.DOWNLOADING not in {e.status for e in events}
    assert {e.status for e in events if e.id == info.id[7:19]} <= {Status.ALREADY_EXISTS}

    events.clear()
    other = service.pull(f"{registry.host}/{repo}:other", progress=events.append)
    base_id = image.layers[0][0].digest[7:19]
    assert [e.status for e in events if e.id == base_id] == [Status.ALREADY_EXISTS]
    assert len([s for s in service.snapshots.walk()]) == 3  # the base is shared
    with mounted_image(service, other.id) as root:
        assert (root / "app/other").exists() and not (root / "app/main").exists()
    assert service.check() == []


def test_an_index_gives_the_host_platform_and_push_sends_that_manifest(
        registry: Registry, service: ImageService, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    amd = build_image([BASE, layer({"arch": b"amd64"})])
    arm = build_image([BASE, layer({"arch": b"arm64"})], arch="arm64")
    with RegistryClient(registry.host) as client:
        entries = []
        for image, arch in ((arm, "arm64"), (amd, "amd64")):
            push_image(client, repo, arch, image)
            entries.append(Descriptor(media_type=OCI_MANIFEST,
                                      digest=image.digest, size=len(image.manifest),
                                      platform=Platform(architecture=arch, os="linux")))
        index = dump(Index(schema_version=2, media_type=OCI_INDEX, manifests=entries))
        index_digest = client.put_manifest(repo, "multi", index, OCI_INDEX)
    info = service.pull(f"{registry.host}/{repo}:multi")
    assert info.id == amd.id and info.manifest_digest == amd.digest
    assert info.repo_digest == index_digest
    with mounted_image(service, info.id) as root:
        assert (root / "arch").read_bytes() == b"amd64"
    # Push to another repository: blobs are mounted, the single-platform manifest is sent.
    target = f"{registry.host}/{repo}-copy:v1"
    service.tag(f"{registry.host}/{repo}:multi", target)
    events: list[Event] = []
    pushed = service.push(target, progress=events.append)
    assert pushed == amd.digest
    assert {e.status for e in events if e.status in (Status.MOUNTED, Status.PUSHED)} == {
        Status.MOUNTED}
    raw = subprocess.run([SKOPEO, "inspect", "--raw", "--tls-verify=false",
                          f"docker://{target}"], capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == pushed
    assert service.push(target) == pushed  # everything exists now
    # Another platform of the same index: the tag moves to it, as with docker pull.
    arm_info = service.pull(f"{registry.host}/{repo}:multi", platform="linux/arm64")
    assert arm_info.id == arm.id == service.resolve(f"{registry.host}/{repo}:multi")


def test_schema1_is_refused_clearly(service: ImageService) -> None:
    schema1 = json.dumps({"schemaVersion": 1, "name": "x/y", "tag": "1", "fsLayers": []}).encode()

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type",
                            "application/vnd.docker.distribution.manifest.v1+prettyjws")
        handler.send_header("Content-Length", str(len(schema1)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(schema1)

    with ScriptedServer(respond) as server, pytest.raises(InvalidArgument,
                                                          match="schema 1 manifests"):
        service.pull(f"{server.host}/x/y:1")
    assert service.list() == []


def test_a_corrupt_blob_on_the_registry_is_refused_and_nothing_recorded(
        registry: Registry, service: ImageService, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    image = build_image([BASE, layer({"victim": b"x" * 4096})])
    with RegistryClient(registry.host) as client:
        push_image(client, repo, "1", image)
    victim = registry.blob_data(image.layers[1][0].digest)
    original = victim.read_bytes()
    victim.write_bytes(bytes(len(original)))  # same size, wrong content
    try:
        with pytest.raises(InvalidArgument, match="digest mismatch"):
            service.pull(f"{registry.host}/{repo}:1")
    finally:
        victim.write_bytes(original)
    assert service.list() == []
    assert not service.content.exists(image.layers[1][0].digest)
    assert service.check() == []
    assert service.pull(f"{registry.host}/{repo}:1").id == image.id


class SlowProxy:
    """A proxy to the registry that sends blob bodies slowly while ``slow`` is set, and
    counts the blob bytes it sent."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.slow = threading.Event()
        self.blob_bytes = 0
        # Requests of the killed pull may still be writing: only count the current ones.
        self.generation = 0
        self.server = ScriptedServer(self._handle)
        self.host = self.server.host

    def fast(self) -> None:
        """Stop slowing blobs down, and count afresh."""
        self.slow.clear()
        self.generation += 1
        self.blob_bytes = 0

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        generation = self.generation
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length) if length else None
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            handler.send_response(response.status)
            for key, value in response.getheaders():
                handler.send_header(key, value)
            handler.end_headers()
            blob = "/blobs/sha256:" in handler.path and handler.command == "GET"
            while chunk := response.read(64 << 10):
                handler.wfile.write(chunk)
                if blob and generation == self.generation:
                    self.blob_bytes += len(chunk)
                    if self.slow.is_set():
                        time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed: that is the point
        finally:
            conn.close()


def test_a_pull_killed_midway_resumes_and_leaves_nothing_broken(
        registry: Registry, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    big = layer({"big": os.urandom(6 << 20)})
    image = build_image([BASE, big])
    with RegistryClient(registry.host) as client:
        push_image(client, repo, "1", image)
    proxy = SlowProxy(registry.host)
    root = tmp_path / "root"
    ref = f"{proxy.host}/{repo}:1"
    big_digest = image.layers[1][0].digest
    ingest = root / "content/ingest" / big_digest.replace(":", "-") / "data"
    with proxy.server:
        proxy.slow.set()
        code = ("from dockyard.engine.images import ImageService; "
                f"ImageService({str(root)!r}).pull({ref!r})")
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not (ingest.exists() and ingest.stat().st_size > 1 << 20):
                assert child.poll() is None, "the pull ended before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        kept = ingest.stat().st_size
        assert 0 < kept < len(big)
        service = ImageService(str(root))
        assert service.list() == []  # absent, not broken
        assert service.check() == []
        proxy.fast()
        info = service.pull(ref)
    assert info.id == image.id
    # The second pull fetched only the rest of the big blob (and the small ones it lacked).
    assert proxy.blob_bytes <= len(big) - kept + len(BASE) + len(image.config)
    with mounted_image(service, info.id) as mounted:
        assert (mounted / "big").stat().st_size == 6 << 20
    assert service.check() == []
    assert service.prune() == ([], 0)  # the killed pull left nothing unreferenced
    assert service.check() == []


def test_pull_with_token_auth_from_a_docker_config(tmp_path: Path) -> None:
    tokens = TokenServer({"alice": ("secret", frozenset({"pull", "push"}))})
    with tokens.serve(), run_registry(tmp_path / "reg", auth=tokens.registry_auth(tmp_path)) as reg:
        image = build_image([BASE])
        with RegistryClient(reg.host, credentials=Credentials("alice", "secret")) as client:
            push_image(client, "private/app", "1", image)
        anonymous = ImageService(str(tmp_path / "anon"),
                                 registries=RegistryOptions(auth_file=str(tmp_path / "none.json")))
        with pytest.raises(PermissionDenied, match="login"):
            anonymous.pull(f"{reg.host}/private/app:1")
        config = tmp_path / "config.json"
        auth = base64.b64encode(b"alice:secret").decode()
        config.write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        service = ImageService(str(tmp_path / "root"),
                               registries=RegistryOptions(auth_file=str(config)))
        assert service.pull(f"{reg.host}/private/app:1").id == image.id
        assert any(r.user == "alice" for r in tokens.requests)
