"""The container lifecycle commands beyond run and stop, through the CLI: ``pause`` and
``unpause`` (the cgroup freezer), ``restart``, ``rename``, ``update`` (live cgroup limits
and the stored restart policy), ``container prune``, ``top``, ``port`` and ``stats``.

The roots, the busybox image and the leftovers check are those of
``test_cli_containers`` (its ``user`` fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from dockyard.linux.cgroups import open_cgroup
from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

# A container that ends at once on SIGTERM (a plain `sleep` as pid 1 ignores it).
SERVE = ["sh", "-c", "trap 'exit 0' TERM; echo started; while :; do sleep 0.1; done"]


def _run(user: User, *flags: str, command: list[str] = SERVE) -> str:
    cid = user("run", "-d", *flags, "busybox", *command).stdout.strip()
    user.ids.add(cid)
    return cid


def _inspect(user: User, name: str) -> dict[str, Any]:
    return json.loads(user("inspect", name).stdout)[0]


def _limit(cid: str, v1: str, v2: str) -> str:
    """A control file of the container's cgroup, by its v1 or v2 name."""
    cgroup = open_cgroup(f"/dockyard/{cid}")
    return cgroup.read(v1 if cgroup.version == "v1" else v2)


def test_pause_and_unpause(user: User) -> None:
    cid = _run(user, "--name", "web")
    assert user("pause", "web").stdout == "web\n"
    row = user("ps").stdout.splitlines()[1]
    assert " (Paused)" in row and " Up " in row
    assert user("ps", "-q", "-f", "status=paused").stdout == cid[:12] + "\n"
    state = _inspect(user, "web")["State"]
    assert (state["Status"], state["Paused"], state["Running"]) == ("paused", True, True)
    refused = user("exec", "web", "true", ok=False)
    assert refused.returncode == 1
    assert refused.stderr == (f"Error response from daemon: Container {cid} is paused, "
                              "unpause the container before exec\n")
    again = user("pause", "web", ok=False)
    assert again.returncode == 1 and f"Container {cid} is already paused" in again.stderr
    assert user("container", "unpause", "web").stdout == "web\n"
    assert _inspect(user, "web")["State"]["Status"] == "running"
    assert user("exec", "web", "true").returncode == 0
    not_paused = user("unpause", "web", ok=False)
    assert not_paused.returncode == 1 and f"Container {cid} is not paused" in not_paused.stderr
    # A paused container stops (it is thawed to get the signal) without waiting for
    # the kill timeout.
    user("container", "pause", "web")
    started = time.monotonic()
    user("stop", "-t", "30", "web")
    assert time.monotonic() - started < 20
    assert _inspect(user, "web")["State"]["ExitCode"] == 0
    stopped = user("pause", "web", ok=False)
    assert stopped.returncode == 1 and f"container {cid} is not running" in stopped.stderr
    missing = user("pause", "nothing", "web", ok=False)
    assert missing.returncode == 1 and "No such container: nothing" in missing.stderr


def test_restart_starts_a_new_run(user: User) -> None:
    _run(user, "--name", "web")
    first = _inspect(user, "web")["State"]
    assert user("restart", "-t", "5", "web").stdout == "web\n"
    second = _inspect(user, "web")
    assert second["State"]["Status"] == "running"
    assert second["State"]["Pid"] != first["Pid"]
    assert second["State"]["StartedAt"] > first["StartedAt"]
    assert second["RestartCount"] == 0  # a manual restart is no restart of the policy
    user("stop", "web")
    assert user("container", "restart", "web").stdout == "web\n"  # a stopped one starts
    assert _inspect(user, "web")["State"]["Status"] == "running"
    deadline = time.monotonic() + 10
    while user("logs", "web").stdout != "started\n" * 3:
        assert time.monotonic() < deadline, user("logs", "web").stdout
        time.sleep(0.05)
    missing = user("restart", "nothing", ok=False)
    assert missing.returncode == 1 and "No such container: nothing" in missing.stderr


