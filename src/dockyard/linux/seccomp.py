"""seccomp: compile a syscall filter to classic BPF, and load a BPF program.

The two halves run in different processes on purpose. The runtime compiles the
container's filter in the parent (``compile_filter``, with libseccomp through
``pyseccomp``), while it can still afford Python work and report errors kindly, and
hands the resulting bytes to the forked child, which only has to call
``load_filter`` right before it execs the user's program. Loading is one seccomp(2)
call on a buffer: no libseccomp, no allocation worth speaking of, no import.

This module holds no policy: no default action, no default architectures; the
caller (``dockyard.runtime.seccomp_policy``) decides all of that.

Kernel notes:

* A filter is a classic BPF program (``struct sock_filter[]``, 8 bytes an
  instruction, at most 4096 of them) run on every syscall with a ``struct
  seccomp_data``; its 32-bit return value is the action, the high 16 bits select
  what happens (``SECCOMP_RET_*``) and the low 16 bits carry data (the errno of
  ERRNO, the message of TRACE).
* Installing a filter requires either ``no_new_privs`` or CAP_SYS_ADMIN in the
  caller's user namespace, so a runtime that drops capabilities without setting
  ``no_new_privs`` must load the filter *before* dropping them.
* Filters stack: once loaded a filter can never be removed, and it is inherited
  across fork and execve.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
from collections.abc import Iterable
from typing import NamedTuple

from dockyard.errors import InvalidArgument

__all__ = [
    "ACT_ALLOW",
    "ACT_KILL",
    "ACT_KILL_PROCESS",
    "ACT_KILL_THREAD",
    "ACT_LOG",
    "ACT_NOTIFY",
    "ACT_TRAP",
    "FILTER_FLAG_LOG",
    "FILTER_FLAG_NEW_LISTENER",
    "FILTER_FLAG_SPEC_ALLOW",
    "FILTER_FLAG_TSYNC",
    "FILTER_FLAG_TSYNC_ESRCH",
    "FILTER_FLAG_WAIT_KILLABLE_RECV",
    "Condition",
    "Op",
    "Rule",
    "act_errno",
    "act_trace",
    "compile_filter",
    "load_filter",
]


# Actions: the kernel's SECCOMP_RET_* values, which libseccomp's SCMP_ACT_* share.
ACT_KILL_PROCESS = 0x8000_0000  # kill the whole thread group (since 4.14)
ACT_KILL_THREAD = 0x0000_0000  # kill only the calling thread
ACT_KILL = ACT_KILL_THREAD  # libseccomp's historical name
ACT_TRAP = 0x0003_0000  # deliver SIGSYS to the caller
ACT_NOTIFY = 0x7FC0_0000  # ask the listener fd's supervisor (since 5.0)
ACT_LOG = 0x7FFC_0000  # allow, and log to the audit log (since 4.14)
ACT_ALLOW = 0x7FFF_0000
_RET_ERRNO = 0x0005_0000
_RET_TRACE = 0x7FF0_0000
_RET_DATA = 0x0000_FFFF


def act_errno(err: int) -> int:
    """The action that fails the syscall with ``-err`` (SCMP_ACT_ERRNO(err))."""
    return _RET_ERRNO | (err & _RET_DATA)


def act_trace(msg: int) -> int:
    """The action that notifies a ptrace tracer with ``msg`` (SCMP_ACT_TRACE(msg))."""
    return _RET_TRACE | (msg & _RET_DATA)


# seccomp(2) flags for SECCOMP_SET_MODE_FILTER, from <linux/seccomp.h>.
FILTER_FLAG_TSYNC = 1 << 0  # install on every thread of the process
FILTER_FLAG_LOG = 1 << 1  # log every action but ALLOW
FILTER_FLAG_SPEC_ALLOW = 1 << 2  # do not force speculative store bypass mitigation
FILTER_FLAG_NEW_LISTENER = 1 << 3  # return a user-notification listener fd
FILTER_FLAG_TSYNC_ESRCH = 1 << 4  # TSYNC failure is ESRCH, so it can mix with NEW_LISTENER
FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5  # notified task waits killably once received

_SECCOMP_SET_MODE_FILTER = 1
_BPF_INSN_SIZE = 8  # sizeof(struct sock_filter): u16 code, u8 jt, u8 jf, u32 k
_BPF_MAXINSNS = 4096

# glibc 2.36 has no seccomp() wrapper, so the call goes through syscall(3) with the
# number of this machine. Resolved once at import so the forked child does no lookup.
_NR_SECCOMP = {
    "x86_64": 317,
    "aarch64": 277,
    "riscv64": 277,
    "loongarch64": 277,
    "ppc64le": 358,
    "s390x": 348,
}.get(os.uname().machine)


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog``: the instruction count and a pointer to the program."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = (ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_SockFprog))


def load_filter(bpf: bytes, flags: int = 0) -> int:
    """Install the classic-BPF program ``bpf`` on the calling thread with seccomp(2).

    ``flags`` are ``FILTER_FLAG_*`` values. Returns the user-notification listener fd
    when ``FILTER_FLAG_NEW_LISTENER`` is given, 0 otherwise. Safe to call in a forked
    child: it only builds a ``struct sock_fprog`` over the bytes and makes the call.
    Raises InvalidArgument for a malformed program, OSError for a kernel refusal
    (EACCES without no_new_privs or CAP_SYS_ADMIN, EINVAL for an unknown flag).
    """
    if _NR_SECCOMP is None:
        raise OSError(errno.ENOSYS, f"seccomp: unsupported machine {os.uname().machine}")
    count, rest = divmod(len(bpf), _BPF_INSN_SIZE)
    if rest or not 0 < count <= _BPF_MAXINSNS:
        raise InvalidArgument(
            f"seccomp program of {len(bpf)} bytes is not 1 to {_BPF_MAXINSNS} BPF instructions"
        )
    # The kernel copies the program during the call, so the buffer only has to live
    # until it returns; the local keeps it alive.
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(count, ctypes.addressof(program))
    while True:
        ret = _syscall(_NR_SECCOMP, _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
        if ret >= 0:
            return int(ret)
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")


class Op(enum.IntEnum):
    """Comparison of a syscall argument (libseccomp's ``enum scmp_compare``)."""

    NE = 1
    LT = 2
    LE = 3
    EQ = 4
    GE = 5
    GT = 6
    MASKED_EQ = 7  # (arg & value) == value_two


class Condition(NamedTuple):
    """A test on argument ``index`` (0-5) of the syscall: ``arg <op> value``."""

    index: int
    op: Op
    value: int
    value_two: int = 0


class Rule(NamedTuple):
    """Take ``action`` when ``syscall`` is called and every condition holds."""

    syscall: str
    action: int
    conditions: tuple[Condition, ...] = ()


# libseccomp's attribute numbers (enum scmp_filter_attr) used below.
_ATTR_ACT_BADARCH = 2
_ATTR_CTL_NNP = 3
_ATTR_CTL_OPTIMIZE = 8
# libseccomp <= 2.5.4 builds a wrong tree for the binary-tree layout with no rules,
# and the tree only pays off on long filters: runc uses the same threshold.
_BINARY_TREE_MIN_RULES = 32


def compile_filter(
    default_action: int,
    rules: Iterable[Rule],
    architectures: Iterable[str],
    *,
    bad_arch_action: int,
) -> bytes:
    """Compile ``rules`` into a classic-BPF program for ``load_filter``.

    ``architectures`` are libseccomp names (``x86_64``, ``x86``, ``x32``,
    ``aarch64``...) added to the native one; an unknown name raises InvalidArgument.
    A syscall name that this libseccomp does not know is skipped, as runc does, so
    that one profile serves older and newer systems. Syscalls of another
    architecture than those of the filter get ``bad_arch_action``. Raises
    InvalidArgument for a rule libseccomp refuses, such as one whose action is the
    default action.
    """
    # Imported here: pyseccomp runs ldconfig at import (tens of ms), which a process
    # that only loads a precompiled filter must not pay.
    import pyseccomp

    flt = pyseccomp.SyscallFilter(default_action)
    # libseccomp would otherwise set no_new_privs itself when it loads the filter;
    # we export instead of loading, but keep the attribute honest: the runtime alone
    # decides no_new_privs, from the OCI process.noNewPrivileges.
    flt.set_attr(_ATTR_CTL_NNP, 0)
    flt.set_attr(_ATTR_ACT_BADARCH, bad_arch_action)
    for name in architectures:
        arch = getattr(pyseccomp.Arch, name.upper(), None) if name != "native" else None
        if arch is None:
            raise InvalidArgument(f"seccomp architecture {name!r} is not known to this libseccomp")
        # seccomp_arch_exist is 0 when present: the native arch always is.
        if not flt.exist_arch(arch):
            flt.add_arch(arch)
    count = 0
    for rule in rules:
        # Resolved for the native arch; libseccomp translates the number (or the
        # negative pseudo-number of a syscall the native arch lacks, like
        # socketcall) for every arch of the filter.
        nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, rule.syscall)
        if nr == -1:  # __NR_SCMP_ERROR: not a syscall this libseccomp knows
            import logging

            logging.getLogger(__name__).debug("seccomp: unknown syscall %r skipped",
                                              rule.syscall)
            continue
        args = [pyseccomp.Arg(c.index, int(c.op), c.value, c.value_two) for c in rule.conditions]
        try:
            flt.add_rule(rule.action, nr, *args)
        except OSError as exc:
            raise InvalidArgument(
                f"seccomp rule for {rule.syscall!r} refused by libseccomp ({exc.strerror}):"
                " check its action and conditions"
            ) from exc
        count += 1
    if count > _BINARY_TREE_MIN_RULES:
        flt.set_attr(_ATTR_CTL_OPTIMIZE, 2)
    # A memfd rather than a pipe: the program can outgrow a pipe's buffer and
    # seccomp_export_bpf writes it in one go from this very thread.
    with open(os.memfd_create("dockyard-seccomp", os.MFD_CLOEXEC), "rb", buffering=0) as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.readall()
