"""seccomp filters compiled in the parent and loaded in a forked child, on the real kernel.

Every filter is loaded in a child (a filter cannot be removed once loaded); the
child reports through a pipe and leaves with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

import forked
from dockyard.errors import InvalidArgument
from dockyard.linux import seccomp
from dockyard.oci.runtime import LinuxSeccomp, LinuxSeccompArg, LinuxSyscall
from dockyard.runtime.seccomp_policy import compile_oci_seccomp

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

DOCKER_PROFILE = Path("/work/shared/reference/docker-default-seccomp.json")
X86_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
NR_ACCT = 163  # x86_64; not in Docker's allow-list without CAP_SYS_PACCT
libc = ctypes.CDLL(None, use_errno=True)


def in_child(bpf: bytes, flags: int, body: Callable[[], object]) -> tuple[int, object]:
    """Load ``bpf`` in a forked child, run ``body`` there; return (wait status, result).

    The result travels as JSON; an exception is reported as its traceback with
    exit status 1.
    """

    def run(out: int) -> None:
        seccomp.load_filter(bpf, flags)
        os.write(out, json.dumps(body()).encode())

    status, output = forked.in_child(run)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1:
        return status, output.decode()
    return status, json.loads(output) if output else None


def errno_of(call: Callable[[], object]) -> int:
    """The errno ``call`` fails with, or 0."""
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


def libc_errno(result: int) -> int:
    return ctypes.get_errno() if result == -1 else 0


def docker_profile(default_errno_ret: int) -> LinuxSeccomp:
    """Docker's default profile as an OCI section: its unconditional rules only."""
    profile = json.loads(DOCKER_PROFILE.read_text())
    syscalls = [
        LinuxSyscall(
            names=rule["names"],
            action=rule["action"],
            errno_ret=rule.get("errnoRet"),
            args=[
                LinuxSeccompArg(
                    index=arg["index"],
                    value=arg["value"],
                    value_two=arg.get("valueTwo"),
                    op=arg["op"],
                )
                for arg in rule.get("args", [])
            ]
            or None,
        )
        for rule in profile["syscalls"]
        if "includes" not in rule and "excludes" not in rule
    ]
    return LinuxSeccomp(
        default_action=profile["defaultAction"],
        default_errno_ret=default_errno_ret,
        architectures=X86_ARCHES,
        syscalls=syscalls,
    )


def test_errno_for_mkdir_only(tmp_path: Path) -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        architectures=X86_ARCHES,
        syscalls=[LinuxSyscall(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=99)],
    )
    bpf, flags = compile_oci_seccomp(config)

    def body() -> object:
        return {
            "mkdir": errno_of(lambda: os.mkdir(tmp_path / "denied")),
            "write": errno_of(lambda: (tmp_path / "allowed").write_text("yes")),
            "pid": os.getpid() > 0,
        }

    status, result = in_child(bpf, flags, body)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == {"mkdir": 99, "write": 0, "pid": True}
    assert not (tmp_path / "denied").exists()
    assert (tmp_path / "allowed").read_text() == "yes"


def test_errno_defaults_to_eperm() -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[LinuxSyscall(names=["acct"], action="SCMP_ACT_ERRNO")],
    )
    status, result = in_child(
        *compile_oci_seccomp(config), lambda: libc_errno(libc.syscall(NR_ACCT, None))
    )
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == errno.EPERM