def test_rename(user: User) -> None:
    cid = user("create", "--name", "old", "busybox", "true").stdout.strip()
    user.ids.add(cid)
    other = user("create", "--name", "other", "busybox", "true").stdout.strip()
    user.ids.add(other)
    assert user("rename", "old", "new").stdout == ""
    assert _inspect(user, cid)["Name"] == "/new"
    assert user("inspect", "old", ok=False).returncode == 1
    cases = {
        ("new", "new"): "Renaming a container with the same name as its current name",
        ("new", "a b"): "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                        "allowed",
        ("new", "other"): f'Conflict. The container name "/other" is already in use by '
                          f'container "{other}". You have to remove (or rename) that '
                          "container to be able to reuse that name.",
        ("nothing", "x1"): "No such container: nothing",
    }
    for (old, new), message in cases.items():
        refused = user("container", "rename", old, new, ok=False)
        assert (refused.returncode, refused.stderr) == (
            1, f"Error response from daemon: {message}\n")
    user("rename", cid[:12], "renamed")
    assert sorted(user("ps", "-a", "--format", "{{.Names}}").stdout.split()) == [
        "other", "renamed"]


def test_update_limits_live_and_stored(user: User) -> None:
    cid = _run(user, "--name", "web", "-m", "64m")
    assert _limit(cid, "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert user("update", "--memory", "96m", "--memory-swap", "256m", "--cpus", "0.5",
                "--cpu-shares", "512", "--pids-limit", "30", "--restart", "on-failure:2",
                "web").stdout == "web\n"
    assert _limit(cid, "memory.limit_in_bytes", "memory.max") == str(96 << 20)
    assert _limit(cid, "pids.max", "pids.max") == "30"
    assert _limit(cid, "cpu.cfs_quota_us", "cpu.max").split()[0] == "50000"
    host = _inspect(user, "web")["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["CpuShares"],
            host["PidsLimit"]) == (96 << 20, 256 << 20, 500_000_000, 512, 30)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    # The next run gets the new limits too; -1 lifts the pids limit.
    user("container", "update", "--pids-limit", "-1", "web")
    assert _limit(cid, "pids.max", "pids.max") == "max"
    user("restart", "web")
    assert _limit(cid, "memory.limit_in_bytes", "memory.max") == str(96 << 20)
    assert _limit(cid, "pids.max", "pids.max") == "max"

    errors = {
        ("-m", "1m"): "Error response from daemon: Minimum memory limit allowed is 6MB",
        ("-m", "300m"): f"Error response from daemon: Cannot update container {cid}: "
                        "Memory limit should be smaller than already set memoryswap "
                        "limit, update the memoryswap at the same time",
        (): "Error: you must provide one or more flags when using this command",
    }
    for flags, message in errors.items():
        refused = user("update", *flags, "web", ok=False)
        assert (refused.returncode, refused.stderr) == (1, message + "\n")
    assert _limit(cid, "memory.limit_in_bytes", "memory.max") == str(96 << 20)
    removed = _run(user, "--rm")
    refused = user("update", "--restart", "always", removed, ok=False)
    assert refused.returncode == 1
    assert "Restart policy cannot be updated because AutoRemove is enabled" in refused.stderr


def test_update_restart_policy_is_used_by_the_next_start(user: User) -> None:
    cid = user("create", "--name", "flaky", "busybox", "sh", "-c", "exit 3").stdout.strip()
    user.ids.add(cid)
    user("update", "--restart", "on-failure:2", "flaky")
    user("start", "flaky")
    assert user("wait", "flaky").stdout == "3\n"
    info = _inspect(user, "flaky")
    assert info["RestartCount"] == 2 and info["State"]["ExitCode"] == 3


