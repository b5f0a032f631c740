"""The container process: prepared in the runtime, finished in the forked child.

Everything that can fail for a reason the user can fix (an unknown capability, a bad
rlimit, a seccomp profile) is parsed and compiled here, in the runtime's process,
before any fork: the error then reaches the user as one line, and the child has
almost no Python work left between entering the container and exec.
"""

from __future__ import annotations

import os
import resource
import stat

import msgspec

from dockyard.errors import CannotExecute, CommandNotFound, InvalidArgument
from dockyard.linux import capabilities, seccomp
from dockyard.linux import syscalls as sc
from dockyard.oci.runtime import LinuxSeccomp, Process
from dockyard.runtime.seccomp_policy import compile_cached

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Capabilities(msgspec.Struct):
    """The five capability sets, as numbers."""

    bounding: set[int]
    effective: set[int]
    permitted: set[int]
    inheritable: set[int]
    ambient: set[int]


class PreparedProcess(msgspec.Struct, kw_only=True):
    """A process ready to be finished in a child: plain values only."""

    args: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    additional_gids: list[int]
    umask: int | None
    caps: Capabilities | None
    rlimits: list[tuple[int, int, int]] = msgspec.field(default_factory=list)
    no_new_privileges: bool = False
    seccomp_bpf: bytes | None = None
    seccomp_flags: int = 0
    oom_score_adj: int | None = None
    terminal: bool = False
    console_size: tuple[int, int] | None = None
    # (st_dev, st_ino) of the runtime's own executable, which must never run inside.
    runtime_exe: tuple[int, int] = (0, 0)


def prepare(process: Process, seccomp_spec: LinuxSeccomp | None,
            cache_dir: str | None = None) -> PreparedProcess:
    """Check and convert an OCI process into what the child needs.

    ``cache_dir`` keeps compiled seccomp programs between calls.
    """
    if not process.args:
        raise InvalidArgument("process.args must not be empty")
    if not process.cwd.startswith("/"):
        raise InvalidArgument(f"process.cwd {process.cwd!r} must be an absolute path")
    caps = None
    if process.capabilities is not None:
        c = process.capabilities
        caps = Capabilities(*(capabilities.parse(names or ()) for names in
                              (c.bounding, c.effective, c.permitted, c.inheritable, c.ambient)))
        # The kernel raises an ambient capability only if it is permitted and
        # inheritable; runc skips the others (`runc spec` asks for ambient caps without
        # inheritable ones), and so do we.
        caps.ambient &= caps.permitted & caps.inheritable
    rlimits = []
    for rl in process.rlimits or ():
        number = getattr(resource, rl.type, None)
        if not rl.type.startswith("RLIMIT_") or number is None:
            raise InvalidArgument(f"unknown rlimit type {rl.type!r}")
        if rl.soft > rl.hard:
            raise InvalidArgument(f"rlimit {rl.type}: soft limit {rl.soft} is above the hard "
                                  f"limit {rl.hard}")
        rlimits.append((number, _rlim(rl.soft), _rlim(rl.hard)))
    bpf, flags = (compile_cached(seccomp_spec, cache_dir) if seccomp_spec is not None
                  else (None, 0))
    size = process.console_size
    return PreparedProcess(
        args=list(process.args), env=list(process.env or ()), cwd=process.cwd,
        uid=process.user.uid, gid=process.user.gid,
        additional_gids=list(process.user.additional_gids or ()),
        umask=process.user.umask, caps=caps, rlimits=rlimits,
        no_new_privileges=bool(process.no_new_privileges), seccomp_bpf=bpf,
        seccomp_flags=flags, oom_score_adj=process.oom_score_adj,
        terminal=bool(process.terminal),
        console_size=(size.height, size.width) if size else None,
        runtime_exe=_identity("/proc/self/exe") or (0, 0),
    )


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refuse_runtime_binary(prepared: PreparedProcess, path: str) -> None:
    """Refuse to run the runtime's own executable inside the container (CVE-2019-5736).

    A container that makes its command ``/proc/self/exe`` (or a script whose
    interpreter is) would run the host's interpreter inside it, and a process of the
    container could then open that file through /proc/PID/exe and overwrite it. The
    check follows symlinks and up to four levels of ``#!`` interpreters, as the kernel
    does.
    """
    for _ in range(5):
        if _identity(path) == prepared.runtime_exe:
            raise CannotExecute(f'exec: "{prepared.args[0]}": refusing to run the '
                                "runtime's own executable in the container")
        try:
            with open(path, "rb") as f:
                head = f.read(256)
        except OSError:
            return
        if not head.startswith(b"#!"):
            return
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            return
        path = os.fsdecode(words[0])


def _rlim(value: int) -> int:
    # 2**64-1 is how the spec (and Go) write "unlimited".
    return resource.RLIM_INFINITY if value >= 2**63 else value


def lookup(prepared: PreparedProcess) -> str:
    """Find the program to run the way execvp does, in the current root.

    Raises CommandNotFound (127) or CannotExecute (126) with Docker's wording.
    """
    name = prepared.args[0]
    if "/" in name:
        candidates = [name if name.startswith("/") else os.path.join(prepared.cwd, name)]
    else:
        path = next((e[5:] for e in prepared.env if e.startswith("PATH=")), _DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    denied = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
        denied = candidate
    if denied is not None:
        raise CannotExecute(f'exec: "{name}": permission denied')
    if "/" in name:
        raise CommandNotFound(f'exec: "{name}": stat {name}: no such file or directory')
    raise CommandNotFound(f'exec: "{name}": executable file not found in $PATH')


def set_limits(prepared: PreparedProcess) -> None:
    """rlimits and the OOM score, while the process still has every capability."""
    for number, soft, hard in prepared.rlimits:
        resource.setrlimit(number, (soft, hard))
    if prepared.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(prepared.oom_score_adj))


def become_user(prepared: PreparedProcess) -> None:
    """Change to the process's user and groups, and set its capabilities and seccomp.

    Order matters: without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it
    happens before the capabilities are dropped; with it, as late as possible so that
    the filter constrains nothing of the runtime's own work (runc does the same).
    """
    if prepared.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    elif prepared.seccomp_bpf is not None:
        seccomp.load_filter(prepared.seccomp_bpf, prepared.seccomp_flags)
    os.setgroups(prepared.additional_gids)
    os.setresgid(prepared.gid, prepared.gid, prepared.gid)
    if prepared.caps is not None:
        capabilities.keep_caps(True)
    os.setresuid(prepared.uid, prepared.uid, prepared.uid)
    if prepared.caps is not None:
        capabilities.keep_caps(False)
        c = prepared.caps
        capabilities.apply(c.bounding, c.effective, c.permitted, c.inheritable, c.ambient)
    if prepared.umask is not None:
        os.umask(prepared.umask)
    os.chdir(prepared.cwd)
    # A directory fd inherited from the host would let chdir land outside the root
    # (CVE-2024-21626): the kernel then names the cwd "(unreachable)".
    if os.getcwd().startswith("(unreachable)"):
        raise InvalidArgument(f"process.cwd {prepared.cwd!r} is outside the container")


def execute(prepared: PreparedProcess, path: str) -> None:
    """Load a late seccomp filter and exec; only returns by raising."""
    if prepared.no_new_privileges and prepared.seccomp_bpf is not None:
        seccomp.load_filter(prepared.seccomp_bpf, prepared.seccomp_flags)
    os.execve(path, prepared.args, dict(_split(e) for e in prepared.env))


def _split(entry: str) -> tuple[str, str]:
    key, _, value = entry.partition("=")
    return key, value
