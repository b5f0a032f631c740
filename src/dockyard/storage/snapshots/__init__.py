"""Snapshotters: containerd's model of filesystem snapshots, behind one interface.

A snapshot is a directory tree known by a key the caller chooses. There are three kinds:

    active      made by ``prepare(key, parent)``: writable; its ``mounts()`` show the
                parent's files with this snapshot's changes over them
    view        made by ``view(key, parent)``: the parent, read-only
    committed   made by ``commit(name, key)`` from an active snapshot: immutable, can be
                the parent of others, has no mounts of its own

On-disk layout (version 1) under a snapshotter's root::

    metadata.json          {"version": 1, "next_id": N, "snapshots": {key: {"id": n,
                           "kind": ..., "parent": name | null, "created": unix time}}}
                           replaced atomically (tmp file, fsync, rename)
    lock                   flock'd for the length of every change
    snapshots/<id>/        one per snapshot; numeric ids keep overlay mount options short
    snapshots/staging-<pid>-<random>/
                           a tree being filled by process <pid> for ``adopt`` (a driver
                           whose snapshots hold only their own changes: overlay)

A crash between making a snapshot's directory and recording it leaves a directory that no
key names; ``cleanup()`` (and the next snapshot that would get the same id) removes it,
and the staging directories of processes that are gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from dockyard.errors import Conflict, InvalidArgument, NotFound, Unavailable
from dockyard.linux import syscalls as sc
from dockyard.storage.durable import pid_alive, replace_file

_FORMAT_VERSION = 1
# mount(2) copies its data argument into one page: longer options are cut (EINVAL).
_PAGE_SIZE = os.sysconf("SC_PAGESIZE")
_FLAG_OPTIONS = {"ro": sc.MS_RDONLY, "rw": 0, "bind": sc.MS_BIND,
                 "rbind": sc.MS_BIND | sc.MS_REC}
_PATH_OPTIONS = ("lowerdir=", "upperdir=", "workdir=")
_STAGING_PREFIX = "staging-"


class Kind(StrEnum):
    """What a snapshot is."""

    ACTIVE = "active"
    VIEW = "view"
    COMMITTED = "committed"


@dataclass(frozen=True)
class Info:
    """A snapshot's record."""

    name: str
    kind: Kind
    parent: str | None
    created: float


@dataclass(frozen=True)
class Usage:
    """The disk space and inodes of a snapshot's own files (not its parents')."""

    size: int
    inodes: int


@dataclass(frozen=True)
class Mount:
    """One mount that makes a snapshot visible, as containerd describes it."""

    type: str
    source: str
    options: tuple[str, ...] = ()

    def mount(self, target: str) -> None:
        """Mount it on ``target``."""
        flags = 0
        data: list[str] = []
        for option in self.options:
            if option in _FLAG_OPTIONS:
                flags |= _FLAG_OPTIONS[option]
            else:
                data.append(option)
        if flags & sc.MS_BIND:
            sc.mount(self.source, target, None, flags & (sc.MS_BIND | sc.MS_REC))
            if flags & sc.MS_RDONLY:
                # A bind mount takes its flags only through a remount.
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
            return
        joined = ",".join(data)
        if len(joined) < _PAGE_SIZE:
            sc.mount(self.source, target, self.type, flags, joined)
        else:
            _mount_relative(self.source, target, self.type, flags, data)


