"""Writes that survive a crash: a file is replaced whole or not at all, and a rename is
made durable by an fsync of its directory (ARCHITECTURE.md: "State is durable"); and
telling what a crashed process left from what a running one is still using."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["fsync_dir", "pid_alive", "replace_file"]


def fsync_dir(path: str) -> None:
    """Make the entries of the directory ``path`` durable (after a rename into it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably: a temporary file in the same
    directory is written, fsynced and renamed over it, then the directory is fsynced.

    A reader sees the old content or the new, never a part; a crash leaves at most a
    ``.NAME.*`` temporary file. The file has mode 0600 after (mkstemp's): it may hold a
    secret.
    """
    directory, name = os.path.split(os.fspath(path))
    directory = directory or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def pid_alive(pid: int) -> bool:
    """Whether the process ``pid`` runs: what it named after itself (a lease, a staging
    directory) is still in use. A reused pid keeps leftovers a while longer, no worse."""
    if pid <= 0:
        return False  # kill(0) and kill(-N) would signal process groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
