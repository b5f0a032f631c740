"""Typed wrappers of the Linux system calls the standard library lacks.

ctypes calls are not retried on EINTR the way ``os`` functions are, so every wrapper
here retries and raises ``OSError`` carrying errno, the syscall's name and the path.
Nothing here decides anything: the runtime owns the policy.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)

# x86_64 and aarch64 numbers of the calls glibc 2.36 has no wrapper for.
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "openat2": 437, "close_range": 436, "pidfd_open": 434},
    "aarch64": {"pivot_root": 41, "openat2": 437, "close_range": 436, "pidfd_open": 434},
}
_NR = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])

# clone(2) / unshare(2) / setns(2) flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 0x2

# openat2(2) resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

CLOSE_RANGE_CLOEXEC = 1 << 2

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def _check(name: str, result: int, path: str | None = None) -> int:
    if result == -1:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{name}: {os.strerror(err)}")
        raise OSError(err, f"{name}: {os.strerror(err)}", path)
    return result


def _retry(name: str, call: Callable[[], int], path: str | None = None) -> int:
    while True:
        result = call()
        if result == -1 and ctypes.get_errno() == errno.EINTR:
            continue
        return _check(name, result, path)


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2). ``target`` may be a ``/proc/self/fd/N`` magic link to an O_PATH fd."""
    _retry("mount", lambda: _libc.mount(_b(source), _b(target), _b(fstype),
                                        ctypes.c_ulong(flags), _b(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _retry("umount2", lambda: _libc.umount2(_b(target), flags), target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2), which glibc does not wrap."""
    _retry("pivot_root",
           lambda: _libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), new_root)


def unshare(flags: int) -> None:
    """unshare(2)."""
    _retry("unshare", lambda: _libc.unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that ``fd`` (from /proc/PID/ns/*) refers to."""
    _retry("setns", lambda: _libc.setns(fd, nstype))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments."""
    return _retry("prctl", lambda: _libc.prctl(option, ctypes.c_ulong(arg2),
                                                ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
                                                ctypes.c_ulong(arg5)))


def set_name(name: str) -> None:
    """Name the calling thread (what ps shows as comm), at most 15 bytes."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _retry("prctl", lambda: _libc.prctl(PR_SET_NAME, buf, 0, 0, 0))


def setdomainname(name: str) -> None:
    """setdomainname(2)."""
    raw = name.encode()
    _retry("setdomainname", lambda: _libc.setdomainname(raw, len(raw)))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` under the given RESOLVE_* rules."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    raw = os.fsencode(path)
    return _retry("openat2", lambda: _libc.syscall(_NR["openat2"], dirfd, raw,
                                                   ctypes.byref(how), ctypes.sizeof(how)), path)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2); with CLOSE_RANGE_CLOEXEC it marks the fds close-on-exec instead."""
    _retry("close_range", lambda: _libc.syscall(_NR["close_range"], ctypes.c_uint(first),
                                                ctypes.c_uint(last), ctypes.c_uint(flags)))


def fd_path(fd: int) -> str:
    """The magic-link path that reopens or mounts onto an open fd."""
    return f"/proc/self/fd/{fd}"


# ioctls of the terminal code
TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413


def pack_winsize(rows: int, cols: int) -> bytes:
    """The struct winsize that TIOCSWINSZ takes."""
    return struct.pack("HHHH", rows, cols, 0, 0)


def call_in_thread(function: Callable[[], T]) -> T:
    """``function()``'s result (or its exception), called in a new thread that ends
    with it: for ``setns`` and ``unshare``, which change the calling thread's
    namespaces, so that this process's other threads never change theirs, even on
    error."""
    import threading

    result: list[T] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            result.append(function())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=call, name="dockyard-ns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
