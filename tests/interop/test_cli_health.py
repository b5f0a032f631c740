"""Healthchecks through the CLI, as Docker runs them: ``--health-*`` flags, the monitor's
probes in the container, ``inspect``'s ``State.Health``, ``ps``' STATUS and its
``health`` filter, and the ``health_status`` events.

The roots, the busybox image and the leftovers check are those of
``test_cli_containers`` (its ``user`` fixture). Intervals are a fraction of a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from dockyard.engine.containers import parse_timestamp
from interop.test_cli_containers import User, user

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
]

__all__ = ["user"]  # the fixture, imported for the tests below

FAST = ("--health-interval", "0.2s", "--health-timeout", "2s")


def _health(user: User, name: str) -> dict[str, Any]:
    state = json.loads(user("inspect", name).stdout)[0]["State"]
    return state.get("Health") or {}


def _until(what: str, check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still not {what} after {timeout}s"
        time.sleep(0.1)


def _status(user: User, name: str) -> str:
    return user("ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}").stdout


def _health_events(user: User, cid: str) -> list[str]:
    path = user.home / "root" / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [event["Action"] for event in map(json.loads, lines)
            if event["Actor"]["ID"] == cid and event["Action"].startswith("health_status")]


def test_health_goes_starting_healthy_unhealthy(user: User) -> None:
    # Healthy while /tmp/ok exists. Failures within the start period do not count while
    # it never passed: it stays starting until the file is there.
    cid = user("run", "-d", "--name", "web", *FAST, "--health-retries", "2",
               "--health-start-period", "60s", "--health-cmd",
               "test -e /tmp/ok && echo fine", "busybox", "sleep", "60").stdout.strip()
    user.ids.add(cid)
    _until("probed", lambda: len(_health(user, "web").get("Log", [])) >= 2)
    assert _health(user, "web")["Status"] == "starting"
    assert "(health: starting)" in _status(user, "web")
    assert user("ps", "-q", "--filter", "health=starting").stdout.split() == [cid[:12]]
    user("exec", "web", "touch", "/tmp/ok")
    _until("healthy", lambda: _health(user, "web").get("Status") == "healthy")
    assert "(healthy)" in _status(user, "web")
    assert user("ps", "-q", "--filter", "health=healthy").stdout.split() == [cid[:12]]
    health = _health(user, "web")
    assert health["FailingStreak"] == 0
    last = health["Log"][-1]
    assert (last["ExitCode"], last["Output"]) == (0, "fine\n")
    assert parse_timestamp(last["Start"]) <= parse_timestamp(last["End"])
    # Once it passed, the start period no longer excuses failures.
    user("exec", "web", "rm", "/tmp/ok")
    _until("unhealthy", lambda: _health(user, "web").get("Status") == "unhealthy")
    health = _health(user, "web")
    assert health["FailingStreak"] >= 2
    assert len(health["Log"]) == 5  # Docker keeps the last five
    assert "(unhealthy)" in _status(user, "web")
    assert user("ps", "-q", "--filter", "health=unhealthy").stdout.split() == [cid[:12]]
    assert user("ps", "-q", "--filter", "health=healthy").stdout.split() == []
    assert user("ps", "-q", "--filter", "health=none").stdout.split() == []
    # One event per change of status.
    assert _health_events(user, cid) == ["health_status: healthy",
                                         "health_status: unhealthy"]


def test_timeout_output_cut_and_exec_form(user: User) -> None:
    cid = user("run", "-d", "--name", "slow", "--health-interval", "0.2s",
               "--health-timeout", "0.3s", "--health-retries", "1",
               "--health-cmd", "sleep 5", "busybox", "sleep", "60").stdout.strip()
    user.ids.add(cid)
    _until("unhealthy", lambda: _health(user, "slow").get("Status") == "unhealthy")
    entry = _health(user, "slow")["Log"][0]
    assert entry["ExitCode"] == -1
    assert entry["Output"] == "Health check exceeded timeout (300ms)"
    # Output beyond 4096 bytes is cut; the exit code of the probe is kept.
    user("run", "-d", "--name", "loud", *FAST, "--health-cmd",
         "yes | head -c 10000; exit 1", "busybox", "sleep", "60")
    _until("probed", lambda: bool(_health(user, "loud").get("Log")))
    entry = _health(user, "loud")["Log"][0]
    assert (entry["ExitCode"], len(entry["Output"])) == (1, 4096)


def test_start_period_failures_do_not_count(user: User) -> None:
    user("run", "-d", "--name", "slowstart", *FAST, "--health-retries", "1",
         "--health-start-period", "30s", "--health-start-interval", "0.3s",
         "--health-cmd", "exit 1", "busybox", "sleep", "60")
    _until("probed", lambda: len(_health(user, "slowstart").get("Log", [])) >= 3)
    health = _health(user, "slowstart")
    assert (health["Status"], health["FailingStreak"]) == ("starting", 0)
    # A new start keeps the past probes, as dockerd does.
    user("restart", "-t", "0", "slowstart")
    again = json.loads(user("inspect", "slowstart").stdout)[0]["State"]
    assert again["Health"]["Status"] == "starting"
    assert min(parse_timestamp(entry["Start"]) for entry in again["Health"]["Log"]) < \
        parse_timestamp(again["StartedAt"])


def test_no_healthcheck_and_bad_flags(user: User) -> None:
    user("run", "-d", "--name", "plain", "busybox", "sleep", "60")
    assert _health(user, "plain") == {}
    assert user("ps", "-q", "--filter", "health=none").stdout.strip()
    assert "(" not in _status(user, "plain")
    bad = user("run", "--no-healthcheck", "--health-cmd", "true", "busybox", "true",
               ok=False)
    assert bad.returncode == 125 and "--no-healthcheck conflicts" in bad.stderr
    bad = user("run", "--health-interval", "soon", "busybox", "true", ok=False)
    assert bad.returncode == 125 and "--health-interval" in bad.stderr
    bad = user("ps", "--filter", "health=fine", ok=False)
    assert bad.returncode != 0 and "Unrecognised filter value for health: fine" in bad.stderr


def test_health_probe_runs_as_exec_does(user: User) -> None:
    # The probe gets the container's user, environment and working directory.
    user("run", "-d", "--name", "who", *FAST, "-u", "nobody", "-w", "/tmp", "-e", "X=42",
         "--health-cmd", 'echo "$(id -u) $PWD $X"', "busybox", "sleep", "60")
    _until("healthy", lambda: _health(user, "who").get("Status") == "healthy")
    assert _health(user, "who")["Log"][-1]["Output"] == "65534 /tmp 42\n"