def test_container_prune(user: User) -> None:
    running = _run(user, "--name", "web")
    plain = user("create", "busybox", "true").stdout.strip()
    user("run", "--name", "done", "busybox", "true")
    done = _inspect(user, "done")["Id"]
    labelled = user("create", "-l", "keep=no", "busybox", "true").stdout.strip()
    user.ids.update({plain, done, labelled})
    declined = subprocess.run([*user.base, "container", "prune"], input="n\n",
                              capture_output=True, text=True, check=False)
    assert declined.returncode == 0
    assert "WARNING! This will remove all stopped containers." in declined.stdout
    assert len(user.all_ids()) == 4
    assert user("container", "prune", "-f", "--filter", "until=1h").stdout == \
        "Total reclaimed space: 0B\n"
    only = user("container", "prune", "-f", "--filter", "label=keep=no").stdout
    assert only.startswith(f"Deleted Containers:\n{labelled}\n\nTotal reclaimed space: ")
    out = user("container", "prune", "--force").stdout.splitlines()
    assert out[0] == "Deleted Containers:"
    assert sorted(out[1:3]) == sorted([plain, done])
    assert out[3] == "" and out[4].startswith("Total reclaimed space: ")
    assert user.all_ids() == [running]
    bad = user("container", "prune", "-f", "--filter", "color=red", ok=False)
    assert bad.returncode == 1 and "invalid filter 'color'" in bad.stderr


def test_top(user: User) -> None:
    _run(user, "--name", "web", command=["sh", "-c", "sleep 1000 & sleep 2000"])
    lines = user("top", "web").stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert lines[0].startswith("UID" + " " * 17 + "PID")  # docker's 20-wide cells
    # busybox sh execs its last command: two sleeps are the container's processes.
    commands = sorted(line.split(None, 7)[7] for line in lines[1:])
    assert commands == ["sleep 1000", "sleep 2000"]
    custom = user("container", "top", "web", "-o", "pid,comm").stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(line.split()[1] for line in custom[1:]) == ["sleep", "sleep"]
    user("kill", "web")
    stopped = user("top", "web", ok=False)
    assert stopped.returncode == 1 and "is not running" in stopped.stderr


def test_port_without_published_ports(user: User) -> None:
    _run(user, "--name", "web")
    assert user("port", "web").stdout == ""
    assert user("container", "port", "web").stdout == ""
    asked = user("port", "web", "80", ok=False)
    assert (asked.returncode, asked.stderr) == (
        1, "Error: No public port '80/tcp' published for web\n")
    missing = user("port", "nothing", ok=False)
    assert (missing.returncode, missing.stderr) == (
        1, "Error response from daemon: No such container: nothing\n")


def test_stats_no_stream(user: User) -> None:
    busy = _run(user, "--name", "busy", "--network", "none", "-m", "64m", "--pids-limit", "20",
                command=["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"])
    user("create", "--name", "idle", "busybox", "true")
    lines = user("stats", "--no-stream").stdout.splitlines()
    assert [column.strip() for column in lines[0].split("   ") if column] == [
        "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
        "BLOCK I/O", "PIDS"]
    assert len(lines) == 2  # running containers only
    row = lines[1].split()
    assert row[:2] == [busy[:12], "busy"]
    assert row[2].endswith("%") and float(row[2][:-1]) > 1.0
    assert row[4:6] == ["/", "64MiB"]
    assert row[6].endswith("%")
    assert row[7:10] == ["0B", "/", "0B"]  # only lo in its network namespace
    assert row[-1] == "1"
    everyone = user("container", "stats", "--no-stream", "-a", "--format",
                    "{{.Name}} {{.MemUsage}} {{.PIDs}}").stdout.splitlines()
    assert sorted(everyone)[1] == "idle 0B / 0B 0"
    assert user("stats", "--no-stream", "--format", "{{.Container}}", "busy").stdout == \
        busy + "\n"
    missing = user("stats", "--no-stream", "nothing", ok=False)
    assert missing.returncode == 1 and "No such container: nothing" in missing.stderr
