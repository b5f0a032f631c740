"""Bad input to ``dockyard-runtime``: one line of error, a non-zero status, nothing left.

"Nothing left" is what a user could find afterwards: no state directory under
``--root``, no cgroup named after the container, no process of it, no mount.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(180),
]


def create_fails(dy: Any, bundle: Path, *words: str, cid: str | None = None) -> str:
    """``create`` of ``bundle`` fails with one line mentioning ``words``, leaving nothing."""
    cid = cid if cid is not None else dy.new_id()
    line = dy.one_line_error(dy("create", "--bundle", str(bundle), cid), *words)
    dy.assert_nothing_left(cid)
    return str(line)


def edited_bundle(dy: Any, edit: Any) -> Path:
    """A bundle whose config.json is ``edit(spec)`` (which changes the spec in place)."""
    spec = dy.spec(["sleep", "300"])
    edit(spec)
    return Path(dy.bundle_from_spec(spec))


def test_malformed_config_json(dy: Any) -> None:
    bundle = dy.bundle(["true"])
    (bundle / "config.json").write_text('{"ociVersion": "1.2.0", "process": {')
    create_fails(dy, bundle, "config.json")


def test_config_json_that_is_not_an_object(dy: Any) -> None:
    bundle = dy.bundle(["true"])
    (bundle / "config.json").write_text("[1, 2]")
    create_fails(dy, bundle, "config.json")


def test_missing_config_json(dy: Any) -> None:
    bundle = dy.bundle(["true"])
    (bundle / "config.json").unlink()
    create_fails(dy, bundle, "config.json")


def test_uid_as_a_string(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["user"]["uid"] = "1000"

    create_fails(dy, edited_bundle(dy, edit), "uid")


def test_missing_rootfs(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["root"]["path"] = "no-such-rootfs"

    create_fails(dy, edited_bundle(dy, edit), "no-such-rootfs")


def test_unknown_namespace_type(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"].append({"type": "bogus"})

    create_fails(dy, edited_bundle(dy, edit), "bogus")


def test_namespace_path_that_does_not_exist(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [
            ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"
        ] + [{"type": "network", "path": "/run/netns/no-such-netns"}]

    create_fails(dy, edited_bundle(dy, edit), "/run/netns/no-such-netns")


def test_unknown_capability(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["capabilities"]["bounding"].append("CAP_NO_SUCH_THING")

    create_fails(dy, edited_bundle(dy, edit), "CAP_NO_SUCH_THING")


def test_unknown_rlimit(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1})

    create_fails(dy, edited_bundle(dy, edit), "RLIMIT_BOGUS")


def test_empty_args(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["args"] = []

    create_fails(dy, edited_bundle(dy, edit), "args")


def test_unknown_sysctl(dy: Any) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["sysctl"] = {"net.no.such.key": "1"}

    create_fails(dy, edited_bundle(dy, edit), "net.no.such.key")


@pytest.mark.parametrize("bad_id", ["../x", "", "a/b", ".."])
def test_invalid_container_id(dy: Any, bad_id: str) -> None:
    bundle = dy.bundle(["true"])
    line = dy.one_line_error(dy("create", "--bundle", str(bundle), bad_id), "container ID")
    assert "invalid" in line.lower()
    # Nothing at all under the root, nor next to it.
    leftovers = [p.name for p in dy.root.iterdir()] if dy.root.exists() else []
    assert [p for p in leftovers if not p.startswith(".")] == []
    assert not (dy.root.parent / "x").exists()
    dy.assert_nothing_left("")


def test_duplicate_id(dy: Any) -> None:
    cid = dy.start(["sleep", "300"])
    first = dy.state(cid)
    second_bundle = dy.bundle(["sleep", "300"])
    dy.one_line_error(dy("create", "--bundle", str(second_bundle), cid), cid, "exists")
    # The first container is intact.
    assert dy.state(cid) == first
    assert dy.status(cid) == "running"
    assert dy.processes_rooted_in(second_bundle) == []
    dy.ok("delete", "--force", cid)
    dy.assert_nothing_left(cid)


def test_command_not_found(dy: Any) -> None:
    result = dy.run(["no-such-command", "arg"])
    assert result.returncode == 127
    line = dy.one_line_error(result, "executable file not found")
    assert "no-such-command" in line
    assert dy.ok("list", "-q").stdout.split() == []


def test_command_not_found_at_create(dy: Any) -> None:
    bundle = dy.bundle(["/no/such/binary"])
    cid = dy.new_id()
    result = dy("create", "--bundle", str(bundle), cid)
    assert result.returncode == 127
    dy.one_line_error(result, "/no/such/binary")
    dy.assert_nothing_left(cid)


def test_command_not_executable(dy: Any) -> None:
    bundle = dy.bundle(["/etc/passwd"])
    result = dy("run", "--bundle", str(bundle), dy.new_id())
    assert result.returncode == 126
    dy.one_line_error(result, "permission denied")


def test_bundle_that_does_not_exist(dy: Any, tmp_path: Path) -> None:
    create_fails(dy, tmp_path / "nowhere", "nowhere")


def test_unknown_container_for_each_command(dy: Any) -> None:
    for command in (["start"], ["state"], ["kill"], ["delete"], ["pause"], ["resume"],
                    ["exec"], ["ps"], ["update", "--memory", "64m"]):
        args = [*command, "no-such-id"] + (["true"] if command == ["exec"] else [])
        dy.one_line_error(dy(*args), "no-such-id")


def test_unknown_signal(dy: Any) -> None:
    cid = dy.start(["sleep", "300"])
    dy.one_line_error(dy("kill", cid, "SIGNOPE"), "SIGNOPE")
    assert dy.status(cid) == "running"


def test_kill_9_of_create_in_the_middle_then_delete_force(dy: Any, tmp_path: Path) -> None:
    """``create`` killed while a createRuntime hook runs: ``delete --force`` cleans all."""
    marker = tmp_path / "hook.pid"
    cid = dy.new_id()
    bundle = dy.bundle(["sleep", "300"], hooks={"createRuntime": [{
        "path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {marker}.tmp; "
                                                f"mv {marker}.tmp {marker}; exec sleep 60"]}]})
    create = dy.popen("create", "--bundle", str(bundle), cid,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hook_pid = 0
    try:
        dy.wait_for(marker.exists, 30, "the createRuntime hook to run")
        hook_pid = int(marker.read_text())
        # The container's cgroup and init exist now; its state is half written.
        assert dy.cgroups(cid)
        create.send_signal(signal.SIGKILL)
        assert create.wait(10) == -signal.SIGKILL
    finally:
        dy.kill_quietly(create.pid)
        create.wait()
        if hook_pid:
            dy.kill_quietly(hook_pid)  # the hook runs on the host, outside the container
    assert create.stderr is not None
    create.stderr.close()

    # Whatever the next command finds, it does not lie and it can clean up.
    listed = dy("list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    for row in json.loads(listed.stdout or "[]"):
        assert row["status"] != "running"
    dy.ok("delete", "--force", cid)
    deadline = time.monotonic() + 10
    while dy.leftovers(cid) and time.monotonic() < deadline:
        time.sleep(0.1)
    dy.assert_nothing_left(cid)
