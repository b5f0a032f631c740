"""The container's seccomp filter: an OCI ``linux.seccomp`` section to a BPF program.

Called in the runtime's parent process, before fork: the child only hands the
bytes to ``dockyard.linux.seccomp.load_filter`` with the returned flags. The
meaning of each OCI field follows runc's:

* ``SCMP_ACT_ERRNO`` and ``SCMP_ACT_TRACE`` without ``errnoRet`` return EPERM;
  ``errnoRet`` is ignored on the other actions.
* ``SCMP_ACT_KILL`` is ``SCMP_ACT_KILL_THREAD``.
* A rule whose action is the default action is dropped (it changes nothing, and
  libseccomp refuses it).
* A syscall name this libseccomp does not know is skipped, so one profile serves
  older and newer systems.
* The conditions of one rule are ANDed, except when two of them test the same
  argument: then each condition becomes a rule of its own, so they are ORed (the
  behaviour libseccomp had before 2.4, which profiles still rely on).
* ``SECCOMP_FILTER_FLAG_*`` flags become seccomp(2) flags.

A syscall of an architecture the filter does not list kills the process: it can
only be a process switching ABI (``int 0x80`` on x86_64) to slip past the rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import zlib
from collections.abc import Iterator

import msgspec

from dockyard import __version__
from dockyard.errors import InvalidArgument
from dockyard.linux import seccomp
from dockyard.oci.runtime import LinuxSeccomp, LinuxSeccompArg, LinuxSyscall

__all__ = ["compile_cached", "compile_oci_seccomp"]

_FIXED_ACTIONS = {
    "SCMP_ACT_KILL": seccomp.ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": seccomp.ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": seccomp.ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": seccomp.ACT_TRAP,
    "SCMP_ACT_LOG": seccomp.ACT_LOG,
    "SCMP_ACT_ALLOW": seccomp.ACT_ALLOW,
}
_ERRNO_ACTIONS = {"SCMP_ACT_ERRNO": seccomp.act_errno, "SCMP_ACT_TRACE": seccomp.act_trace}

_OPERATORS = {
    "SCMP_CMP_NE": seccomp.Op.NE,
    "SCMP_CMP_LT": seccomp.Op.LT,
    "SCMP_CMP_LE": seccomp.Op.LE,
    "SCMP_CMP_EQ": seccomp.Op.EQ,
    "SCMP_CMP_GE": seccomp.Op.GE,
    "SCMP_CMP_GT": seccomp.Op.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.Op.MASKED_EQ,
}

_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": seccomp.FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": seccomp.FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": seccomp.FILTER_FLAG_SPEC_ALLOW,
    # Only changes how a notified task waits on a listener; without notify support
    # there is no listener, and the kernel refuses the flag on its own (EINVAL).
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 0,
}

_ARCH_PREFIX = "SCMP_ARCH_"
_MAX_ERRNO = 4095  # the kernel turns a larger SECCOMP_RET_ERRNO datum into 4095
_MAX_ARGS = 6
_UINT64_END = 1 << 64
_NOTIFY_UNSUPPORTED = "seccomp notify is not supported: use another action than SCMP_ACT_NOTIFY"


def _action(name: str, errno_ret: int | None, where: str) -> int:
    fixed = _FIXED_ACTIONS.get(name)
    if fixed is not None:
        return fixed
    with_errno = _ERRNO_ACTIONS.get(name)
    if with_errno is not None:
        err = errno.EPERM if errno_ret is None else errno_ret
        if not 0 <= err <= _MAX_ERRNO:
            raise InvalidArgument(f"seccomp {where}: errnoRet {err} is not 0 to {_MAX_ERRNO}")
        return with_errno(err)
    if name == "SCMP_ACT_NOTIFY":
        raise InvalidArgument(_NOTIFY_UNSUPPORTED)
    raise InvalidArgument(f"seccomp {where}: unknown action {name!r}")


def _condition(arg: LinuxSeccompArg, where: str) -> seccomp.Condition:
    op = _OPERATORS.get(arg.op)
    if op is None:
        raise InvalidArgument(f"seccomp {where}: unknown operator {arg.op!r}")
    if not 0 <= arg.index < _MAX_ARGS:
        raise InvalidArgument(f"seccomp {where}: argument index {arg.index} is not 0 to 5")
    value_two = arg.value_two or 0
    if not (0 <= arg.value < _UINT64_END and 0 <= value_two < _UINT64_END):
        raise InvalidArgument(f"seccomp {where}: argument value is not a 64-bit unsigned int")
    # For MASKED_EQ, OCI's value is the mask and valueTwo the datum, as libseccomp wants.
    return seccomp.Condition(arg.index, op, arg.value, value_two)


def _rules(syscall: LinuxSyscall, action: int, where: str) -> Iterator[seccomp.Rule]:
    conditions = tuple(_condition(arg, where) for arg in syscall.args or ())
    indexes = [c.index for c in conditions]
    groups = (
        [(c,) for c in conditions] if len(set(indexes)) < len(indexes) else [conditions]
    )
    for name in syscall.names:
        for group in groups:
            yield seccomp.Rule(name, action, group)


def compile_oci_seccomp(config: LinuxSeccomp) -> tuple[bytes, int]:
    """Compile the OCI ``linux.seccomp`` section into a BPF program and seccomp(2) flags.

    Returns what ``dockyard.linux.seccomp.load_filter`` takes. Raises
    InvalidArgument for an unknown action, operator, architecture or flag, an
    out-of-range argument, and for SCMP_ACT_NOTIFY, which is not supported.
    """
    default = _action(config.default_action, config.default_errno_ret, "defaultAction")
    rules: list[seccomp.Rule] = []
    for index, syscall in enumerate(config.syscalls or ()):
        where = f"syscalls[{index}]"
        if not syscall.names:
            raise InvalidArgument(f"seccomp {where}: a rule needs at least one syscall name")
        action = _action(syscall.action, syscall.errno_ret, where)
        if action != default:
            rules.extend(_rules(syscall, action, where))
    architectures = []
    for arch in config.architectures or ():
        if not arch.startswith(_ARCH_PREFIX):
            raise InvalidArgument(f"unknown seccomp architecture {arch!r}")
        architectures.append(arch.removeprefix(_ARCH_PREFIX).lower())
    flags = _flags(config)
    bpf = seccomp.compile_filter(
        default, rules, architectures, bad_arch_action=seccomp.ACT_KILL_PROCESS
    )
    return bpf, flags


def _flags(config: LinuxSeccomp) -> int:
    flags = 0
    for flag in config.flags or ():
        if flag not in _FLAGS:
            raise InvalidArgument(f"unknown seccomp flag {flag!r}")
        flags |= _FLAGS[flag]
    return flags


# Where libseccomp lives on the distributions we run on: its identity is part of the
# cache key, because another version may resolve syscall names differently.
_LIBSECCOMP = ("/usr/lib/x86_64-linux-gnu/libseccomp.so.2", "/usr/lib/aarch64-linux-gnu/"
               "libseccomp.so.2", "/usr/lib64/libseccomp.so.2", "/usr/lib/libseccomp.so.2")


def _library_identity() -> str:
    for path in _LIBSECCOMP:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    return "unknown"


def compile_cached(config: LinuxSeccomp, cache_dir: str | None) -> tuple[bytes, int]:
    """``compile_oci_seccomp`` with the program kept on disk, keyed by what it depends on.

    Compiling Docker's default profile for three architectures costs libseccomp about
    15 ms (and importing its bindings more): too much for every container start, and the
    same profile is used over and over. The key is the section itself with the dockyard
    version, the machine and the libseccomp build. A file is named by the key's CRC
    and holds the whole key before the program: a file is used only when its key is
    ours byte for byte, so no two sections ever share a program (no cryptographic hash
    is needed, and importing hashlib would cost more than the lookup).
    """
    if cache_dir is None:
        return compile_oci_seccomp(config)
    key = b"\0".join((msgspec.json.encode(config), __version__.encode(),
                      os.uname().machine.encode(), _library_identity().encode()))
    path = os.path.join(cache_dir, f"{zlib.crc32(key):08x}-{len(key)}")
    flags = _flags(config)
    header = len(key).to_bytes(4, "little") + key
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            data = f.read()
        bpf = data[len(header):]
        if data.startswith(header) and bpf and len(bpf) % 8 == 0:
            return bpf, flags
    bpf, flags = compile_oci_seccomp(config)
    with contextlib.suppress(OSError):
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(header + bpf)
        os.rename(tmp, path)
    return bpf, flags
