"""A user's session with the image commands of ``dockyard``, against a real registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.registry_fixtures import Registry, basic_auth, run_registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))


class User:
    """Runs ``dockyard`` with its own root and Docker config, as one person would."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "DOCKYARD_ROOT": str(home / "root"),
                    "DOCKER_CONFIG": str(home / "docker")}

    def __call__(self, *args: str, stdin: bytes | None = None,
                 ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([DOCKYARD, *args], env=self.env, capture_output=True,
                                input=stdin.decode("latin-1") if stdin is not None else None,
                                text=True, timeout=120, check=False)
        if ok:
            assert result.returncode == 0, f"dockyard {' '.join(args)}:\n{result.stderr}"
        return result


@pytest.fixture
def user(tmp_path: Path) -> User:
    return User(tmp_path)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_bootstrap_push_remove_and_pull_back(user: User, registry: Registry) -> None:
    image_id = user("image", "bootstrap", "busybox").stdout.strip()
    assert image_id.startswith("sha256:")
    remote = f"{registry.host}/tools/busybox:1.0"
    user("tag", "busybox", remote)
    pushed = user("push", remote).stdout
    assert f"The push refers to repository [{registry.host}/tools/busybox]" in pushed
    assert "1.0: digest: sha256:" in pushed
    user("rmi", remote, "busybox")
    assert user("images", "-q").stdout == ""

    pulled = user("pull", remote).stdout.splitlines()
    assert pulled[0] == "1.0: Pulling from tools/busybox"
    assert any(line.endswith(": Pull complete") for line in pulled), pulled
    assert pulled[-2] == f"Status: Downloaded newer image for {remote}"
    assert pulled[-1] == remote
    assert user("images", "-q", "--no-trunc").stdout.strip() == image_id
    again = user("pull", remote).stdout
    assert f"Status: Image is up to date for {remote}" in again
    assert user("pull", "-q", remote).stdout.strip() == remote


def test_images_table_filters_and_formats(user: User) -> None:
    user("image", "bootstrap", "busybox")
    user("tag", "busybox", "mine/box:v1")
    table = user("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert {tuple(line.split()[:2]) for line in table[1:]} == {("busybox", "latest"),
                                                                ("mine/box", "v1")}
    only = user("images", "--filter", "reference=mine/*", "--format",
                "{{.Repository}}:{{.Tag}}").stdout.split()
    assert only == ["mine/box:v1"]
    assert user("images", "busybox", "--format", "{{.Tag}}").stdout.split() == ["latest"]
    inspected = json.loads(user("image", "inspect", "mine/box:v1").stdout)
    assert inspected[0]["RepoTags"] == ["busybox:latest", "mine/box:v1"]
    assert inspected[0]["Config"]["Cmd"] == ["sh"]
    history = user("history", "busybox").stdout.splitlines()
    assert history[0].split()[:2] == ["IMAGE", "CREATED"]
    bad = user("images", "--filter", "color=blue", ok=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: invalid filter")


def test_save_load_and_import(user: User, tmp_path: Path) -> None:
    user("image", "bootstrap", "busybox")
    archive = tmp_path / "busybox.tar"
    user("save", "-o", str(archive), "busybox")
    with tarfile.open(archive) as tf:
        names = tf.getnames()
    assert "manifest.json" in names and "index.json" in names
    user("rmi", "busybox")
    loaded = user("load", "-i", str(archive)).stdout
    assert loaded.strip() == "Loaded image: busybox:latest"

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tf:
        tf.add("/usr/bin/busybox", arcname="bin/busybox")
    image_id = user("import", "-c", "CMD [\"/bin/busybox\", \"sh\"]", "-c", "ENV A=1",
                    str(rootfs), "imported:1").stdout.strip()
    config = json.loads(user("image", "inspect", "imported:1").stdout)[0]
    assert config["Id"] == image_id
    assert config["Config"]["Cmd"] == ["/bin/busybox", "sh"]
    assert "A=1" in config["Config"]["Env"]
    assert user("system", "check").stdout.strip() == "no problems found"


def test_remove_and_prune(user: User) -> None:
    user("image", "bootstrap", "busybox")
    user("tag", "busybox", "other:1")
    # An ID with several tags is refused without -f.
    image_id = user("images", "-q").stdout.split()[0]
    refused = user("rmi", image_id, ok=False)
    assert refused.returncode == 1 and "Error:" in refused.stderr
    removed = user("rmi", "-f", image_id).stdout.splitlines()
    assert "Untagged: busybox:latest" in removed and removed[-1].startswith("Deleted: sha256:")
    missing = user("rmi", "nothere", ok=False)
    assert missing.returncode == 1 and "No such image" in missing.stderr
    pruned = user("image", "prune", "-a", "-f").stdout
    assert "Total reclaimed space:" in pruned


def test_login_and_logout_with_basic_auth(user: User, tmp_path: Path) -> None:
    auth = basic_auth(tmp_path / "auth", {"alice": "s3cret"})
    with run_registry(tmp_path / "private", auth=auth) as private:
        wrong = user("login", "-u", "alice", "--password-stdin", private.host,
                     stdin=b"nope\n", ok=False)
        assert wrong.returncode == 1 and wrong.stderr.startswith("Error:")
        out = user("login", "-u", "alice", "--password-stdin", private.host,
                   stdin=b"s3cret\n").stdout
        assert out.strip() == "Login Succeeded"
        config = json.loads((Path(user.env["DOCKER_CONFIG"]) / "config.json").read_text())
        assert private.host in config["auths"]
        user("image", "bootstrap", "busybox")
        user("tag", "busybox", f"{private.host}/me/box")
        user("push", "-q", f"{private.host}/me/box")
        assert user("logout", private.host).stdout.strip() == \
            f"Removing login credentials for {private.host}"
        denied = user("pull", f"{private.host}/me/box", ok=False)
        assert denied.returncode == 1 and "login" in denied.stderr.lower()


def test_bad_references_and_commands(user: User) -> None:
    bad = user("pull", "Busybox", ok=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == \
        "Error: invalid reference format: repository name (library/Busybox) must be lowercase"
    usage = user("image", "frobnicate", ok=False)
    assert usage.returncode == 125
