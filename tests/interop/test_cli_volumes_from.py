"""``--volumes-from`` through the real CLI: a container gets another's volumes and bind
mounts at the same places, with their modes or read-only with ``:ro``; its own ``-v``
wins over an inherited one; an anonymous volume is shared (the data container's
``rm -v`` keeps it while another container uses it, the last one's removes it); and
bad values are refused with Docker's messages.

The roots, the busybox image and the leftovers check are ``test_cli_containers``'s
(its ``user`` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interop.test_cli_containers import User, pytestmark, user

__all__ = ["pytestmark", "user"]  # root only; the fixture


def _mounts(user: User, container: str) -> dict[str, dict[str, Any]]:
    found = json.loads(user("inspect", container).stdout)[0]["Mounts"]
    return {m["Destination"]: m for m in found}


def _volumes(user: User) -> list[str]:
    return sorted(user("volume", "ls", "-q").stdout.split())


def test_volumes_and_binds_are_shared_with_their_modes(user: User, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "host-file").write_text("from the host\n")
    user("create", "--name", "data", "-v", "/anon", "-v", "named:/named",
         "-v", "conf:/conf:ro", "-v", f"{shared}:/shared", "busybox")
    anonymous = _mounts(user, "data")["/anon"]["Name"]
    user("run", "--rm", "-v", "named:/named", "busybox", "sh", "-c", "echo n > /named/f")

    script = ("echo a > /anon/f && cat /named/f /shared/host-file && echo b > /shared/out;"
              " touch /conf/x 2>/dev/null || echo conf read-only")
    result = user("run", "--name", "app", "--volumes-from", "data", "busybox", "sh", "-c",
                  script)
    assert result.stdout == "n\nfrom the host\nconf read-only\n"
    assert (shared / "out").read_text() == "b\n"
    mounts = _mounts(user, "app")
    assert set(mounts) == {"/anon", "/named", "/conf", "/shared"}
    assert (mounts["/anon"]["Name"], mounts["/anon"]["RW"]) == (anonymous, True)
    assert (mounts["/conf"]["Name"], mounts["/conf"]["RW"]) == ("conf", False)
    assert (mounts["/shared"]["Type"], mounts["/shared"]["Source"]) == ("bind", str(shared))
    assert _volumes(user) == sorted([anonymous, "named", "conf"])

    # :ro makes every inherited mount read-only; it goes on through a second hop.
    user("create", "--name", "relay", "--volumes-from", "app:ro", "busybox")
    assert {d: m["RW"] for d, m in _mounts(user, "relay").items()} == \
        {"/anon": False, "/named": False, "/conf": False, "/shared": False}
    refused = user("run", "--rm", "--volumes-from", "relay", "busybox", "sh", "-c",
                   "cat /anon/f; touch /anon/g /shared/g", ok=False)
    assert refused.stdout == "a\n"
    assert refused.stderr.count("Read-only file system") == 2
    assert not (shared / "g").exists()

    # The data container's `rm -v` keeps the anonymous volume others still use; the
    # last user's removes it. Named volumes stay, as with -v.
    user("rm", "-v", "data")
    assert anonymous in _volumes(user)
    user("rm", "-v", "relay")
    assert anonymous in _volumes(user)
    user("rm", "-v", "app")
    assert _volumes(user) == ["conf", "named"]


def test_own_mounts_win_and_image_volumes_are_not_doubled(user: User) -> None:
    user("create", "--name", "data", "-v", "first:/data", "-v", "/cache", "busybox")
    cache = _mounts(user, "data")["/cache"]["Name"]
    user("create", "--name", "app", "--volumes-from", "data", "-v", "second:/data",
         "--tmpfs", "/cache", "busybox")
    mounts = _mounts(user, "app")
    assert mounts["/data"]["Name"] == "second"
    assert mounts["/cache"]["Type"] == "tmpfs"
    # Two sources: both contribute, and no new anonymous volume is made for a place
    # an inherited one takes.
    user("create", "--name", "more", "-v", "/extra", "busybox")
    extra = _mounts(user, "more")["/extra"]["Name"]
    user("create", "--name", "both", "--volumes-from", "data", "--volumes-from", "more:rw",
         "busybox")
    assert {d: m["Name"] for d, m in _mounts(user, "both").items()} == \
        {"/data": "first", "/cache": cache, "/extra": extra}
    assert _volumes(user) == sorted([cache, extra, "first", "second"])


def test_bad_volumes_from_is_refused(user: User) -> None:
    user("create", "--name", "data", "-v", "/anon", "busybox")
    for value, message in (("nosuch", "No such container: nosuch"),
                           ("data:rx", "invalid mode: rx"),
                           ("data:ro,rw", "invalid mode: ro,rw"),
                           ("data:rshared", "invalid mode: rshared")):
        result = user("run", "--rm", "--volumes-from", value, "busybox", "true", ok=False)
        assert result.returncode == 125, value
        assert message in result.stderr, (value, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert user.all_ids() == [user.all_ids()[0]]  # only the data container
    assert len(_volumes(user)) == 1
