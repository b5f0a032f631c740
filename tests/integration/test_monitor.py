"""The per-container monitor, as the engine drives it: start, log, attach, stop, restart.

Each test starts a monitor on a busybox bundle (``dy.bundle``: Docker's default spec,
no terminal unless said) with the runtime root of the ``dy`` session, so the session's
and the sandbox's checks find any container, cgroup, mount or process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dockyard.errors import CommandNotFound, InvalidArgument
from dockyard.runtime import Runtime
from dockyard.runtime.monitor import (
    Frame,
    MonitorHandle,
    MonitorSpec,
    RestartPolicy,
    monitor_alive,
    read_exit,
    read_frame,
    send_frame,
    start_monitor,
    stop,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(120),
]

MiB = 1 << 20
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


class Monitors:
    """The monitors one test started; every one is gone after the test."""

    def __init__(self, dy: Any, tmp: Path) -> None:
        self.dy = dy
        self.tmp = tmp
        self.started: list[tuple[MonitorSpec, Path]] = []

    def spec(self, args: list[str], *, process: dict[str, Any] | None = None,
             linux: dict[str, Any] | None = None, **options: Any) -> MonitorSpec:
        """A MonitorSpec for a new container running ``args``; ``options`` are its fields."""
        cid = self.dy.new_id()
        overrides: dict[str, Any] = {}
        if process:
            overrides["process"] = process
        if linux:
            overrides["linux"] = linux
        bundle = self.dy.bundle(args, **overrides)
        state = self.tmp / cid
        spec = MonitorSpec(container_id=cid, bundle=str(bundle),
                           runtime_root=str(self.dy.root), state_dir=str(state),
                           log_path=str(state / "container.log"), **options)
        self.started.append((spec, bundle))
        return spec

    def start(self, args: list[str], **options: Any) -> tuple[MonitorHandle, MonitorSpec]:
        spec = self.spec(args, **options)
        return start_monitor(spec), spec

    def container_gone(self, bundle: Path) -> bool:
        return not self.dy.processes_rooted_in(bundle)

    def cleanup(self) -> None:
        for spec, bundle in self.started:
            pid = monitor_pid(spec)
            if pid and monitor_alive(spec.state_dir):
                os.kill(pid, signal.SIGKILL)
            self.dy.wait_for(partial(self.container_gone, bundle), 10,
                             "the container to die with its monitor")
            with contextlib.suppress(Exception):
                Runtime(spec.runtime_root).delete(spec.container_id, force=True)


def monitor_pid(spec: MonitorSpec) -> int:
    try:
        return int(Path(spec.state_dir, "monitor.pid").read_text().split()[0])
    except FileNotFoundError:
        return 0


def log_entries(path: str | Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def logged(spec: MonitorSpec, stream: str = "stdout") -> str:
    return "".join(e["log"] for e in log_entries(spec.log_path) if e["stream"] == stream)


def frames_until(sock: Any, done: Any) -> list[tuple[int, bytes]]:
    """Frames read from ``sock`` until ``done(frames)`` holds (or the end)."""
    frames: list[tuple[int, bytes]] = []
    while not done(frames):
        frame = read_frame(sock)
        if frame is None:
            break
        frames.append(frame)
    return frames


def output_of(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(p for k, p in frames if k == Frame.STDOUT)


@pytest.fixture
def monitors(dy: Any, tmp_path: Path) -> Iterator[Monitors]:
    found = Monitors(dy, tmp_path / "monitors")
    try:
        yield found
    finally:
        found.cleanup()


# -- log and exit ---------------------------------------------------------------------


def test_output_lands_in_the_json_log_and_the_exit_in_exit_json(monitors: Monitors,
                                                                dy: Any) -> None:
    handle, spec = monitors.start(
        ["sh", "-c", "echo out; echo 'err <&>' >&2; printf partial; exit 3"])
    status = handle.wait()
    assert (status.exit_code, status.signal, status.oom_killed) == (3, None, False)
    assert status.restarts == 0 and not status.restarting
    assert TIME.match(status.started_at) and TIME.match(status.finished_at)
    assert status.started_at <= status.finished_at
    assert read_exit(spec.state_dir) == status

    entries = log_entries(spec.log_path)
    assert [(e["log"], e["stream"]) for e in entries if e["stream"] == "stdout"] == [
        ("out\n", "stdout"), ("partial", "stdout")]
    assert [e["log"] for e in entries if e["stream"] == "stderr"] == ["err <&>\n"]
    assert all(TIME.match(e["time"]) for e in entries)
    # Go's encoding/json escapes <, > and & the way dockerd's files have them.
    assert "\\u003c\\u0026\\u003e" in Path(spec.log_path).read_text()

    # The monitor deleted the runtime's container after its last exit.
    assert not monitor_alive(spec.state_dir)
    assert not Path(spec.state_dir, "attach.sock").exists()
    dy.assert_nothing_left(spec.container_id)


def test_a_failing_create_is_raised_by_start_monitor(monitors: Monitors, dy: Any) -> None:
    spec = monitors.spec(["no-such-command"])
    with pytest.raises(CommandNotFound, match="no-such-command"):
        start_monitor(spec)
    dy.assert_nothing_left(spec.container_id)


def test_the_monitor_survives_the_process_that_started_it(monitors: Monitors) -> None:
    spec = monitors.spec(["sh", "-c", "sleep 1; echo still here; exit 4"])
    fields = {k: v for k, v in asdict(spec).items() if k != "restart"}
    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import json, sys\n"
         "from dockyard.runtime.monitor import MonitorSpec, start_monitor\n"
         "print(start_monitor(MonitorSpec(**json.loads(sys.argv[1]))).pid)",
         json.dumps(fields)], stdout=subprocess.PIPE, text=True)
    out, _ = starter.communicate(timeout=30)
    assert starter.returncode == 0
    pid = int(out)
    # The starter is gone and the container runs on under its monitor, in a session of
    # its own: the hangup of the starter's terminal does not reach it.
    assert monitor_alive(spec.state_dir)
    assert os.getsid(pid) != os.getsid(0)
    assert read_exit(spec.state_dir) is None
    status = MonitorHandle(spec.state_dir, pid).wait(timeout=20)
    assert status.exit_code == 4
    assert logged(spec) == "still here\n"


def test_kill_9_of_the_monitor_kills_its_container(monitors: Monitors, dy: Any) -> None:
    handle, spec = monitors.start(["sleep", "300"])
    rt = Runtime(spec.runtime_root)
    container = rt.pids(spec.container_id)
    assert container
    watchdog = [int(p) for p in
                Path(f"/proc/{handle.pid}/task/{handle.pid}/children").read_text().split()
                if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"dy-watchdog\0")]
    assert len(watchdog) == 1

    os.kill(handle.pid, signal.SIGKILL)
    dy.wait_for(lambda: all(dy.is_gone(p) for p in container + watchdog), 10,
             "the container and the watchdog to die")
    assert not monitor_alive(spec.state_dir)
    assert read_exit(spec.state_dir) is None  # the engine reports it exited, code unknown
    # What the engine's reconcile does: the runtime's state and cgroup go, nothing stays.
    rt.delete(spec.container_id, force=True)
    dy.assert_nothing_left(spec.container_id)


def test_the_log_rotates_at_max_size(monitors: Monitors) -> None:
    handle, spec = monitors.start(
        ["sh", "-c", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo line-$i; done"],
        max_size=1024, max_files=3)
    assert handle.wait().exit_code == 0
    log = Path(spec.log_path)
    files = [Path(f"{log}.2"), Path(f"{log}.1"), log]
    assert all(f.exists() for f in files)
    assert not Path(f"{log}.3").exists()
    entry = max(len(line) + 1 for f in files for line in f.read_text().splitlines())
    assert all(f.stat().st_size < 1024 + entry for f in files)
    lines = [e["log"] for f in files for e in log_entries(f)]
    first = int(lines[0].strip().split("-")[1])
    assert first > 1  # the oldest files were dropped
    assert lines == [f"line-{i}\n" for i in range(first, 201)]


# -- attach ---------------------------------------------------------------------------


def test_attach_clients_get_the_output_and_send_stdin(monitors: Monitors) -> None:
    handle, spec = monitors.start(["cat"], stdin=True)
    with handle.attach() as one, handle.attach() as two:
        # Each client's own line comes back to it: both are registered afterwards.
        for sock, text in ((one, b"from one\n"), (two, b"from two\n")):
            send_frame(sock, Frame.STDIN, text)
            assert text in output_of(frames_until(sock, lambda f, t=text: t in output_of(f)))
        send_frame(one, Frame.STDIN, b"to both\n")
        for sock in (one, two):
            assert b"to both\n" in output_of(
                frames_until(sock, lambda f: b"to both\n" in output_of(f)))
        send_frame(two, Frame.STDIN, b"")  # end of input: cat exits
        for sock in (one, two):
            frames = frames_until(sock, lambda f: f and f[-1][0] == Frame.EXIT)
            assert json.loads(frames[-1][1])["exit_code"] == 0
            assert read_frame(sock) is None  # closed after the exit
    assert handle.wait().exit_code == 0
    assert logged(spec) == "from one\nfrom two\nto both\n"


def test_stop_sends_the_stop_signal_then_sigkill_after_the_timeout(monitors: Monitors,
                                                                    dy: Any) -> None:
    handle, spec = monitors.start(
        ["sh", "-c", "trap 'echo got TERM' TERM; echo ready; "
                     "while true; do sleep 0.1; done"], stop_timeout=1.0)
    dy.wait_for(lambda: "ready" in logged(spec), 10, "the container to trap TERM")
    began = time.monotonic()
    status = stop(spec.state_dir)
    assert time.monotonic() - began >= 1.0
    assert (status.exit_code, status.signal) == (137, signal.SIGKILL)
    assert status.stop_requested
    assert "got TERM\n" in logged(spec)
    assert handle.wait() == status


def test_a_bad_control_message_gets_an_error_reply(monitors: Monitors) -> None:
    handle, _ = monitors.start(["sleep", "300"])
    with handle.attach() as sock:
        send_frame(sock, Frame.CONTROL, b'{"op": "resize", "rows": 24, "cols": 80}')
        kind, payload = frames_until(sock, lambda f: f)[0]
        assert kind == Frame.CONTROL and "no terminal" in json.loads(payload)["error"]
    assert handle.stop(timeout=0.5).exit_code == 137


# -- restart policy, OOM, terminal ------------------------------------------------------


def test_on_failure_3_restarts_exactly_three_times(monitors: Monitors, dy: Any) -> None:
    handle, spec = monitors.start(["sh", "-c", "echo run; exit 1"],
                                  restart=RestartPolicy.parse("on-failure:3"))
    status = handle.wait(timeout=30)
    assert (status.exit_code, status.restarts, status.restarting) == (1, 3, False)
    assert logged(spec) == "run\n" * 4
    dy.assert_nothing_left(spec.container_id)


def test_a_stop_ends_an_always_restarting_container(monitors: Monitors, dy: Any) -> None:
    handle, spec = monitors.start(["sh", "-c", "echo run; sleep 0.2"],
                                  restart=RestartPolicy.parse("always"))
    dy.wait_for(lambda: logged(spec).count("run") >= 3, 20, "two restarts")
    # Whether it lands during a run or between two, the stop is final.
    status = handle.stop(timeout=1)
    assert status.stop_requested and not status.restarting
    assert status.restarts >= 2
    assert handle.wait() == status
    dy.assert_nothing_left(spec.container_id)


def test_restart_policies_decide_like_docker() -> None:
    assert not RestartPolicy.parse("no").restarts(1, 0, False)
    assert RestartPolicy.parse("on-failure").restarts(1, 100, False)
    assert not RestartPolicy.parse("on-failure").restarts(0, 0, False)
    assert not RestartPolicy.parse("on-failure:2").restarts(1, 2, False)
    assert RestartPolicy.parse("always").restarts(0, 0, False)
    assert not RestartPolicy.parse("unless-stopped").restarts(0, 0, True)
    for bad in ("sometimes", "always:3", "on-failure:x"):
        with pytest.raises(InvalidArgument, match=r"restart policy|retry count"):
            RestartPolicy.parse(bad)


def test_exit_json_reports_an_oom_kill(monitors: Monitors) -> None:
    limit = 32 * MiB
    handle, _ = monitors.start(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        linux={"resources": {"memory": {"limit": limit, "swap": limit}}})
    status = handle.wait(timeout=30)
    assert (status.exit_code, status.signal, status.oom_killed) == (137, 9, True)


def test_a_terminal_container_logs_its_pty_output(monitors: Monitors) -> None:
    handle, spec = monitors.start(["sh", "-c", "echo hello from a tty; tty"],
                                  terminal=True, process={"terminal": True})
    assert handle.wait().exit_code == 0
    entries = log_entries(spec.log_path)
    # A pty ends lines with \r\n, and dockerd's json-file keeps them.
    assert [e["log"] for e in entries] == ["hello from a tty\r\n", "/dev/pts/0\r\n"]
    assert {e["stream"] for e in entries} == {"stdout"}


def test_a_terminal_client_resizes_the_pty_and_types_into_it(monitors: Monitors) -> None:
    handle, spec = monitors.start(["sh", "-c", "read line; stty size; echo got $line"],
                                  terminal=True, stdin=True, process={"terminal": True})
    with handle.attach() as sock:
        send_frame(sock, Frame.CONTROL, b'{"op": "resize", "rows": 30, "cols": 100}')
        assert frames_until(sock, lambda f: f)[0] == (Frame.CONTROL, b'{"ok": true}')
        send_frame(sock, Frame.STDIN, b"typed\n")
        frames = frames_until(sock, lambda f: f and f[-1][0] == Frame.EXIT)
    # The pty echoes the input, then the process answers.
    assert b"30 100\r\ngot typed\r\n" in output_of(frames)
    assert handle.wait().exit_code == 0
    assert "got typed\r\n" in logged(spec)