def test_argument_conditions() -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[
            # personality(0xffffffff) only queries: deny just that call.
            LinuxSyscall(
                names=["personality"],
                action="SCMP_ACT_ERRNO",
                errno_ret=77,
                args=[LinuxSeccompArg(index=0, value=0xFFFFFFFF, op="SCMP_CMP_EQ")],
            ),
            # IPv6 sockets of any type but raw ones; masked on SOCK_NONBLOCK|SOCK_CLOEXEC.
            LinuxSyscall(
                names=["socket"],
                action="SCMP_ACT_ERRNO",
                errno_ret=97,
                args=[
                    LinuxSeccompArg(index=0, value=socket.AF_INET6, op="SCMP_CMP_EQ"),
                    LinuxSeccompArg(
                        index=1, value=0xFF, value_two=socket.SOCK_RAW, op="SCMP_CMP_MASKED_EQ"
                    ),
                ],
            ),
        ],
    )

    def body() -> object:
        def open_socket(family: int, kind: int, proto: int = 0) -> int:
            with socket.socket(family, kind | socket.SOCK_CLOEXEC, proto):
                return 0

        return {
            "query": libc_errno(libc.personality(ctypes.c_ulong(0xFFFFFFFF))),
            "set": libc_errno(libc.personality(ctypes.c_ulong(0))),
            # 58 and 1: IPPROTO_ICMPV6, IPPROTO_ICMP
            "raw6": errno_of(lambda: open_socket(socket.AF_INET6, socket.SOCK_RAW, 58)),
            "udp6": errno_of(lambda: open_socket(socket.AF_INET6, socket.SOCK_DGRAM)),
            "raw4": errno_of(lambda: open_socket(socket.AF_INET, socket.SOCK_RAW, 1)),
        }

    status, result = in_child(*compile_oci_seccomp(config), body)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == {"query": 77, "set": 0, "raw6": 97, "udp6": 0, "raw4": 0}


def test_conditions_on_one_argument_are_ored() -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[
            LinuxSyscall(
                names=["personality"],
                action="SCMP_ACT_ERRNO",
                errno_ret=77,
                args=[
                    LinuxSeccompArg(index=0, value=0xFFFFFFFF, op="SCMP_CMP_EQ"),
                    LinuxSeccompArg(index=0, value=0x10, op="SCMP_CMP_LT"),
                ],
            )
        ],
    )

    def body() -> object:
        return [
            libc_errno(libc.personality(ctypes.c_ulong(value)))
            for value in (0xFFFFFFFF, 0, 0x0020000)  # query, PER_LINUX, ADDR_NO_RANDOMIZE
        ]

    status, result = in_child(*compile_oci_seccomp(config), body)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == [77, 77, 0]


def test_kill_process_dies_of_sigsys() -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[LinuxSyscall(names=["getppid"], action="SCMP_ACT_KILL_PROCESS")],
    )
    status, result = in_child(*compile_oci_seccomp(config), os.getppid)
    assert os.WIFSIGNALED(status), result
    assert os.WTERMSIG(status) == signal.SIGSYS


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        ("SCMP_ACT_LOG", "exit 0"),  # allowed, and logged to the audit log
        ("SCMP_ACT_TRACE", f"errno {errno.ENOSYS}"),  # no tracer attached: ENOSYS
        ("SCMP_ACT_TRAP", f"signal {signal.SIGSYS}"),  # SIGSYS, default disposition
        ("SCMP_ACT_KILL_THREAD", f"signal {signal.SIGSYS}"),  # the only thread
        ("SCMP_ACT_KILL", f"signal {signal.SIGSYS}"),
    ],
)
def test_actions(tmp_path: Path, action: str, outcome: str) -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[LinuxSyscall(names=["mkdir", "mkdirat"], action=action)],
    )

    def body() -> object:
        err = errno_of(lambda: os.mkdir(tmp_path / "dir"))
        return f"errno {err}" if err else "exit 0"

    status, result = in_child(*compile_oci_seccomp(config), body)
    if os.WIFSIGNALED(status):
        result = f"signal {os.WTERMSIG(status)}"
    assert result == outcome


def test_docker_profile_with_default_errno_ret() -> None:
    config = docker_profile(default_errno_ret=42)
    bpf, flags = compile_oci_seccomp(config)

    def body() -> object:
        return {
            "acct": libc_errno(libc.syscall(NR_ACCT, None)),  # not allowed: default action
            "read": len(Path("/proc/self/status").read_bytes()) > 0,
            "personality": libc_errno(libc.personality(ctypes.c_ulong(0xFFFFFFFF))),
        }

    status, result = in_child(bpf, flags, body)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == {"acct": 42, "read": True, "personality": 0}


