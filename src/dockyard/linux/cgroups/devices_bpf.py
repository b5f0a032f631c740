"""Device access rules for cgroup v2: an eBPF program, assembled and attached here.

cgroup v2 has no ``devices.allow``: the kernel runs the BPF_PROG_TYPE_CGROUP_DEVICE
programs attached to a process's cgroup (and its ancestors) whenever the process opens
or mknods a device node, and refuses the access (EPERM) if one returns 0. This module
turns a list of rules into such a program, in the shape runc's devicefilter gives it:

    r2 = ctx->access_type & 0xffff      device type: BPF_DEVCG_DEV_BLOCK 1, _CHAR 2
    r3 = ctx->access_type >> 16         access asked: _ACC_MKNOD 1, _READ 2, _WRITE 4
    r4 = ctx->major ; r5 = ctx->minor
    for each rule, last one first:      (so that the last rule that matches wins)
        if r2 != type                 goto next      (left out for type 'a')
        if (r3 & access) != r3        goto next      (left out for access 'rwm')
        if r4 != major                goto next      (left out for a wildcard)
        if r5 != minor                goto next      (left out for a wildcard)
        return allow
    next: ...
    return 0                            (default deny)

No library is used: the instructions are packed by hand (``struct bpf_insn``) and
loaded and attached with the bpf(2) system call through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Sequence
from typing import NamedTuple

from dockyard.errors import InvalidArgument, SystemFailure

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)

# bpf(2) commands, program and attach types, flags (include/uapi/linux/bpf.h).
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
# Several programs may sit on one cgroup and all must allow: this is what lets the new
# program be attached before the old one is detached, leaving no moment unfiltered.
_BPF_F_ALLOW_MULTI = 1 << 1

# The context passed to the program: struct bpf_cgroup_dev_ctx.
_DEV_TYPE = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}
_ALL_ACCESS = 7

# Opcodes (BPF_CLASS | BPF_OP | BPF_SRC) of the few instructions used.
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W:   dst = *(u32 *)(src + off)
_AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K:   dst &= imm (32 bit)
_RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K:   dst >>= imm (32 bit)
_MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X:   dst = src (32 bit)
_MOV32_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K:   dst = imm (32 bit)
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K:   if dst != imm: pc += off
_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X:   if dst != src: pc += off
_EXIT = 0x95  # BPF_JMP | BPF_EXIT:         return r0

_R0, _R1, _R2, _R3, _R4, _R5 = range(6)

_LOG_SIZE = 1 << 16


class DeviceRule(NamedTuple):
    """One device cgroup rule, as in ``linux.resources.devices`` of the OCI spec."""

    allow: bool
    type: str
    """``a`` (all), ``b`` (block) or ``c`` (char)."""
    major: int
    """-1 for any."""
    minor: int
    """-1 for any."""
    access: str
    """Some of ``r``, ``w``, ``m``."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; }, with
    # the bit-field in little-endian order: dst in the low nibble.
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _rule_block(rule: DeviceRule) -> tuple[list[bytes], bool]:
    """Assemble one rule; also tell whether it matches every access (a catch-all)."""
    if rule.type not in ("a", "b", "c") or not rule.access or set(rule.access) - set("rwm"):
        raise InvalidArgument(
            f"bad device rule {rule.type} {rule.major}:{rule.minor} {rule.access}:"
            " type must be a, b or c and access some of r, w, m"
        )
    access = sum(_ACCESS[c] for c in set(rule.access))
    # Each check is (instructions before the jump, the jump); the jump offset, to the
    # start of the next block, is only known once the block's length is.
    checks: list[tuple[list[bytes], tuple[int, int, int, int]]] = []
    if rule.type != "a":
        checks.append(([], (_JNE_K, _R2, 0, _DEV_TYPE[rule.type])))
    if access != _ALL_ACCESS:
        # r1 (the context pointer) is free after the loads: use it as scratch.
        checks.append(
            ([_insn(_MOV32_X, _R1, _R3), _insn(_AND32_K, _R1, imm=access)], (_JNE_X, _R1, _R3, 0))
        )
    if rule.major >= 0:
        checks.append(([], (_JNE_K, _R4, 0, rule.major)))
    if rule.minor >= 0:
        checks.append(([], (_JNE_K, _R5, 0, rule.minor)))
    length = sum(len(pre) + 1 for pre, _ in checks) + 2
    block: list[bytes] = []
    for pre, (code, dst, src, imm) in checks:
        block += pre
        # A jump lands at pc + 1 + off; "next" is the instruction after this block.
        block.append(_insn(code, dst, src, off=length - len(block) - 1, imm=imm))
    block += [_insn(_MOV32_K, _R0, imm=int(rule.allow)), _insn(_EXIT)]
    return block, not checks


