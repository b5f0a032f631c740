"""A container's files through the CLI: ``cp`` both ways (files, directories, ``/.``,
``-`` tar streams, ``-a``), on running and stopped containers; ``cp`` with hostile paths
(``..``, a symlink to ``/``, a symlink swapped while copying) that must stay in the
container; ``diff`` after ``touch``, ``rm`` and ``echo >>``; ``commit`` then ``run`` of
the new image; ``export``.

The roots, the busybox image and the leftovers check (no mount left under the test's
directory: a stopped container's snapshot, mounted for a copy, must be unmounted) are
those of ``test_cli_containers`` (its ``user`` fixture).
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

def _running(user: User, script: str, name: str = "box") -> str:
    """A detached busybox container that ran ``script`` and then sleeps."""
    cid = user("run", "-d", "--name", name, "busybox", "sh", "-c",
               f"{script}; touch /ready; exec sleep 1000").stdout.strip()
    user.ids.add(cid)
    deadline = time.monotonic() + 10
    while user("exec", name, "test", "-e", "/ready", ok=False).returncode != 0:
        assert time.monotonic() < deadline, "the container's script did not finish"
        time.sleep(0.05)
    return cid


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def _bytes(user: User, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run([*user.base, *args], input=stdin, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_cp_out_of_a_container(user: User, tmp_path: Path) -> None:
    _running(user, "mkdir -p /data/sub; echo one > /data/a; echo two > /data/sub/b; "
                   "chown 1000:1000 /data/a")
    out = tmp_path / "out"
    out.mkdir()
    user("cp", "box:/data/a", str(out))                 # a file into a directory
    assert (out / "a").read_text() == "one\n"
    assert (out / "a").stat().st_uid == 1000            # owners kept on the host
    user("cp", "box:data/a", str(out / "renamed"))      # relative to the container's /
    assert (out / "renamed").read_text() == "one\n"
    user("cp", "box:/data/sub/b", str(out / "a"))       # a file onto a file
    assert (out / "a").read_text() == "two\n"
    user("cp", "box:/data", str(out))                   # a directory into a directory
    assert (out / "data" / "sub" / "b").read_text() == "two\n"
    user("cp", "box:/data/.", str(out / "contents"))    # contents of, to a new name
    assert sorted(os.listdir(out / "contents")) == ["a", "sub"]
    refused = user("cp", "box:/data", str(out / "renamed"), ok=False)
    assert refused.returncode == 1 and "cannot overwrite non-directory" in refused.stderr
    missing = user("cp", "box:/nothing", str(out), ok=False)
    assert missing.returncode == 1
    assert "Could not find the file /nothing in container box" in missing.stderr
    assert _tar_names(_bytes(user, "cp", "box:/data", "-")) == \
        ["data", "data/a", "data/sub", "data/sub/b"]


def test_cp_into_a_container_running_or_stopped(user: User, tmp_path: Path) -> None:
    _running(user, "mkdir /dir")
    (tmp_path / "file").write_text("host file\n")
    os.chown(tmp_path / "file", 1000, 1000)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("deep\n")
    user("cp", str(tmp_path / "file"), "box:/dir")      # into a directory
    user("cp", str(tmp_path / "file"), "box:/new")      # a new name
    user("cp", "-a", str(tmp_path / "file"), "box:/kept")
    user("cp", str(tree), "box:/dir/")                  # a directory into a directory
    user("cp", str(tree) + "/.", "box:/copied")         # contents of, to a new name
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo("streamed")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"tar\n"))
    _bytes(user, "cp", "-", "box:/dir", stdin=stream.getvalue())
    shown = user("exec", "box", "sh", "-c",
                 "cat /dir/file /new /dir/tree/sub/f /copied/sub/f /dir/streamed; "
                 "stat -c %u /new /kept").stdout
    assert shown == "host file\nhost file\ndeep\ndeep\ntar\n0\n1000\n"
    user("stop", "-t", "0", "box")
    # Stopped: the snapshot is mounted for the copy, and unmounted after (the fixture
    # checks that no mount is left).
    user("cp", str(tmp_path / "file"), "box:/later")
    user("cp", "box:/later", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "host file\n"
    user("start", "box")
    assert user("exec", "box", "cat", "/later").stdout == "host file\n"


def test_cp_stays_inside_the_container(user: User, tmp_path: Path) -> None:
    _running(user, "ln -s / /evil; echo container shadow > /etc/shadow")
    user("cp", "box:/evil/etc/shadow", str(tmp_path / "shadow"))
    assert (tmp_path / "shadow").read_text() == "container shadow\n"
    user("cp", "box:../../../etc/passwd", str(tmp_path / "passwd"))
    assert (tmp_path / "passwd").read_text() == \
        user("exec", "box", "cat", "/etc/passwd").stdout
    assert (tmp_path / "passwd").read_bytes() != Path("/etc/passwd").read_bytes()
    host_name = f"dockyard-cp-{secrets.token_hex(6)}"
    (tmp_path / "hostfile").write_text("written inside\n")
    user("cp", str(tmp_path / "hostfile"), f"box:/evil/{host_name}")
    user("cp", str(tmp_path / "hostfile"), f"box:../../{host_name}-2")
    assert not os.path.lexists(f"/{host_name}") and not os.path.lexists(f"/{host_name}-2")
    assert user("exec", "box", "cat", f"/{host_name}", f"/{host_name}-2").stdout == \
        "written inside\n" * 2
    # -L follows a symlink at the end, in the container's root too.
    user("cp", "-L", "box:/evil", str(tmp_path / "followed"))
    assert (tmp_path / "followed" / "etc" / "shadow").read_text() == "container shadow\n"


def test_cp_through_a_symlink_swapped_while_copying(user: User, tmp_path: Path) -> None:
    host_passwd = Path("/etc/passwd").read_bytes()
    # /d flips between a symlink to / and a directory, as fast as the shell can.
    _running(user, "(while :; do rm -rf /d; ln -s / /d; rm /d; mkdir -p /d/etc; "
                   "echo dir > /d/etc/passwd; done) & true")
    copied = 0
    for n in range(30):
        target = tmp_path / f"copy{n}"
        if user("cp", "box:/d/etc/passwd", str(target), ok=False).returncode == 0:
            copied += 1
            assert target.read_bytes() != host_passwd
    assert copied, "no copy went through"


def test_diff_lists_the_changes(user: User) -> None:
    _running(user, "touch /new; rm /etc/group; echo more >> /etc/passwd; mkdir -p /a/b")
    lines = user("diff", "box").stdout.splitlines()
    assert lines == ["A /a", "A /a/b", "C /etc", "D /etc/group", "C /etc/passwd", "A /new",
                     "A /ready"]
    user("stop", "-t", "0", "box")
    assert user("diff", "box").stdout.splitlines() == lines


def test_commit_then_run_the_new_image(user: User) -> None:
    _running(user, "echo committed > /made; rm /etc/group")
    image_id = user("commit", "-c", "ENV FROM_COMMIT=yes", "-m", "a message", "-a", "me",
                    "box", "snap:v1").stdout.strip()
    assert image_id.startswith("sha256:")
    assert user("images", "-q", "--no-trunc", "snap:v1").stdout.strip() == image_id
    out = user("run", "--rm", "snap:v1", "sh", "-c",
               "cat /made; echo $FROM_COMMIT; test -e /etc/group || echo gone").stdout
    assert out == "committed\nyes\ngone\n"
    assert user("image", "inspect", "-f", "{{.Author}}", "snap:v1").stdout == "me\n"
    assert "a message" in user("history", "snap:v1").stdout
    # The container went on running (it was paused for the commit only).
    assert user("exec", "box", "cat", "/made").stdout == "committed\n"
    bad = user("commit", "-c", "RUN true", "box", ok=False)
    assert bad.returncode == 1 and "RUN is not supported" in bad.stderr


def test_export_writes_the_whole_filesystem(user: User, tmp_path: Path) -> None:
    _running(user, "echo exported > /made")
    names = _tar_names(_bytes(user, "export", "box"))
    assert {"bin/busybox", "made", "etc/passwd"} <= set(names)
    user("stop", "-t", "0", "box")
    user("export", "-o", str(tmp_path / "box.tar"), "box")
    with tarfile.open(tmp_path / "box.tar") as tar:
        made = tar.extractfile("made")
        assert made is not None and made.read() == b"exported\n"