def test_log_and_spec_allow_flags_are_accepted() -> None:
    config = docker_profile(default_errno_ret=1)
    config.flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    bpf, flags = compile_oci_seccomp(config)
    assert flags == seccomp.FILTER_FLAG_LOG | seccomp.FILTER_FLAG_SPEC_ALLOW

    def body() -> object:
        with open("/proc/self/status") as status:
            return [line.split()[1] for line in status if line.startswith("Seccomp:")]

    status, result = in_child(bpf, flags, body)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == ["2"]  # SECCOMP_MODE_FILTER


def test_new_listener_returns_an_fd() -> None:
    bpf = seccomp.compile_filter(
        seccomp.ACT_ALLOW,
        [seccomp.Rule("acct", seccomp.ACT_NOTIFY)],
        [],
        bad_arch_action=seccomp.ACT_KILL_PROCESS,
    )

    def body() -> object:
        # in_child drops load_filter's result: look for the listener among the fds.
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            # The directory fd of listdir is closed by now: its link is gone.
            with contextlib.suppress(FileNotFoundError):
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        return targets.count("anon_inode:seccomp notify")

    status, result = in_child(bpf, seccomp.FILTER_FLAG_NEW_LISTENER, body)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result == 1


def test_load_filter_reports_the_kernel_refusal() -> None:
    bpf = seccomp.compile_filter(
        seccomp.ACT_ALLOW, [], [], bad_arch_action=seccomp.ACT_KILL_PROCESS
    )
    status, result = in_child(bpf, 1 << 30, lambda: None)
    assert os.waitstatus_to_exitcode(status) == 1
    assert "OSError: [Errno 22] seccomp(SECCOMP_SET_MODE_FILTER)" in str(result)


def test_load_filter_refuses_a_truncated_program() -> None:
    with pytest.raises(InvalidArgument, match="BPF instructions"):
        seccomp.load_filter(b"\x06\x00\x00\x00\x00\x00")


def test_notify_is_refused() -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        listener_path="/run/agent.sock",
        syscalls=[LinuxSyscall(names=["mkdir"], action="SCMP_ACT_NOTIFY")],
    )
    with pytest.raises(InvalidArgument, match="seccomp notify is not supported"):
        compile_oci_seccomp(config)


def test_unknown_names_and_default_action_rules_are_skipped() -> None:
    plain = LinuxSeccomp(
        default_action="SCMP_ACT_ERRNO",
        syscalls=[LinuxSyscall(names=["getpid"], action="SCMP_ACT_ALLOW")],
    )
    noisy = LinuxSeccomp(
        default_action="SCMP_ACT_ERRNO",
        syscalls=[
            LinuxSyscall(names=["getpid", "no_such_syscall"], action="SCMP_ACT_ALLOW"),
            LinuxSyscall(names=["mkdir"], action="SCMP_ACT_ERRNO"),
        ],
    )
    assert compile_oci_seccomp(noisy) == compile_oci_seccomp(plain)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architectures": ["SCMP_ARCH_VAX"]}, "'vax' is not known"),
        ({"architectures": ["x86_64"]}, "unknown seccomp architecture 'x86_64'"),
        ({"flags": ["SECCOMP_FILTER_FLAG_NOPE"]}, "unknown seccomp flag"),
        ({"default_action": "SCMP_ACT_NOPE"}, "unknown action 'SCMP_ACT_NOPE'"),
        ({"default_errno_ret": 70000, "default_action": "SCMP_ACT_ERRNO"}, "errnoRet 70000"),
    ],
)
def test_invalid_sections(change: dict[str, object], message: str) -> None:
    config = LinuxSeccomp(default_action="SCMP_ACT_ALLOW")
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(InvalidArgument, match=message):
        compile_oci_seccomp(config)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (LinuxSeccompArg(index=6, value=0, op="SCMP_CMP_EQ"), "argument index 6"),
        (LinuxSeccompArg(index=0, value=1 << 64, op="SCMP_CMP_EQ"), "64-bit"),
        (LinuxSeccompArg(index=0, value=0, op="SCMP_CMP_LIKE"), "unknown operator"),
    ],
)
def test_invalid_arguments(arg: LinuxSeccompArg, message: str) -> None:
    config = LinuxSeccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=[LinuxSyscall(names=["mkdir"], action="SCMP_ACT_KILL", args=[arg])],
    )
    with pytest.raises(InvalidArgument, match=message):
        compile_oci_seccomp(config)
