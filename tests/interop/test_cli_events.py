"""``dockyard events`` in a user's session: what a run, a stop and a rm leave in the
event log, in order and with Docker's attributes; the filters; ``--format``; and
``events`` left running, which prints what happens after it started, across a
rotation of the log.

The roots, the busybox image and the leftovers check are ``test_cli_containers``'s
(its ``user`` fixture).
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.runtime import eventlog
from interop.test_cli_containers import User, pytestmark, user

__all__ = ["pytestmark", "user"]  # root only; the fixture


def _now() -> str:
    return f"{time.time():.9f}"


def _messages(user: User, since: str, *flags: str) -> list[dict[str, Any]]:
    out = user("events", "--since", since, "--until", _now(), "--format", "json",
               *flags).stdout
    return [json.loads(line) for line in out.splitlines()]


def _actions(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["Type"], m["Action"]) for m in messages]


def test_a_session_is_told_in_order_with_attributes(user: User) -> None:
    since = _now()
    cid = user("run", "-d", "--name", "web", "-l", "team=blue", "busybox", "sh", "-c",
               "trap 'exit 7' TERM; while :; do sleep 0.1; done").stdout.strip()
    user.ids.add(cid)
    user("stop", "-t", "5", "web")
    user("rm", "web")
    until = _now()
    user("run", "--rm", "--name", "later", "busybox", "true")  # after --until: not shown

    everything = _messages(user, since, "--until", until)
    # The default network's events come with the container's, as in Docker.
    assert [a for t, a in _actions(everything) if t == "network"] == ["connect", "disconnect"]
    assert {m["Actor"]["Attributes"]["container"] for m in everything
            if m["Type"] == "network"} == {cid}
    messages = [m for m in everything if m["Type"] == "container"]
    assert _actions(messages) == [("container", a) for a in
                                  ("create", "start", "kill", "die", "stop", "destroy")]
    for message in messages:
        assert message["Actor"]["ID"] == message["id"] == cid
        attributes = message["Actor"]["Attributes"]
        assert (attributes["image"], attributes["name"], attributes["team"]) == \
            ("busybox", "web", "blue")
        assert message["from"] == "busybox" and message["scope"] == "local"
        assert message["time"] == message["timeNano"] // 10**9
    assert messages[2]["Actor"]["Attributes"]["signal"] == "15"
    assert messages[3]["Actor"]["Attributes"]["exitCode"] == "7"
    stamps = [m["timeNano"] for m in messages]
    assert stamps == sorted(stamps)

    # docker's human line: time, type, action, ID, then the sorted attributes.
    lines = user("events", "--since", since, "--until", until,
                 "--filter", "event=create").stdout.splitlines()
    assert len(lines) == 1
    stamp, rest = lines[0].split(" ", 1)
    assert rest == f"container create {cid} (image=busybox, name=web, team=blue)"
    assert len(stamp) == len("2024-05-01T10:00:00.123456789Z") and stamp.endswith("Z")

    # A run in the foreground attaches first; --rm removes it.
    later = _messages(user, until, "--filter", "type=container")
    assert [m["Action"] for m in later] == ["create", "attach", "start", "die", "destroy"]
    assert {m["Actor"]["Attributes"]["name"] for m in later} == {"later"}


def test_the_monitor_names_a_container_renamed_while_it_runs(user: User) -> None:
    since = _now()
    cid = user("run", "-d", "--network", "none", "--name", "before", "busybox",
               "sleep", "30").stdout.strip()
    user.ids.add(cid)
    user("rename", "before", "after")
    user("kill", "after")
    user("wait", "after")
    died = _messages(user, since, "--filter", "event=die")
    assert [m["Actor"]["Attributes"]["name"] for m in died] == ["after"]
    # A new run starts with the name it has, whatever the last run was told.
    user("rename", "after", "again")
    user("start", "again")
    user("kill", "again")
    user("wait", "again")
    assert [m["Actor"]["Attributes"]["name"] for m in
            _messages(user, since, "--filter", "event=die")] == ["after", "again"]


def test_filters_and_formats(user: User) -> None:
    since = _now()
    user("volume", "create", "data")
    cid = user("create", "--name", "box", "-l", "tier=db", "-v", "data:/data", "busybox",
               "sleep", "60").stdout.strip()
    user.ids.add(cid)
    user("rename", "box", "crate")
    user("start", "crate")
    assert user("exec", "crate", "sh", "-c", "exit 3", ok=False).returncode == 3
    user("pause", "crate")
    user("unpause", "crate")
    user("cp", "crate:/etc/hostname", str(user.home / "hostname"))
    user("export", "-o", str(user.home / "crate.tar"), "crate")
    user("commit", "-m", "snapshot", "crate", "snap:1")
    user("tag", "busybox", "mine:1")
    user("rmi", "mine:1")
    user("rm", "-f", "crate")
    user("volume", "rm", "data")

    everything = _messages(user, since)
    assert [a for t, a in _actions(everything) if t == "volume"] == \
        ["create", "mount", "unmount", "destroy"]
    mount = next(m for m in everything if m["Action"] == "mount")
    assert mount["Actor"] == {"ID": "data", "Attributes": {
        "driver": "local", "container": cid, "destination": "/data", "read/write": "true",
        "propagation": ""}}
    assert [a for t, a in _actions(everything) if t == "image"] == ["tag", "untag"]
    tag = next(m for m in everything if m["Action"] == "tag")
    assert tag["Actor"]["Attributes"]["name"] == "mine:1"
    assert tag["Actor"]["ID"].startswith("sha256:")

    by_name = _messages(user, since, "--filter", "container=box")
    by_new_name = _messages(user, since, "--filter", "container=crate")
    by_id = _messages(user, since, "--filter", f"container={cid[:12]}")
    assert [m["Action"] for m in by_id] == [m["Action"] for m in by_name + by_new_name]
    assert [m["Action"] for m in by_id] == [
        "create", "rename", "start", "exec_create: sh -c exit 3", "exec_start: sh -c exit 3",
        "exec_die", "pause", "unpause", "archive-path", "export", "commit", "kill", "die",
        "destroy"]
    assert by_id[1]["Actor"]["Attributes"]["oldName"] == "/box"
    exec_die = by_id[5]["Actor"]["Attributes"]
    assert exec_die["exitCode"] == "3" and len(exec_die["execID"]) == 64
    commit = by_id[10]["Actor"]["Attributes"]
    assert (commit["comment"], commit["imageRef"]) == ("snapshot", "snap:1")
    assert commit["imageID"].startswith("sha256:")
    assert by_id[11]["Actor"]["Attributes"]["signal"] == "9"

    # One key's values are alternatives; different keys must all hold.
    assert _actions(_messages(user, since, "-f", "event=pause", "-f", "event=unpause")) == \
        [("container", "pause"), ("container", "unpause")]
    assert _messages(user, since, "-f", "event=pause", "-f", "type=volume") == []
    execs = _messages(user, since, "-f", "event=exec_start")  # a prefix, as Docker
    assert [m["Action"] for m in execs] == ["exec_start: sh -c exit 3"]
    assert {m["Type"] for m in _messages(user, since, "-f", "type=volume")} == {"volume"}
    assert [m["Action"] for m in _messages(user, since, "-f", "volume=data",
                                           "-f", "event=mount")] == ["mount"]
    assert {m["Actor"]["ID"] for m in _messages(user, since, "-f", "label=tier=db")} == {cid}
    assert _messages(user, since, "-f", "label=tier=web") == []
    from_image = _messages(user, since, "-f", "image=busybox", "-f", "type=container")
    assert len(from_image) == len(by_id)
    assert _actions(_messages(user, since, "-f", "image=mine:1")) == [("image", "tag")]

    template = user("events", "--since", since, "--until", _now(), "-f", "event=rename",
                    "--format", "{{.Type}} {{.Status}} {{.Actor.Attributes.name}} "
                    "{{json .Actor.Attributes}}").stdout
    assert template.startswith("container rename crate {")
    assert json.loads(template.split(" ", 3)[3])["oldName"] == "/box"
    as_json = user("events", "--since", since, "--until", _now(), "-f", "event=rename",
                   "--format", "{{json .}}").stdout
    assert json.loads(as_json)["Actor"]["Attributes"]["name"] == "crate"


def test_docker_time_formats(user: User) -> None:
    user("volume", "create", "dated")
    event = _messages(user, "1h")[0]
    ns = event["timeNano"]
    seconds = ns // 10**9
    utc = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    plus_one = utc.astimezone(datetime.timezone(datetime.timedelta(hours=1)))

    def count(since: str, until: str) -> int:
        return len(user("events", f"--since={since}", f"--until={until}").stdout.splitlines())

    # Both bounds are inclusive, to the nanosecond.
    exact = f"{seconds}.{ns % 10**9:09d}"
    assert count(exact, exact) == 1
    assert count(f"{seconds}.{ns % 10**9 + 1:09d}", _now()) == 0
    assert count(utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 10**9:09d}Z", _now()) == 1
    assert count(plus_one.strftime("%Y-%m-%dT%H:%M:%S+01:00"), _now()) == 1
    assert count(utc.strftime("%Y-%m-%dT%H:%MZ"), _now()) == 1
    assert count(utc.strftime("%Y-%m-%d"), _now()) == 1  # local time here: UTC
    assert count("10m", "0") == 0  # until the epoch
    assert count("-1m", _now()) == 0  # a negative duration is in the future
    assert user("system", "events", "--since", "10m", "--until", _now(),
                "--format", "{{.Actor.ID}}").stdout == "dated\n"


def test_bad_input_is_refused(user: User) -> None:
    for flags, message in (
            (("--since", "yesterday"), 'failed to parse value as time or duration: '
                                       '"yesterday"'),
            (("--since", "2024-13-01"), 'cannot parse "2024-13-01" as a time'),
            (("--filter", "colour=red"), "invalid filter 'colour'"),
            (("--filter", "type=spaceship"), "invalid filter 'type=spaceship'"),
            (("--filter", "nonsense"), "bad format of filter"),
            (("--format", "{{.Nope}}"), "can't evaluate field Nope")):
        if "--format" in flags:
            user("volume", "create", "vx")
        result = user("events", "--since", "1h", "--until", _now(), *flags, ok=False)
        assert result.returncode == 1, (flags, result)
        assert message in result.stderr, (flags, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    # A template that does not parse is refused before any event is read (docker: 64).
    broken = user("events", "--since", "1s", "--until", "1s", "--format",
                  "{{.Type | nosuch}}", ok=False)
    assert (broken.returncode, broken.stderr) == (
        64, 'Error: template parsing error: template: :1: function "nosuch" not defined\n')


class _Follower:
    """``dockyard events`` left running; a thread reads its lines as they come."""

    def __init__(self, user: User, *flags: str) -> None:
        self.process = subprocess.Popen([*user.base, "events", "--format", "json", *flags],
                                        stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 10) -> dict[str, Any] | None:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def follow(user: User) -> Iterator[Any]:
    followers: list[_Follower] = []

    def start(*flags: str) -> _Follower:
        followers.append(_Follower(user, *flags))
        return followers[-1]

    yield start
    for follower in followers:
        follower.close()


def test_events_follows_what_happens_after_it_started(user: User, follow: Any) -> None:
    follower = follow("--filter", "type=volume", "--filter", "event=create")
    made = []
    first = None
    # Volumes are made until one is seen: the follower starts at some moment after
    # Popen, and must print what was made from then on, not what came before.
    for n in range(50):
        made.append(f"v{n}")
        user("volume", "create", made[-1])
        first = follower.next(timeout=0.3)
        if first is not None:
            break
    assert first is not None, "events printed nothing"
    seen = [first["Actor"]["ID"]]
    while seen[-1] != made[-1]:
        message = follower.next()
        assert message is not None
        seen.append(message["Actor"]["ID"])
    assert seen == made[made.index(seen[0]):]

    # The log rotates past its size: the follower goes on with the new file, and loses
    # or repeats nothing.
    log = str(user.home / "root" / "events.log")
    filler = {"padding": "x" * 200}
    for _ in range(eventlog.MAX_SIZE // 250 + 10):
        eventlog.record(log, "daemon", "reload", "filler", filler)
    assert os.path.exists(log + ".1") and os.path.getsize(log) < eventlog.MAX_SIZE
    user("volume", "create", "after")
    message = follower.next()
    assert message is not None and message["Actor"]["ID"] == "after"
    assert follower.next(timeout=0.5) is None

    # A reader of the past reads the rotated file, then the current one.
    past = _messages(user, "1h", "--filter", "type=volume")
    assert [m["Actor"]["ID"] for m in past] == [*made, "after"]


def test_until_in_the_future_follows_then_ends(user: User) -> None:
    started = time.monotonic()
    process = subprocess.Popen([*user.base, "events", "--until=-3s",
                                "--format", "{{.Actor.ID}}"],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    user("volume", "create", "during")
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert out == "during\n"
    assert time.monotonic() - started >= 2  # Docker counts a duration in whole seconds