def _mount_relative(source: str, target: str, fstype: str, flags: int,
                    data: list[str]) -> None:
    """Mount with the directory options made relative to their common directory.

    overlayfs resolves lowerdir/upperdir/workdir against the mounting process's working
    directory, so a child process chdirs there and mounts: a stack of 120 layers then
    costs "12/fs:11/fs:..." rather than 120 absolute paths, which would not fit in the
    page that mount(2) takes. A forked child keeps our working directory (shared by
    every thread of this process) out of it; it shares our mount namespace, so the
    mount is ours.
    """
    paths = [p for o in data if o.startswith(_PATH_OPTIONS)
             for p in o.split("=", 1)[1].split(":")]
    common = os.path.commonpath(paths)
    relative = []
    for option in data:
        if option.startswith(_PATH_OPTIONS):
            key, value = option.split("=", 1)
            option = key + "=" + ":".join(os.path.relpath(p, common)
                                          for p in value.split(":"))
        relative.append(option)
    joined = ",".join(relative)
    if len(joined) >= _PAGE_SIZE:
        raise InvalidArgument(f"{fstype} mount on {target}: {len(paths)} layers are too many "
                              "for one mount; squash the image")
    target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe work, then _exit
        code = 0
        try:
            os.chdir(common)
            sc.mount(source, target, fstype, flags, joined)
        except OSError as e:
            code = e.errno or 1
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise OSError(code, f"mount: {os.strerror(code) if code < 255 else 'failed'}", target)


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Mount a snapshot's mounts on ``target``, in order."""
    for one in mounts:
        one.mount(target)


def unmount(target: str) -> None:
    """Unmount ``target``; a busy mount is detached (and goes once no one uses it)."""
    try:
        sc.umount2(target, 0)
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        sc.umount2(target, sc.MNT_DETACH)


def disk_usage(path: str) -> Usage:
    """The blocks and inodes under ``path``, each hard-linked inode counted once."""
    seen: set[int] = set()
    size = 0
    for _, dirs, files, dir_fd in os.fwalk(path):
        for name in dirs + files:
            st = os.lstat(name, dir_fd=dir_fd)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                size += st.st_blocks * 512
    return Usage(size, len(seen))