def assemble(rules: Sequence[DeviceRule]) -> bytes:
    """Return the program's instructions for ``rules`` (last matching rule wins, default deny)."""
    program = [
        _insn(_LDX_W, _R2, _R1, off=0),
        _insn(_AND32_K, _R2, imm=0xFFFF),
        _insn(_LDX_W, _R3, _R1, off=0),
        _insn(_RSH32_K, _R3, imm=16),
        _insn(_LDX_W, _R4, _R1, off=4),
        _insn(_LDX_W, _R5, _R1, off=8),
    ]
    for rule in reversed(rules):
        block, catch_all = _rule_block(rule)
        program += block
        if catch_all:
            # It decides every access: what would follow is unreachable, and the
            # verifier rejects a program with unreachable instructions.
            return b"".join(program)
    program += [_insn(_MOV32_K, _R0, imm=0), _insn(_EXIT)]
    return b"".join(program)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    # ctypes does not retry on EINTR the way os functions do: retry here.
    while True:
        result = _libc.syscall(_NR_BPF, cmd, attr, len(attr))
        if result >= 0:
            return int(result)
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"bpf({what}): {os.strerror(err)}")


def load_device_filter(rules: Sequence[DeviceRule]) -> int:
    """Load the program for ``rules`` into the kernel; return its file descriptor."""
    insns = ctypes.create_string_buffer(assemble(rules))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = ctypes.create_string_buffer(128)
    # union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns, license,
    # log_level, log_size, log_buf; the rest (kern_version, flags, name...) zero.
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        _BPF_PROG_TYPE_CGROUP_DEVICE,
        len(insns.raw) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1,
        _LOG_SIZE,
        ctypes.addressof(log),
    )
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
    except OSError as e:
        verifier = log.value.decode(errors="replace").strip().splitlines()
        detail = f" (verifier: {verifier[-1]})" if verifier else ""
        raise SystemFailure(f"cannot load the device filter: {e.strerror}{detail}") from None


def _attached_ids(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(40)
    # BPF_PROG_QUERY: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt.
    struct.pack_into(
        "<IIIIQI", attr, 0, cgroup_fd, _BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids)
    )
    _bpf(_BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


def _attach_op(cmd: int, cgroup_fd: int, prog_fd: int, flags: int, what: str) -> None:
    attr = ctypes.create_string_buffer(20)
    # BPF_PROG_ATTACH / _DETACH: target_fd, attach_bpf_fd, attach_type, attach_flags.
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, _BPF_CGROUP_DEVICE, flags)
    _bpf(cmd, attr, what)


def attach_device_filter(cgroup_dir: str, rules: Sequence[DeviceRule]) -> None:
    """Make ``rules`` the device filter of the cgroup v2 directory ``cgroup_dir``.

    The new program is attached next to the ones already there (BPF_F_ALLOW_MULTI)
    and only then are those detached, as runc does: the cgroup is never unfiltered.
    The cgroup holds a reference to its programs: no file descriptor is kept open.
    """
    prog_fd = load_device_filter(rules)
    try:
        cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        os.close(prog_fd)
        raise SystemFailure(f"cannot open cgroup {cgroup_dir}: {e.strerror}") from None
    try:
        old = _attached_ids(cgroup_fd)
        _attach_op(_BPF_PROG_ATTACH, cgroup_fd, prog_fd, _BPF_F_ALLOW_MULTI, "BPF_PROG_ATTACH")
        for prog_id in old:
            attr = ctypes.create_string_buffer(12)
            struct.pack_into("<I", attr, 0, prog_id)
            old_fd = _bpf(_BPF_PROG_GET_FD_BY_ID, attr, "BPF_PROG_GET_FD_BY_ID")
            try:
                _attach_op(_BPF_PROG_DETACH, cgroup_fd, old_fd, 0, "BPF_PROG_DETACH")
            finally:
                os.close(old_fd)
    except OSError as e:
        raise SystemFailure(f"cannot set the device filter of {cgroup_dir}: {e.strerror}") from None
    finally:
        os.close(cgroup_fd)
        os.close(prog_fd)
