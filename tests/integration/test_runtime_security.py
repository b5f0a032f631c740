"""Docker's security defaults (``default_spec()``) hold against a root user inside.

seccomp, masked and read-only paths, and the usual escape attempts: mounting,
writing kernel settings, loading modules, new namespaces; nothing of the runtime
(open fds, its executable) reaches the container.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(180),
]


def attempt(dy: Any, script: str, **overrides: Any) -> str:
    """Run ``sh -c SCRIPT 2>&1; echo status=$?`` in a new container; the combined output."""
    result = dy.sh(f"{{ {script} ; }} 2>&1; echo status=$?", **overrides)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr}{result.stdout}"
    return str(result.stdout)


def refused(output: str, *reasons: str) -> None:
    """The attempt failed (non-zero status) for one of ``reasons`` (any case)."""
    assert "status=0" not in output, f"the attempt succeeded:\n{output}"
    assert any(r.lower() in output.lower() for r in reasons), \
        f"not refused for {reasons}:\n{output}"


def on_host(*cases: tuple[str, ...]) -> list[Any]:
    """The cases whose path (first member) this kernel has.

    A kernel built without, say, /proc/kcore has nothing there to mask or protect:
    such a case is left out rather than collected and skipped.
    """
    return [pytest.param(*case, id=case[0]) for case in cases if os.path.exists(case[0])]


EPERM = "Operation not permitted"
EROFS = "Read-only file system"
EACCES = "Permission denied"


# -- seccomp --------------------------------------------------------------------------


def test_a_seccomp_rule_makes_mkdir_fail(dy: Any) -> None:
    seccomp = dy.spec(["true"])["linux"]["seccomp"]
    # The default profile allows mkdir: a later rule for the same syscall would not
    # count (libseccomp keeps the first, for runc and crun too), so take it out first.
    for rule in seccomp["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n not in ("mkdir", "mkdirat")]
    seccomp["syscalls"] = [r for r in seccomp["syscalls"] if r["names"]]
    seccomp["syscalls"].append({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                "errnoRet": 38})
    out = attempt(dy, "mkdir /dev/shm/d", linux={"seccomp": seccomp})
    refused(out, "Function not implemented")
    # Everything else still works.
    assert "status=0" in attempt(dy, "touch /dev/shm/f", linux={"seccomp": seccomp})


def test_the_default_profile_is_loaded(dy: Any) -> None:
    out = attempt(dy, "grep -E '^(Seccomp|Seccomp_filters):' /proc/self/status")
    assert "Seccomp:\t2" in out


def test_the_default_profile_refuses_namespaces_and_keyrings(dy: Any) -> None:
    refused(attempt(dy, "unshare -m true"), EPERM)
    refused(attempt(dy, "unshare -U true"), EPERM)


# -- masked and read-only paths -------------------------------------------------------


@pytest.mark.parametrize("path", on_host(("/proc/kcore",), ("/proc/keys",),
                                         ("/proc/timer_list",), ("/proc/sched_debug",)))
def test_masked_files_read_nothing(dy: Any, path: str) -> None:
    out = attempt(dy, f"echo bytes=$(cat {path} | wc -c)")
    assert "bytes=0" in out, out


def test_masked_directories_are_empty(dy: Any) -> None:
    out = attempt(dy, "echo firmware=$(ls -A /sys/firmware | wc -l); touch /sys/firmware/x")
    assert "firmware=0" in out
    refused(out, EROFS)


# The value written is harmless should the write go through: sysrq 'h' prints its help
# to the kernel log, the others are written their current value.
@pytest.mark.parametrize(("path", "value"), on_host(
    ("/proc/sysrq-trigger", "h"),
    ("/proc/sys/kernel/hostname", "$(cat /proc/sys/kernel/hostname)"),
    ("/proc/sys/kernel/domainname", "$(cat /proc/sys/kernel/domainname)"),
    ("/proc/sys/kernel/modprobe", "$(cat /proc/sys/kernel/modprobe)"),
    ("/proc/sys/vm/overcommit_memory", "$(cat /proc/sys/vm/overcommit_memory)"),
))
def test_read_only_paths_refuse_writes(dy: Any, path: str, value: str) -> None:
    refused(attempt(dy, f"echo {value} > {path}"), EROFS)


def test_read_only_paths_are_read_only_mounts(dy: Any) -> None:
    from dockyard.runtime.spec import DEFAULT_READONLY_PATHS

    mountinfo = attempt(dy, "cat /proc/self/mountinfo")
    options = {line.split()[4]: line.split()[5].split(",") for line in mountinfo.splitlines()
               if len(line.split()) > 5}
    for path in DEFAULT_READONLY_PATHS:
        if os.path.exists(path):
            assert "ro" in options.get(path, []), f"{path} is not a read-only mount"


def test_sys_is_read_only(dy: Any) -> None:
    # Writes back the current value, which changes nothing should the write go through.
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if not Path(thp).exists():
        pytest.skip(f"{thp} is not on this kernel")
    refused(attempt(dy, f"v=$(sed 's/.*\\[\\(.*\\)\\].*/\\1/' {thp}); echo $v > {thp}"), EROFS)
    refused(attempt(dy, "echo x > /sys/fs/cgroup/memory/memory.limit_in_bytes"), EROFS)


# -- escape attempts ------------------------------------------------------------------


def test_mount_is_refused(dy: Any) -> None:
    refused(attempt(dy, "mount -t tmpfs none /mnt"), EPERM, EACCES)
    refused(attempt(dy, "mount -o remount,rw /proc/sys"), EPERM, EACCES)


def test_kernel_settings_cannot_be_written(dy: Any) -> None:
    refused(attempt(dy, "echo evil > /proc/sys/kernel/domainname"), EROFS)
    refused(attempt(dy, "echo 1 > /proc/sys/vm/drop_caches"), EROFS)


def test_the_module_loader_cannot_be_replaced(dy: Any) -> None:
    # Where the kernel has no /proc/sys/kernel/modprobe, creating it must fail too.
    refused(attempt(dy, "echo /dev/shm/evil > /proc/sys/kernel/modprobe"), EROFS,
            "nonexistent directory")


def test_kernel_modules_cannot_be_loaded(dy: Any) -> None:
    # A bogus module: the kernel would say "Exec format error" if it got that far.
    out = attempt(dy, "echo not-a-module > /dev/shm/evil.ko; insmod /dev/shm/evil.ko")
    refused(out, EPERM)


def test_host_processes_are_invisible(dy: Any) -> None:
    out = attempt(dy, "ls /proc/1/root/ >/dev/null; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                      f"test -e /proc/{os.getpid()} && echo host-visible || echo hidden")
    assert "hidden" in out or os.getpid() < 10
    assert "sh -c" in out  # /proc/1 is the container's own init


def test_devices_are_not_reachable(dy: Any) -> None:
    # The device cgroup denies what the container has no node for, even with mknod.
    refused(attempt(dy, "mknod /dev/sda1 b 8 1 && head -c 1 /dev/sda1"), EPERM)


def test_the_host_root_cannot_be_reached_by_chroot_tricks(dy: Any) -> None:
    out = attempt(dy, "cd /; cd ../../../../; pwd; test -e /work && echo host || echo contained")
    assert "contained" in out


# -- nothing of the runtime reaches the container --------------------------------------


def test_no_fd_of_the_runtime_leaks_into_the_container(dy: Any) -> None:
    out = attempt(dy, "ls /proc/self/fd | xargs")
    # 0 1 2, and the directory ls itself reads.
    assert out.splitlines()[0].split() == ["0", "1", "2", "3"], out
    cid = dy.start(["sleep", "300"])
    pid = dy.state(cid)["pid"]
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]


def test_the_init_runs_the_containers_own_binary(dy: Any) -> None:
    cid = dy.start(["sleep", "300"])
    state = dy.state(cid)
    exe = os.stat(f"/proc/{state['pid']}/exe")
    own = os.stat(Path(state["bundle"], "rootfs", "bin", "busybox"))
    assert (exe.st_dev, exe.st_ino) == (own.st_dev, own.st_ino)
    out = dy.ok("exec", cid, "readlink", "/proc/1/exe").stdout
    assert out == "/bin/busybox\n"


def test_exec_cannot_reach_the_runtimes_executable(dy: Any) -> None:
    cid = dy.start(["sleep", "300"])
    result = dy("exec", cid, "sh", "-c", "ls -l /proc/[0-9]*/exe 2>&1; "
                "for p in /proc/[0-9]*; do grep -H ^Name: $p/status; done")
    assert result.returncode == 0, result.stderr
    for word in ("python", ".venv", "/work", "/usr/bin", "/usr/lib"):
        assert word not in result.stdout, f"{word} visible from the container:\n{result.stdout}"


def test_the_runtimes_executable_cannot_be_run_inside(dy: Any) -> None:
    # CVE-2019-5736: /proc/self/exe as the command would be the host's executable.
    result = dy.run(["/proc/self/exe", "--version"])
    assert result.returncode != 0
    assert "Python" not in result.stdout and "dockyard" not in result.stdout


def test_processes_in_the_container_never_see_the_runtime_during_exec(dy: Any) -> None:
    # While `exec` sets a process up inside the container's namespaces, that process is
    # the runtime (a host Python). A watcher inside reads every /proc/PID/exe link in a
    # loop while execs come and go: it must see the exec'd processes, never the runtime.
    watcher = ("while :; do for p in /proc/[0-9]*; do "
               "echo \"${p#/proc/} $(readlink $p/exe 2>/dev/null)\"; done >> /dev/shm/seen; done")
    cid = dy.start(["sh", "-c", watcher])
    for _ in range(25):
        dy.ok("exec", cid, "sleep", "0.05")
    seen = dy.ok("exec", cid, "cat", "/dev/shm/seen").stdout.splitlines()
    exes = {line.split(" ", 1)[1] for line in seen if " " in line}
    pids = {int(line.split(" ", 1)[0]) for line in seen if line.split(" ", 1)[0].isdigit()}
    assert len(pids) > 3, "the watcher saw no exec'd process: the test proves nothing"
    assert not [exe for exe in exes if "python" in exe or ".venv" in exe], exes
