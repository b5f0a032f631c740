"""A container's life through ``dockyard-runtime`` and the ``Runtime`` API, as root.

create -> created (with a pid) -> start -> running -> stopped -> delete; exit codes,
signals, pause and resume, exec, ps, list, update, a terminal through
``--console-socket``, and the OCI hooks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dockyard.oci import runtime as oci
from dockyard.runtime import Runtime, Stdio

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(180),
]

SLEEPER = ["sleep", "300"]


# -- create, start, state, exit codes -----------------------------------------------


def test_create_then_start_then_stopped(dy: Any) -> None:
    cid = dy.create(["sh", "-c", "read line; exit 0"])
    state = dy.state(cid)
    assert state["status"] == "created"
    assert state["id"] == cid
    pid = state["pid"]
    assert pid > 0 and Path(f"/proc/{pid}").exists()
    # The waiting init already lives in the container's cgroup.
    assert str(pid) in " ".join(p.joinpath("cgroup.procs").read_text()
                                for p in dy.cgroups(cid))

    dy.ok("start", cid)
    # stdin is /dev/null: `read` hits EOF and the shell exits 0.
    dy.wait_stopped(cid)
    dy.ok("delete", cid)
    assert not (dy.root / cid).exists()
    assert not dy.cgroups(cid)
    assert cid not in dy.ok("list", "--quiet").stdout.split()


def test_running_while_the_process_lives(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    assert dy.status(cid) == "running"
    assert dy.state(cid)["pid"] > 0


def test_start_twice_is_refused(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    dy.one_line_error(dy("start", cid), "running")


def test_run_prints_the_output_and_returns_the_exit_code(dy: Any) -> None:
    result = dy.sh("echo hello from inside; echo to stderr >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "hello from inside\n"
    assert "to stderr" in result.stderr


def test_run_of_a_process_killed_by_sigterm_returns_143(dy: Any) -> None:
    # Without a pid namespace of its own the shell is not an init, which the kernel
    # protects from signals it does not handle: SIGTERM kills it.
    namespaces = [ns for ns in dy.spec(["true"])["linux"]["namespaces"] if ns["type"] != "pid"]
    result = dy.sh("kill -TERM $$; echo survived", linux={"namespaces": namespaces})
    assert result.returncode == 143, result
    assert "survived" not in result.stdout


def test_an_init_ignores_its_own_sigterm_as_in_docker(dy: Any) -> None:
    # PID 1 of a pid namespace only gets the signals it handles: the shell goes on.
    result = dy.sh("kill -TERM $$; echo survived; exit 2")
    assert (result.returncode, result.stdout) == (2, "survived\n")


def test_run_of_a_process_killed_by_sigkill_returns_137(dy: Any) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(["sh", "-c", "echo started; sleep 300"])
    run = dy.popen("run", "--bundle", str(bundle), cid, stdout=subprocess.PIPE)
    try:
        assert run.stdout is not None
        assert run.stdout.readline() == b"started\n"
        dy.ok("kill", cid, "9")
        assert run.wait(30) == 137
    finally:
        dy.kill_quietly(run.pid)
        run.wait()


def test_run_returns_zero_and_deletes_the_container(dy: Any) -> None:
    assert dy.run(["true"]).returncode == 0
    assert dy.ok("list", "--quiet").stdout.split() == []


def test_kill_with_sigkill_stops_a_running_container(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    pid = dy.state(cid)["pid"]
    dy.ok("kill", cid, "KILL")
    dy.wait_stopped(cid)
    assert dy.is_gone(pid)
    assert dy.state(cid)["pid"] == 0
    dy.ok("delete", cid)


def test_kill_all_reaches_every_process(dy: Any) -> None:
    # The init ignores SIGUSR1... and waits; its children are killed by kill --all.
    cid = dy.start(["sh", "-c", "sleep 300 & sleep 300 & wait"])
    dy.wait_for(lambda: len(json.loads(dy.ok("ps", "--format", "json", cid).stdout)) == 3,
             what="three processes")
    dy.ok("kill", "--all", cid, "SIGKILL")
    dy.wait_stopped(cid)
    assert json.loads(dy.ok("ps", "--format", "json", cid).stdout) == []
    dy.ok("delete", cid)


def test_delete_of_a_running_container_needs_force(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    pid = dy.state(cid)["pid"]
    dy.one_line_error(dy("delete", cid), cid, "running")
    assert dy.status(cid) == "running"
    dy.ok("delete", "--force", cid)
    assert not (dy.root / cid).exists()
    assert not dy.cgroups(cid)
    assert dy.is_gone(pid)
    dy.one_line_error(dy("state", cid), cid)


def test_delete_force_of_a_created_container(dy: Any) -> None:
    cid = dy.create(SLEEPER)
    pid = dy.state(cid)["pid"]
    dy.ok("delete", "--force", cid)
    assert dy.is_gone(pid)
    dy.assert_nothing_left(cid)


# -- pause and resume ----------------------------------------------------------------


def _counter(dy: Any, cid: str) -> int:
    # /dev/shm is the container's own tmpfs: read it through the init's root.
    pid = dy.state(cid)["pid"]
    text = Path(f"/proc/{pid}/root/dev/shm/n").read_text().strip()
    return int(text or 0)


def test_pause_freezes_and_resume_thaws(dy: Any) -> None:
    cid = dy.start(["sh", "-c",
                    "i=0; while true; do i=$((i+1)); echo $i > /dev/shm/n; sleep 0.02; done"])
    dy.wait_for(lambda: Path(f"/proc/{dy.state(cid)['pid']}/root/dev/shm/n").exists()
             and _counter(dy, cid) > 2, what="the counter to count")
    dy.ok("pause", cid)
    assert dy.status(cid) == "paused"
    frozen = _counter(dy, cid)
    time.sleep(0.5)
    assert _counter(dy, cid) == frozen, "the counter advanced while paused"
    dy.one_line_error(dy("pause", cid), "paused")

    dy.ok("resume", cid)
    assert dy.status(cid) == "running"
    dy.wait_for(lambda: _counter(dy, cid) > frozen + 2, what="the counter to count again")
    dy.one_line_error(dy("resume", cid), "not paused")


def test_delete_force_of_a_paused_container(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    dy.ok("pause", cid)
    dy.ok("delete", "--force", cid)
    dy.assert_nothing_left(cid)


# -- exec ----------------------------------------------------------------------------


def test_exec_shares_the_hostname_and_pid_namespace(dy: Any) -> None:
    cid = dy.start(SLEEPER, hostname="exec-host")
    result = dy.ok("exec", cid, "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    hostname, init_cmdline = result.stdout.splitlines()
    assert hostname == "exec-host"
    assert init_cmdline.strip() == "sleep 300"


def test_exec_returns_the_exit_code(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    assert dy("exec", cid, "sh", "-c", "exit 7").returncode == 7
    assert dy("exec", cid, "sh", "-c", "kill -KILL $$").returncode == 137
    assert dy.status(cid) == "running"


def test_exec_with_a_process_file(dy: Any, tmp_path: Path) -> None:
    cid = dy.start(SLEEPER)
    process = {
        "args": ["sh", "-c", "echo $GREETING from $(pwd) as $(id -u); exit 5"],
        "env": ["PATH=/bin:/usr/bin", "GREETING=hi"],
        "cwd": "/dev",
        "user": {"uid": 65534, "gid": 65534},
    }
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps(process))
    result = dy("exec", "--process", str(process_file), cid)
    assert result.returncode == 5, result.stderr
    assert result.stdout == "hi from /dev as 65534\n"


def test_exec_of_a_missing_command(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    result = dy("exec", cid, "no-such-command")
    assert result.returncode == 127
    dy.one_line_error(result, "executable file not found")


def test_exec_into_a_stopped_container_is_refused(dy: Any) -> None:
    cid = dy.start(["true"])
    dy.wait_stopped(cid)
    dy.one_line_error(dy("exec", cid, "true"), "stopped")


# -- ps, list, update --------------------------------------------------------------


def test_ps_lists_the_pids(dy: Any) -> None:
    cid = dy.start(["sh", "-c", "sleep 300 & wait"])
    init = dy.state(cid)["pid"]
    pids = dy.wait_for(lambda: (p := json.loads(dy.ok("ps", "--format", "json", cid).stdout))
                    and len(p) == 2 and p, what="two processes")
    assert init in pids
    child = next(p for p in pids if p != init)
    assert Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]
    table = dy.ok("ps", cid).stdout.splitlines()
    assert "PID" in table[0]
    assert len(table) == 3


def test_list_shows_the_container(dy: Any) -> None:
    created = dy.create(SLEEPER)
    running = dy.start(SLEEPER)
    rows = {c["id"]: c for c in json.loads(dy.ok("list", "--format", "json").stdout)}
    assert rows[created]["status"] == "created"
    assert rows[running]["status"] == "running"
    assert rows[running]["pid"] == dy.state(running)["pid"]
    table = dy.ok("list").stdout
    assert created in table and running in table
    assert sorted(dy.ok("list", "-q").stdout.split()) == sorted([created, running])


def test_update_memory_is_seen_inside(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    dy.ok("update", "--memory", "64m", cid)
    result = dy.ok("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert result.stdout.strip() == str(64 << 20)


def test_update_pids_limit(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    dy.ok("update", "--pids-limit", "42", cid)
    assert dy.ok("exec", cid, "cat", "/sys/fs/cgroup/pids/pids.max").stdout.strip() == "42"


# -- a terminal through --console-socket -------------------------------------------


def _read_all(fd: int, timeout: float = 20) -> bytes:
    """Read a pty master until the other side closes (EIO), or ``timeout``."""
    import select

    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the last slave fd was closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_terminal_through_console_socket(dy: Any, tmp_path: Path) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(["sh", "-c", "tty; echo cols=$(stty size)"],
                       process={"terminal": True, "consoleSize": {"height": 30, "width": 100}})
    path = tmp_path / "console.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(30)
    received: dict[str, object] = {}

    def serve() -> None:
        try:
            conn, _ = server.accept()
            with conn:
                msg, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                received["msg"], received["fds"] = msg, fds
        except OSError as e:
            received["error"] = e

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        dy.ok("create", "--bundle", str(bundle), "--console-socket", str(path), cid)
        thread.join(30)
        assert "error" not in received, received
        fds = received["fds"]
        assert isinstance(fds, list) and len(fds) == 1
        master = fds[0]
        try:
            dy.ok("start", cid)
            output = _read_all(master).decode().replace("\r", "")
        finally:
            os.close(master)
    finally:
        server.close()
        thread.join(5)
    lines = output.splitlines()
    assert lines[0] in ("/dev/pts/0", "/dev/console"), output
    assert "cols=30 100" in output
    dy.wait_stopped(cid)
    dy.ok("delete", cid)


def test_terminal_without_console_socket_is_refused(dy: Any) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(["sh"], process={"terminal": True})
    dy.one_line_error(dy("create", "--bundle", str(bundle), cid), "console")
    dy.assert_nothing_left(cid)


# -- hooks ---------------------------------------------------------------------------


def _hook(out: Path, **extra: object) -> dict[str, object]:
    """A hook (run on the host) that saves the state it reads on stdin into ``out``."""
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"], **extra}


def test_hooks_receive_the_state(dy: Any, tmp_path: Path) -> None:
    saved = {kind: tmp_path / f"{kind}.json"
             for kind in ("prestart", "createRuntime", "poststart", "poststop")}
    cid = dy.create(SLEEPER, hooks={kind: [_hook(path)] for kind, path in saved.items()})
    pid = dy.state(cid)["pid"]
    for kind in ("prestart", "createRuntime"):
        state = json.loads(saved[kind].read_text())
        assert state["id"] == cid and state["pid"] == pid, kind
        assert state["status"] == "created"
        assert state["bundle"]
    assert not saved["poststart"].exists()

    dy.ok("start", cid)
    state = json.loads(saved["poststart"].read_text())
    assert state["id"] == cid and state["pid"] == pid
    assert not saved["poststop"].exists()

    dy.ok("kill", cid, "KILL")
    dy.wait_stopped(cid)
    dy.ok("delete", cid)
    state = json.loads(saved["poststop"].read_text())
    assert state["id"] == cid
    assert state["status"] == "stopped"


def test_a_hook_that_times_out_fails_create(dy: Any, tmp_path: Path) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(SLEEPER, hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "sleep 10"], "timeout": 1}]})
    started = time.monotonic()
    result = dy("create", "--bundle", str(bundle), cid)
    assert time.monotonic() - started < 8
    dy.one_line_error(result, "createRuntime", "1")
    dy.assert_nothing_left(cid)


def test_a_failing_prestart_hook_fails_create(dy: Any) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(SLEEPER, hooks={"prestart": [
        {"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]})
    dy.one_line_error(dy("create", "--bundle", str(bundle), cid), "prestart", "4")
    dy.assert_nothing_left(cid)


# -- the Python API ------------------------------------------------------------------


def test_api_create_start_wait_delete(api: Runtime, dy: Any, tmp_path: Path) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(["sh", "-c", "echo out; echo err >&2; exit 4"])
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(os.devnull) as null:
        pid = api.create(cid, bundle, reap=True,
                         stdio=Stdio(null.fileno(), out.fileno(), err.fileno()))
        state = api.state(cid)
        assert (state.status, state.pid, state.id) == ("created", pid, cid)
        api.start(cid)
        assert api.wait(cid) == 4
        assert api.state(cid).status == "stopped"
        api.delete(cid)
        out.seek(0)
        err.seek(0)
        assert out.read() == b"out\n"
        assert err.read() == b"err\n"
    assert [r.id for r, _ in api.list()] == []
    assert not dy.cgroups(cid)


def test_api_exec_and_kill(api: Runtime, dy: Any) -> None:
    cid = dy.new_id()
    bundle = dy.bundle(SLEEPER, hostname="api-host")
    with tempfile.TemporaryFile() as out, open(os.devnull) as null:
        stdio = Stdio(null.fileno(), out.fileno(), out.fileno())
        api.create(cid, bundle, reap=True, stdio=stdio)
        api.start(cid)
        assert api.state(cid).status == "running"
        status = api.exec(cid, oci.Process(args=["sh", "-c", "hostname; exit 9"], cwd="/",
                                           env=["PATH=/bin"]), stdio=stdio)
        assert status == 9
        out.seek(0)
        assert out.read() == b"api-host\n"
        api.kill(cid, signal.SIGKILL)
        assert api.wait(cid) == 128 + signal.SIGKILL
        api.delete(cid)
    assert not dy.cgroups(cid)


def test_api_run_as_a_user_program(dy: Any, tmp_path: Path) -> None:
    """A separate Python program that drives the API, as the engine would."""
    cid = dy.new_id()
    bundle = dy.bundle(["sh", "-c", "exit 6"])
    program = (
        "import sys\n"
        "from dockyard.runtime import Runtime\n"
        f"rt = Runtime({str(tmp_path / 'prog-root')!r})\n"
        f"rt.create({cid!r}, {str(bundle)!r}, reap=True)\n"
        f"rt.start({cid!r})\n"
        f"code = rt.wait({cid!r})\n"
        f"rt.delete({cid!r})\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([os.environ.get("PYTHON", _python()), "-c", program],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 6, result.stderr
    assert not dy.cgroups(cid)
    assert not (tmp_path / "prog-root" / cid).exists()


def _python() -> str:
    import sys

    return sys.executable


def test_kill_of_a_stopped_container_is_refused(dy: Any) -> None:
    cid = dy.start(["true"])
    dy.wait_stopped(cid)
    dy.one_line_error(dy("kill", cid, "TERM"), "not running")
    dy.ok("delete", cid)


def test_state_of_an_unknown_container(dy: Any) -> None:
    dy.one_line_error(dy("state", "no-such-container"), "no-such-container")