class Snapshotter(ABC):
    """A store of snapshots under ``root``; the drivers say how a snapshot's files are
    kept and mounted."""

    driver: str
    #: Whether a committed snapshot's directory holds only its own changes (overlayfs's
    #: upperdir form, whiteouts included) rather than the whole tree: then a layer can be
    #: unpacked before its parent exists, into ``stage()``, and ``adopt``ed.
    stores_diffs: ClassVar[bool] = False

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(os.path.join(self.root, "snapshots"), exist_ok=True)
        self._metadata = os.path.join(self.root, "metadata.json")

    # --- what a driver implements -----------------------------------------------------

    @abstractmethod
    def _populate(self, directory: str, kind: Kind, parents: list[str]) -> None:
        """Fill the new snapshot's (empty) ``directory``; ``parents`` are the directories
        of the parent chain, nearest first."""

    @abstractmethod
    def _mounts(self, directory: str, kind: Kind, parents: list[str]) -> list[Mount]:
        """The mounts of an active snapshot or a view."""

    # --- the interface ------------------------------------------------------------------

    def prepare(self, key: str, parent: str | None = None) -> list[Mount]:
        """Make the active (writable) snapshot ``key`` over the committed ``parent``."""
        return self._create(key, parent, Kind.ACTIVE)

    def view(self, key: str, parent: str | None = None) -> list[Mount]:
        """Make the read-only snapshot ``key`` of the committed ``parent``."""
        return self._create(key, parent, Kind.VIEW)

    def commit(self, name: str, key: str) -> None:
        """Freeze the active snapshot ``key`` as the committed ``name``; ``key`` is gone."""
        with self._locked() as meta:
            record = self._record(meta, key)
            if record["kind"] != Kind.ACTIVE.value:
                raise Conflict(f"snapshot {key!r} is a {record['kind']} snapshot: only an "
                               "active one can be committed")
            if name in meta["snapshots"]:
                raise Conflict(f"snapshot {name!r} exists already")
            del meta["snapshots"][key]
            meta["snapshots"][name] = {**record, "kind": Kind.COMMITTED.value}
            self._save(meta)

    def stage(self) -> str:
        """A new empty directory to fill with a snapshot's own files, then ``adopt``: in
        the snapshotter's root, so adopting it is a rename, and named after this process,
        so that ``cleanup()`` removes it once the process is gone (kill -9 included). The
        caller removes it if it does not adopt it."""
        path = os.path.join(self.root, "snapshots",
                            f"{_STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        os.mkdir(path, 0o755)  # the mode ``_populate`` gives a snapshot's own tree
        return path

    def adopt(self, name: str, parent: str | None, directory: str) -> None:
        """Make ``directory`` (from ``stage()``, holding the snapshot's own files) the
        committed snapshot ``name`` over the committed ``parent``. The directory is moved
        into place, not copied; only a driver that ``stores_diffs`` takes one."""
        if not self.stores_diffs:
            raise Unavailable(f"the {self.driver} snapshotter keeps whole trees: prepare a "
                              "snapshot over the parent and commit it instead")
        staging = os.path.join(self.root, "snapshots")
        if (os.path.dirname(os.path.abspath(directory)) != staging
                or not os.path.basename(directory).startswith(_STAGING_PREFIX)):
            raise InvalidArgument(f"{directory} was not made by stage() of {self.root}")
        with self._locked() as meta:
            record, snapshot = self._new(meta, name, parent, Kind.COMMITTED)
            os.rename(directory, os.path.join(snapshot, "fs"))
            meta["snapshots"][name] = record
            self._save(meta)

    def layers(self, key: str) -> list[str]:
        """The directories whose files, topmost first, make the committed snapshot
        ``key``: those of its chain where a snapshot holds only its own changes
        (``stores_diffs``), else its own whole tree. Read them; never write."""
        meta = self._load()
        record = self._record(meta, key)
        if record["kind"] != Kind.COMMITTED.value:
            raise Conflict(f"snapshot {key!r} is a {record['kind']} snapshot: only a "
                           "committed one has layers")
        chain = self._chain(meta, key) if self.stores_diffs else [self._dir(record)]
        return [os.path.join(d, "fs") for d in chain]

    def mounts(self, key: str) -> list[Mount]:
        """The mounts that show the active snapshot or view ``key``."""
        meta = self._load()
        record = self._record(meta, key)
        if record["kind"] == Kind.COMMITTED.value:
            raise Conflict(f"snapshot {key!r} is committed: prepare or view a snapshot "
                           "over it to mount it")
        return self._mounts(self._dir(record), Kind(record["kind"]),
                            self._chain(meta, record["parent"]))

    def remove(self, key: str) -> None:
        """Delete the snapshot ``key``; refused while another snapshot has it as parent."""
        with self._locked() as meta:
            record = self._record(meta, key)
            children = sorted(k for k, r in meta["snapshots"].items() if r["parent"] == key)
            if children:
                raise Conflict(f"snapshot {key!r} is the parent of {', '.join(children)}: "
                               "remove those first")
            del meta["snapshots"][key]
            self._save(meta)
            shutil.rmtree(self._dir(record), ignore_errors=True)

    def stat(self, key: str) -> Info:
        """The record of ``key``."""
        return self._info(key, self._record(self._load(), key))

    def walk(self) -> Iterator[Info]:
        """Every snapshot, by key."""
        for key, record in sorted(self._load()["snapshots"].items()):
            yield self._info(key, record)

    def usage(self, key: str) -> Usage:
        """The disk use of the snapshot's own directory."""
        return disk_usage(self._dir(self._record(self._load(), key)))

    def cleanup(self) -> list[str]:
        """Remove snapshot directories that no key names and staging directories whose
        process is gone (left by a crash); return them."""
        with self._locked() as meta:
            known = {str(r["id"]) for r in meta["snapshots"].values()}
            base = os.path.join(self.root, "snapshots")
            stale = sorted(name for name in set(os.listdir(base)) - known
                           if not _staged_by_live_process(name))
            for name in stale:
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        return stale

    # --- the metadata ---------------------------------------------------------------------

    def _new(self, meta: dict[str, Any], key: str, parent: str | None,
             kind: Kind) -> tuple[dict[str, Any], str]:
        """The record of a new snapshot (not saved yet) and its fresh, empty directory."""
        if key in meta["snapshots"]:
            raise Conflict(f"snapshot {key!r} exists already")
        if parent is not None:
            parent_record = self._record(meta, parent)
            if parent_record["kind"] != Kind.COMMITTED.value:
                raise InvalidArgument(f"parent {parent!r} is not a committed snapshot: "
                                      "commit it first")
        ident = meta["next_id"]
        meta["next_id"] = ident + 1
        record = {"id": ident, "kind": kind.value, "parent": parent, "created": time.time()}
        directory = self._dir(record)
        # A directory by this id can only be the leftover of a crash before saving.
        shutil.rmtree(directory, ignore_errors=True)
        os.mkdir(directory, 0o700)
        return record, directory

    def _create(self, key: str, parent: str | None, kind: Kind) -> list[Mount]:
        with self._locked() as meta:
            record, directory = self._new(meta, key, parent, kind)
            chain = self._chain(meta, parent)
            try:
                self._populate(directory, kind, chain)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            meta["snapshots"][key] = record
            self._save(meta)
            return self._mounts(directory, kind, chain)

    def _dir(self, record: dict[str, Any]) -> str:
        return os.path.join(self.root, "snapshots", str(record["id"]))

    def _chain(self, meta: dict[str, Any], parent: str | None) -> list[str]:
        chain = []
        while parent is not None:
            record = meta["snapshots"][parent]
            chain.append(self._dir(record))
            parent = record["parent"]
        return chain

    @staticmethod
    def _record(meta: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            record: dict[str, Any] = meta["snapshots"][key]
        except KeyError:
            raise NotFound(f"snapshot {key!r} not found") from None
        return record

    @staticmethod
    def _info(key: str, record: dict[str, Any]) -> Info:
        return Info(key, Kind(record["kind"]), record["parent"], record["created"])

    def _load(self) -> dict[str, Any]:
        try:
            with open(self._metadata, "rb") as f:
                meta: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            return {"version": _FORMAT_VERSION, "next_id": 1, "snapshots": {}}
        if meta.get("version") != _FORMAT_VERSION:
            raise Unavailable(f"{self._metadata} has format version {meta.get('version')}, "
                              f"this dockyard reads {_FORMAT_VERSION}: upgrade dockyard")
        return meta

    def _save(self, meta: dict[str, Any]) -> None:
        replace_file(self._metadata, json.dumps(meta, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The metadata, under the snapshotter's lock (between processes and threads: each
        call opens the lock file anew, and flock locks belong to the open file)."""
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._load()
        finally:
            os.close(fd)


def _staged_by_live_process(name: str) -> bool:
    """Whether ``name`` is a staging directory of a process still running."""
    pid = name.removeprefix(_STAGING_PREFIX).partition("-")[0]
    return name.startswith(_STAGING_PREFIX) and pid.isdigit() and pid_alive(int(pid))


DRIVERS = ("overlay", "vfs")


def choose(root: str, driver: str | None = None) -> Snapshotter:
    """The snapshotter for ``root`` (it lives in ``root/<driver>``): ``driver`` if given,
    else the one whose directory is there already, else overlay where the kernel mounts
    it on the root's filesystem, else vfs.

    The kernel is asked (an overlay mounted for a probe, some 80 ms) only the first time:
    after that, the snapshotter's directory under ``root`` records the answer.
    """
    from dockyard.storage.snapshots.overlay import OverlaySnapshotter, overlay_supported
    from dockyard.storage.snapshots.vfs import VfsSnapshotter

    if driver is not None and driver not in DRIVERS:
        raise InvalidArgument(f"unknown storage driver {driver!r}: use one of "
                              f"{', '.join(DRIVERS)}")
    os.makedirs(root, exist_ok=True)
    if driver is None:
        existing = [d for d in DRIVERS if os.path.isdir(os.path.join(root, d))]
        if len(existing) == 1:
            driver = existing[0]
        else:  # none yet, or both (then, as before, the kernel decides)
            driver = "overlay" if overlay_supported(root) else "vfs"
    elif (driver == "overlay" and not os.path.isdir(os.path.join(root, driver))
          and not overlay_supported(root)):
        raise Unavailable(f"the kernel cannot mount overlayfs on {root}'s filesystem: use "
                          "--storage-driver vfs")
    cls = OverlaySnapshotter if driver == "overlay" else VfsSnapshotter
    return cls(os.path.join(root, driver))
