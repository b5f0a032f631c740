"""``--runtime`` and ``$DOCKYARD_RUNTIME``: containers run under crun or runc, driven
by the monitor through their runc-compatible command line, next to dockyard's own.

The roots, the busybox image and the leftovers check are those of
``test_cli_containers`` (its ``user`` fixture). The rest of the container suite runs
again with crun from run-tests.sh; this file checks that crun is really the one
running them, and the runtime's choice itself.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below


def _peer_state(user: User, runtime: str, cid: str) -> dict[str, object]:
    """The container as the runtime binary itself sees it, in its state root."""
    root = user.home / "run" / f"runtime-{runtime}"
    out = subprocess.run([runtime, "--root", str(root), "state", cid], capture_output=True,
                         text=True, check=True).stdout
    return dict(json.loads(out))


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_runtime_binary_runs_the_container(user: User, runtime: str) -> None:
    cid = user("run", "-d", "--runtime", runtime, "busybox", "sh", "-c",
               "trap 'exit 0' TERM; while :; do sleep 0.1; done").stdout.strip()
    user.ids.add(cid)
    info = json.loads(user("inspect", cid).stdout)[0]
    assert info["HostConfig"]["Runtime"] == runtime
    state = _peer_state(user, runtime, cid)
    assert (state["status"], state["pid"]) == ("running", info["State"]["Pid"])
    assert user("exec", cid, "echo", "in", runtime).stdout == f"in {runtime}\n"
    user("pause", cid)
    assert _peer_state(user, runtime, cid)["status"] == "paused"
    user("unpause", cid)
    user("stop", cid)
    assert json.loads(user("inspect", cid).stdout)[0]["State"]["ExitCode"] == 0
    assert not (user.home / "run" / f"runtime-{runtime}" / cid).exists()
    result = user("run", "--rm", "--runtime", runtime, "busybox", "sh", "-c",
                  "echo out; echo err >&2; exit 3", ok=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_default_runtime_from_the_environment(user: User,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_RUNTIME", raising=False)
    own = user("create", "busybox", "true").stdout.strip()
    assert json.loads(user("inspect", own).stdout)[0]["HostConfig"]["Runtime"] == "dockyard"
    monkeypatch.setenv("DOCKYARD_RUNTIME", "crun")
    cid = user("run", "-d", "busybox", "sleep", "60").stdout.strip()
    assert json.loads(user("inspect", cid).stdout)[0]["HostConfig"]["Runtime"] == "crun"
    assert _peer_state(user, "crun", cid)["status"] == "running"
    # The flag wins over the default; a container keeps its runtime when started again.
    mine = user("create", "--runtime", "dockyard", "busybox", "true").stdout.strip()
    monkeypatch.setenv("DOCKYARD_RUNTIME", "runc")
    assert user("start", "-a", mine).returncode == 0
    assert json.loads(user("inspect", mine).stdout)[0]["HostConfig"]["Runtime"] == "dockyard"
    user("rm", "-f", cid)
    assert not (user.home / "run" / "runtime-crun" / cid).exists()


def test_bad_runtimes_are_refused(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = user("run", "--rm", "--runtime", "nope", "busybox", "true", ok=False)
    assert bad.returncode == 125
    assert "unknown or invalid runtime name: nope" in bad.stderr
    monkeypatch.setenv("DOCKYARD_RUNTIME", "../crun")
    bad = user("create", "busybox", "true", ok=False)
    assert bad.returncode == 125 and "invalid runtime name: ../crun" in bad.stderr
    assert user.all_ids() == []


def test_command_errors_through_crun(user: User) -> None:
    missing = user("run", "--rm", "--runtime", "crun", "busybox", "nonexistent", ok=False)
    assert missing.returncode == 127
    assert 'exec: "nonexistent": executable file not found in $PATH' in missing.stderr
    not_executable = user("run", "--rm", "--runtime", "crun", "busybox", "/etc", ok=False)
    assert not_executable.returncode == 126
    cid = user("run", "-d", "--runtime", "crun", "busybox", "sleep", "60").stdout.strip()
    user.ids.add(cid)
    assert user("exec", cid, "nonexistent", ok=False).returncode == 127
    assert user("exec", cid, "sh", "-c", "exit 5", ok=False).returncode == 5
