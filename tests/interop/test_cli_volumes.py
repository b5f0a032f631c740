"""A user's session with the volume commands of ``dockyard``: create, ls, inspect, rm,
prune, each through a real process with its own ``--root``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))


class User:
    """Runs ``dockyard --root ROOT volume ...`` as one person would."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, *args: str, stdin: str = "",
                 status: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([DOCKYARD, "--root", str(self.root), "volume", *args],
                                input=stdin, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == status, \
            f"dockyard volume {' '.join(args)}: {result.returncode}\n{result.stderr}"
        return result


@pytest.fixture
def user(tmp_path: Path) -> User:
    return User(tmp_path / "root")


def test_create_ls_inspect_and_rm(user: User) -> None:
    assert user("create", "--label", "app=web", "-o", "type=tmpfs", "-o", "device=tmpfs",
                "-o", "o=size=1m", "web").stdout == "web\n"
    assert user("create", "--name", "db").stdout == "db\n"
    anonymous = user("create").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", anonymous)

    listing = user("ls").stdout.splitlines()
    assert re.fullmatch(r"DRIVER\s{3,}VOLUME NAME", listing[0])
    # Sorted by name, as docker lists them; where the random name falls varies.
    assert [line.split() for line in listing[1:]] == sorted(
        [["local", anonymous], ["local", "db"], ["local", "web"]], key=lambda row: row[1])
    assert user("ls", "-q", "-f", "label=app=web").stdout == "web\n"
    assert user("ls", "-q", "--filter", "name=^db").stdout == "db\n"
    assert user("ls", "--format", "{{.Name}}: {{.Labels}}", "-f", "name=web").stdout == \
        "web: app=web\n"

    inspected = json.loads(user("inspect", "web", "db").stdout)
    assert [v["Name"] for v in inspected] == ["web", "db"]
    assert inspected[0]["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    assert inspected[0]["Labels"] == {"app": "web"}
    assert user("inspect", "-f", "{{.Mountpoint}}", "db").stdout == \
        f"{user.root}/volumes/db/_data\n"
    missing = user("inspect", "db", "nope", status=1)
    assert [v["Name"] for v in json.loads(missing.stdout)] == ["db"]
    assert missing.stderr == "Error: get nope: no such volume\n"

    removed = user("rm", "web", "nope", "db", status=1)
    assert removed.stdout == "web\ndb\n"
    assert removed.stderr == "Error: get nope: no such volume\n"
    assert user("rm", "-f", "nope").returncode == 0
    assert user("ls", "-q").stdout == f"{anonymous}\n"


def test_bad_input_is_one_line_and_a_failure(user: User) -> None:
    bad = user("create", "a/b", status=1)
    assert bad.stderr.startswith('Error: create a/b: "a/b" includes invalid characters')
    assert bad.stderr.count("\n") == 1
    assert "conflicting options" in user("create", "--name", "x1", "x2", status=1).stderr
    assert user("create", "-o", "color=red", "v1", status=1).stderr == \
        'Error: invalid option: "color"\n'
    assert user("ls", "-f", "color=red", status=1).stderr == "Error: invalid filter 'color'\n"
    assert user("ls", "-q").stdout == ""


def test_prune(user: User) -> None:
    anonymous = user("create").stdout.strip()
    user("create", "named")
    # Asked, and answered no: nothing goes.
    declined = user("prune", stdin="n\n")
    assert "WARNING! This will remove anonymous local volumes not used by at least one " \
        "container." in declined.stdout
    assert len(user("ls", "-q").stdout.split()) == 2

    assert user("prune", stdin="y\n").stdout.endswith(
        f"Deleted Volumes:\n{anonymous}\n\nTotal reclaimed space: 0B\n")
    assert user("prune", "-f").stdout == "Total reclaimed space: 0B\n"
    Path(user("inspect", "-f", "{{.Mountpoint}}", "named").stdout.strip(),
         "blob").write_bytes(b"x" * 2500)
    assert user("prune", "-a", "-f").stdout == \
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 2.5kB\n"
    assert user("ls", "-q").stdout == ""
