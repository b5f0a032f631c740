"""What the other runtime tests leave out: in-container hooks, process details, mount
options, the informational commands and the JSON error log that containerd reads."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

SLEEPER = ["sleep", "300"]


def test_container_hooks_run_inside_the_containers_mount_namespace(dy: Any,
                                                                   tmp_path: Path) -> None:
    # createContainer runs in the container's mount namespace before pivot_root (its path
    # resolves on the host), startContainer after it, inside the container's root.
    created = tmp_path / "created"
    hooks = {
        "createContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"cat > {created}; echo >> {created}"]}],
        "startContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", "(cat; echo; hostname) > /dev/shm/started"]}],
    }
    cid = dy.start(SLEEPER, hooks=hooks, hostname="hooked")
    state = json.loads(created.read_text().splitlines()[0])
    assert state["id"] == cid and state["pid"] == dy.state(cid)["pid"]
    started = dy.ok("exec", cid, "cat", "/dev/shm/started").stdout.splitlines()
    assert json.loads(started[0])["id"] == cid
    assert started[1] == "hooked"  # it ran inside the container's uts namespace too


def test_oom_score_adj_umask_and_domainname(dy: Any) -> None:
    out = dy.sh("cat /proc/self/oom_score_adj; umask; cat /proc/sys/kernel/domainname",
                process={"oomScoreAdj": 500, "user": {"uid": 0, "gid": 0, "umask": 0o027}},
                domainname="example.test")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["500", "0027", "example.test"]


def test_bind_mounts_with_options(dy: Any, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    mounts = dy.spec(["true"])["mounts"] + [
        {"destination": "/data", "type": "bind", "source": str(shared),
         "options": ["rbind", "ro", "nosuid", "nodev", "rprivate"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1m", "mode=1777"]},
    ]
    out = dy.sh("cat /data/hello; touch /data/new; grep -E ' /(data|scratch) ' "
                "/proc/self/mountinfo; stat -c %a /scratch", mounts=mounts)
    assert "from the host" in out.stdout
    assert "Read-only file system" in out.stderr
    data = next(line for line in out.stdout.splitlines() if " /data " in line)
    assert {"ro", "nosuid", "nodev"} <= set(data.split()[5].split(","))
    assert out.stdout.split()[-1] == "1777"
    assert not (shared / "new").exists()


def test_mount_destinations_stay_inside_the_rootfs(dy: Any, tmp_path: Path) -> None:
    # A symlink in the image pointing at the host's /tmp: a mount through it must land
    # inside the rootfs, never on the host.
    bundle = dy.bundle(["true"])
    (bundle / "rootfs" / "escape").symlink_to(str(tmp_path))
    spec = json.loads((bundle / "config.json").read_text())
    spec["mounts"].append({"destination": "/escape/inside", "type": "tmpfs", "source": "tmpfs"})
    (bundle / "config.json").write_text(json.dumps(spec))
    cid = dy.new_id()
    dy.ok("run", "--bundle", str(bundle), cid)
    assert not (tmp_path / "inside").exists()
    # The mount point was made where the symlink leads inside the rootfs.
    assert (bundle / "rootfs" / tmp_path.relative_to("/") / "inside").is_dir()


def test_root_propagation_shared(dy: Any) -> None:
    # pivot_root refuses a shared root; the runtime makes it private for the pivot and
    # shared again after it, as runc does.
    script = "awk '$5 == \"/\"' /proc/self/mountinfo"
    shared = dy.sh(script, linux={"rootfsPropagation": "rshared"})
    assert shared.returncode == 0, shared.stderr
    assert "shared:" in shared.stdout
    private = dy.sh(script, linux={"rootfsPropagation": "rprivate"})
    assert "shared:" not in private.stdout and "master:" not in private.stdout


def test_version_features_and_spec(dy: Any, tmp_path: Path) -> None:
    version = dy.ok("--version").stdout
    assert version.startswith("dockyard-runtime version ") and "spec: 1." in version
    features = json.loads(dy.ok("features").stdout)
    assert features["ociVersionMin"].startswith("1.")
    assert {"pid", "mount", "user", "cgroup", "network"} <= set(features["linux"]["namespaces"])
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    dy.ok("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    again = dy("spec", "--bundle", str(tmp_path))
    dy.one_line_error(again, "exists already")


def test_ps_table_and_list_json(dy: Any) -> None:
    cid = dy.start(SLEEPER)
    pid = dy.state(cid)["pid"]
    table = dy.ok("ps", cid).stdout.splitlines()
    assert "PID" in table[0].split()
    assert any(str(pid) in line.split() for line in table[1:])
    listed = json.loads(dy.ok("list", "--format", "json").stdout)
    mine = next(c for c in listed if c["id"] == cid)
    assert mine["status"] == "running" and mine["pid"] == pid
    assert dy.ok("list", "-q").stdout.split() == [cid]


def test_errors_go_to_the_json_log_containerd_reads(dy: Any, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    result = dy("--log", str(log), "--log-format", "json", "state", "no-such-container")
    assert result.returncode == 1
    [record] = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["level"] == "error" and "does not exist" in record["msg"]
    assert record["time"]


def test_exec_with_a_terminal_through_console_socket(dy: Any, tmp_path: Path) -> None:
    cid = dy.start(SLEEPER)
    path = tmp_path / "exec.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(30)
    got: dict[str, Any] = {}

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            _, got["fds"], _, _ = socket.recv_fds(conn, 1024, 1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        pid_file = tmp_path / "exec.pid"
        dy.ok("exec", "--tty", "--detach", "--console-socket", str(path), "--pid-file",
              str(pid_file), cid, "sh", "-c", "tty; sleep 1")
        thread.join(30)
        [master] = got["fds"]
        try:
            output = b""
            while b"\n" not in output:
                output += os.read(master, 1024)
        finally:
            os.close(master)
        assert output.decode().strip().startswith("/dev/pts/")
        assert int(pid_file.read_text()) > 0
    finally:
        server.close()
        thread.join(5)
