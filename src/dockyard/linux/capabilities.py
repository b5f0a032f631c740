"""Linux capabilities: names, and the five sets of the calling thread.

Kernel notes (capabilities(7)), which fix the order of ``apply``:

* The bounding set can only shrink, with ``prctl(PR_CAPBSET_DROP)``, and only while
  CAP_SETPCAP is in the *effective* set; so it is shrunk first, while the thread
  still has it.
* capset(2) sets effective, permitted and inheritable at once: permitted may only
  shrink, effective must stay within permitted, and inheritable may only gain what
  is in the bounding set (and, without CAP_SETPCAP, in permitted).
* An ambient capability can be raised only if it is both permitted and
  inheritable, so ambient comes last. The kernel drops an ambient capability on
  its own when it leaves permitted or inheritable.
* When a thread whose uids were all 0 sets them all non-zero, the kernel clears its
  ambient set, and its permitted and effective sets too unless ``keep_caps`` is on
  (in which case only effective is cleared). ``keep_caps`` is reset by execve.
  So a runtime that changes uid calls ``keep_caps(True)``, changes uid, then
  ``apply``: apply first raises effective back to permitted, so that the bounding
  set can still be dropped.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterable

from dockyard.errors import InvalidArgument
from dockyard.linux.syscalls import PR_SET_KEEPCAPS, prctl

__all__ = [
    "NAMES",
    "NUMBERS",
    "apply",
    "current",
    "keep_caps",
    "last_cap",
    "name",
    "parse",
]

# Indexed by capability number, from <linux/capability.h>.
NAMES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBERS: dict[str, int] = {cap: number for number, cap in enumerate(NAMES)}

_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def name(number: int) -> str:
    """The name of capability ``number`` (``CAP_...``), or ``CAP_<number>`` if unknown."""
    return NAMES[number] if 0 <= number < len(NAMES) else f"CAP_{number}"


def parse(names: Iterable[str]) -> set[int]:
    """The numbers of the capabilities ``names`` (``CAP_CHOWN``...).

    Raises InvalidArgument for a name that is not a Linux capability.
    """
    numbers: set[int] = set()
    for cap in names:
        number = NUMBERS.get(cap)
        if number is None:
            raise InvalidArgument(
                f"unknown capability {cap!r}: use a name of capabilities(7), like 'CAP_CHOWN'"
            )
        numbers.add(number)
    return numbers


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
        return int(f.read())


def keep_caps(on: bool) -> None:
    """Set or clear PR_SET_KEEPCAPS: whether permitted survives a uid change from 0."""
    prctl(PR_SET_KEEPCAPS, int(on))


class _CapHeader(ctypes.Structure):
    """``struct __user_cap_header_struct``; pid 0 is the calling thread."""

    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    """``struct __user_cap_data_struct``: one 32-bit word of each set."""

    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


# Version 3 takes two words of each set: capabilities 0-31, then 32-63.
_CapDataPair = _CapData * 2
_libc = ctypes.CDLL(None, use_errno=True)
_capget = _libc.capget
_capget.argtypes = (ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapDataPair))
_capget.restype = ctypes.c_int
_capset = _libc.capset
_capset.argtypes = (ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapDataPair))
_capset.restype = ctypes.c_int


def _mask(numbers: Iterable[int]) -> int:
    mask = 0
    for number in numbers:
        mask |= 1 << number
    return mask


def _call(syscall: str, function: Callable[..., int], data: ctypes.Array[_CapData]) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    while function(ctypes.byref(header), ctypes.byref(data)) == -1:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"{syscall}: {os.strerror(err)}")


def _get() -> tuple[int, int, int]:
    """capget(2): the (effective, permitted, inheritable) masks of this thread."""
    data = _CapDataPair()
    _call("capget", _capget, data)
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def _set(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of the three masks on this thread."""
    low, high = 0xFFFF_FFFF, 32
    data = _CapDataPair(
        _CapData(effective & low, permitted & low, inheritable & low),
        _CapData(effective >> high, permitted >> high, inheritable >> high),
    )
    _call("capset", _capset, data)


def apply(
    bounding: set[int],
    effective: set[int],
    permitted: set[int],
    inheritable: set[int],
    ambient: set[int],
) -> None:
    """Make the calling thread's five capability sets exactly these.

    Capabilities the running kernel does not know (above ``last_cap()``) are left
    out, as runc does. Works as root, and after a uid change made under
    ``keep_caps(True)``. Raises OSError (EPERM) when asked for a capability the
    thread's permitted or bounding set no longer holds.
    """
    top = last_cap()
    known = (1 << (top + 1)) - 1
    current_effective, current_permitted, current_inheritable = _get()
    if current_effective != current_permitted:
        # After a setuid from root under keep_caps the kernel emptied effective;
        # raise it back, CAP_SETPCAP included, for the bounding-set drops below.
        _set(current_permitted, current_permitted, current_inheritable)
    for number in range(top + 1):
        if number not in bounding:
            # Dropping a capability already out of the bounding set is not an error.
            prctl(_PR_CAPBSET_DROP, number)
    _set(_mask(effective) & known, _mask(permitted) & known, _mask(inheritable) & known)
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    for number in sorted(ambient):
        if number <= top:
            prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, number)


def current() -> dict[str, int]:
    """The five sets of the calling thread, as masks, from /proc/thread-self/status.

    Keys are the status fields: ``CapInh``, ``CapPrm``, ``CapEff``, ``CapBnd``,
    ``CapAmb``.
    """
    sets: dict[str, int] = {}
    with open("/proc/thread-self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Cap"):
                key, _, value = line.partition(":")
                sets[key] = int(value, 16)
    return sets
