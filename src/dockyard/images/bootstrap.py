"""Base images made on this machine, with no registry: busybox and Debian.

No public registry is reachable where dockyard is developed and tested, so the base
images are built locally, the way their official counterparts are:

``bootstrap_busybox``
    a root filesystem holding the static ``busybox`` binary as ``/bin/busybox``, one
    relative symlink per applet where ``busybox --list-full`` says it belongs, the
    ``/etc/passwd`` and ``/etc/group`` of the official image and its empty directories;
    ``Cmd ["sh"]``. Every input is fixed by the binary, so the same binary always gives
    the same image ID.
``bootstrap_debian``
    ``debootstrap --variant=minbase SUITE DIR MIRROR`` (the mirror read from the apt
    sources when not given), cleaned like the official images are (apt lists and
    caches, logs, ``*-old`` backups, the machine ID and the host's DNS and hostname);
    ``Cmd ["bash"]``.

Both go through ``image_from_directory``: the directory becomes one deterministic layer
(a PAX tar of sorted entries, no user or group names, mtimes clamped, gzip with a zero
header mtime), then an OCI image config and an OCI manifest, all stored in a
``ContentStore``. Nothing here runs a container; debootstrap runs in a private mount
namespace so that the /proc and /sys it mounts in the target never reach the host.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import glob
import gzip
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dockyard.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SystemFailure,
    Timeout,
    Unavailable,
)
from dockyard.images.building import image_config, store_image
from dockyard.images.platform import host_platform, normalize
from dockyard.oci.image import (
    OCI_LAYER_GZIP,
    ContainerConfig,
    Descriptor,
    Digest,
    History,
    Platform,
)
from dockyard.storage.content import ContentStore
from dockyard.storage.streams import HashingWriter

__all__ = [
    "DEFAULT_PATH",
    "BootstrapResult",
    "apt_mirror",
    "bootstrap_busybox",
    "bootstrap_debian",
    "image_from_directory",
    "write_layer",
]

#: The PATH of the official busybox and Debian images.
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_XATTR_PAX = "SCHILY.xattr."
# overlayfs keeps its own bookkeeping in these; it must never travel in a layer.
_OVERLAY_XATTR = "trusted.overlay."
# Docker and containerd compress layers at Go's default level, which this matches.
_GZIP_LEVEL = 6


@dataclass(frozen=True)
class BootstrapResult:
    """A base image in the content store: its manifest, its ID and the tag it suits."""

    manifest: Descriptor
    config_digest: Digest  # the image ID
    tag: str


# --- directory -> layer -> config -> manifest -----------------------------------------


class _Sink(Protocol):
    """Where a layer is written: a file, or a content store ``Writer``."""

    def write(self, data: bytes, /) -> int:
        """Take all of ``data``."""
        ...


def _tarinfo(path: str, name: str, st: os.stat_result, clamp_mtime: int | None,
             owner: tuple[int, int] | None,
             links: dict[tuple[int, int], str]) -> tarfile.TarInfo | None:
    """The header of one entry, built from ``lstat`` alone: ``gettarinfo`` would look the
    owner up in the host's passwd, which says nothing about the image's users."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = owner if owner is not None else (st.st_uid, st.st_gid)
    info.uname = info.gname = ""
    mtime = int(st.st_mtime)
    info.mtime = min(mtime, clamp_mtime) if clamp_mtime is not None else mtime
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
        else:
            links[key] = name
            info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        # A socket cannot be put in a tar; like Docker's archiver, leave it out.
        return None
    with contextlib.suppress(OSError):  # a filesystem without xattrs has none to keep
        for key in sorted(os.listxattr(path, follow_symlinks=False)):
            if not key.startswith(_OVERLAY_XATTR):
                value = os.getxattr(path, key, follow_symlinks=False)
                # surrogateescape keeps a binary value (security.capability) byte-exact.
                info.pax_headers[_XATTR_PAX + key] = value.decode("utf-8", "surrogateescape")
    return info


def _add_tree(tf: tarfile.TarFile, directory: str, prefix: str, clamp_mtime: int | None,
              owner: tuple[int, int] | None, links: dict[tuple[int, int], str]) -> None:
    # Sorted by name at every level, so the same tree always gives the same bytes.
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        name = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        info = _tarinfo(entry.path, name, st, clamp_mtime, owner, links)
        if info is None:
            continue
        if info.type == tarfile.REGTYPE:
            with open(entry.path, "rb") as data:
                tf.addfile(info, data)
        else:
            tf.addfile(info)
        if info.type == tarfile.DIRTYPE:
            _add_tree(tf, entry.path, name + "/", clamp_mtime, owner, links)


def write_layer(directory: str, out: _Sink, *, clamp_mtime: int | None = None,
                owner: tuple[int, int] | None = None) -> Digest:
    """Write ``directory`` to ``out`` as a gzip-compressed layer tar; return its DiffID.

    The tar is deterministic: PAX format, entries sorted, no user or group names, hard
    links as links to the first name, device nodes, setuid bits and xattrs kept, mtimes
    no later than ``clamp_mtime`` (reproducible builds' SOURCE_DATE_EPOCH) and, when
    ``owner`` is given, every entry owned by that (uid, gid). The gzip header carries
    no name and a zero mtime, so the compressed bytes are as reproducible as the tar.
    """
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                       compresslevel=_GZIP_LEVEL) as compressed:
        sink = HashingWriter(compressed)  # type: ignore[arg-type]
        # Stream mode ("w|") only ever writes, so the sink need not be seekable.
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            _add_tree(tf, directory, "", clamp_mtime, owner, {})
    return Digest(sink.digest)


def _rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_from_directory(store: ContentStore, directory: str, config: ContainerConfig,
                         history_text: str, *, created: int | None = None,
                         owner: tuple[int, int] | None = None,
                         extra_history: Sequence[str] = (),
                         platform: Platform | None = None) -> tuple[Descriptor, Digest]:
    """Store ``directory`` as a one-layer OCI image; return its manifest's descriptor and
    its config digest (the image ID).

    ``created`` (seconds since the epoch) is the image's creation time and clamps the
    layer's mtimes, which makes the image reproducible; without it, now is used.
    ``history_text`` describes the layer; each of ``extra_history`` (such as
    ``CMD ["sh"]``) becomes an empty-layer history entry after it. ``owner`` forces
    the owner of every entry (see ``write_layer``). ``platform`` defaults to the host's.
    """
    if not os.path.isdir(directory):
        raise NotFound(f"cannot make an image of {directory}: it is not a directory")
    epoch = int(datetime.datetime.now(datetime.UTC).timestamp()) if created is None else created
    with store.writer() as writer:
        diff_id = write_layer(directory, writer, clamp_mtime=epoch, owner=owner)
        layer = Descriptor(media_type=OCI_LAYER_GZIP, size=writer.offset,
                           digest=writer.commit())
    when = _rfc3339(epoch)
    target = platform or host_platform()
    history = [History(created=when, created_by=history_text)] + [
        History(created=when, created_by=text, empty_layer=True) for text in extra_history]
    image = image_config(target, when, config, [diff_id], history)
    return store_image(store, image, [layer], platform=target)


# --- busybox ---------------------------------------------------------------------------

# The users and groups of the official busybox image (buildroot's skeleton).
_BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
_BUSYBOX_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""
# Directory modes are set explicitly: mkdir's result depends on the caller's umask.
_BUSYBOX_DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555,
    "root": 0o700, "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755,
    "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755, "var/spool": 0o755,
    "var/spool/mail": 0o755, "var/www": 0o755,
}  # fmt: skip


def _run_busybox(busybox: str, *args: str) -> str:
    try:
        result = subprocess.run([busybox, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NotFound(f"{busybox} not found: install busybox-static or pass busybox=PATH"
                       ) from None
    except PermissionError:
        raise PermissionDenied(f"{busybox} is not executable: pass the path of a static "
                               "busybox binary") from None
    if result.returncode != 0:
        raise InvalidArgument(f"{busybox} {' '.join(args)} failed (exit {result.returncode}): "
                              "pass a busybox built with --list-full support")
    return result.stdout


def _populate_busybox(root: str, busybox: str) -> int:
    """Lay out the busybox tree in ``root``; return the number of applet links."""
    for rel, mode in _BUSYBOX_DIRS.items():
        path = os.path.join(root, rel)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
    binary = os.path.join(root, "bin", "busybox")
    shutil.copyfile(busybox, binary)
    os.chmod(binary, 0o755)
    for name, text in (("passwd", _BUSYBOX_PASSWD), ("group", _BUSYBOX_GROUP)):
        path = os.path.join(root, "etc", name)
        with open(path, "w", encoding="ascii") as file:
            file.write(text)
        os.chmod(path, 0o644)
    links = 0
    for applet in sorted(set(_run_busybox(busybox, "--list-full").split())):
        parts = applet.split("/")
        if applet == "bin/busybox" or not all(part not in ("", ".", "..") for part in parts):
            continue  # never write outside the tree, whatever the binary prints
        parent = root
        for part in parts[:-1]:  # one level at a time, each with a fixed mode
            parent = os.path.join(parent, part)
            if not os.path.isdir(parent):
                os.mkdir(parent)
                os.chmod(parent, 0o755)
        # Relative, so the tree also resolves when looked at from outside a chroot.
        os.symlink("../" * (len(parts) - 1) + "bin/busybox", os.path.join(parent, parts[-1]))
        links += 1
    return links


def bootstrap_busybox(store: ContentStore, *, busybox: str = "/usr/bin/busybox"
                      ) -> BootstrapResult:
    """Build the ``busybox:latest`` image from a static busybox binary.

    The image's ``created`` is the binary's mtime and every layer input derives from the
    binary, so the same binary always gives the same image ID.
    """
    try:
        st = os.stat(busybox)
    except FileNotFoundError:
        raise NotFound(f"{busybox} not found: install busybox-static or pass busybox=PATH"
                       ) from None
    version = _run_busybox(busybox).splitlines()[0].strip().removesuffix(" multi-call binary.")
    with open(busybox, "rb") as file:
        binary_digest = hashlib.file_digest(file, "sha256").hexdigest()
    with tempfile.TemporaryDirectory(prefix="dockyard-busybox-") as tmp:
        root = os.path.join(tmp, "rootfs")
        os.mkdir(root)
        count = _populate_busybox(root, busybox)
        # Every entry gets the binary's mtime: a clamp alone would keep today's times
        # whenever the binary's mtime lies in the future.
        for directory, dirs, files in os.walk(root):
            for name in dirs + files:
                os.utime(os.path.join(directory, name), (st.st_mtime, st.st_mtime),
                         follow_symlinks=False)
        config = ContainerConfig(env=[DEFAULT_PATH], cmd=["sh"])
        history = (f"dockyard bootstrap busybox: /bin/busybox ({version}, sha256:"
                   f"{binary_digest}), {count} applet links, /etc/passwd, /etc/group")
        manifest, config_digest = image_from_directory(
            store, root, config, history, created=int(st.st_mtime), owner=(0, 0),
            extra_history=[f"ENV {DEFAULT_PATH}", 'CMD ["sh"]'],
        )
    return BootstrapResult(manifest, config_digest, "busybox:latest")


# --- Debian ----------------------------------------------------------------------------

# Debian's architecture names, and the OCI platform each is.
_DEBIAN_ARCHES: dict[str, Platform] = {
    name: normalize(Platform(architecture=arch, os="linux", variant=variant))
    for name, arch, variant in (
        ("amd64", "amd64", None), ("arm64", "arm64", "v8"), ("armhf", "arm", "v7"),
        ("armel", "arm", "v5"), ("i386", "386", None), ("ppc64el", "ppc64le", None),
        ("s390x", "s390x", None), ("riscv64", "riscv64", None),
        ("mips64el", "mips64le", None),
    )
}  # fmt: skip


def _host_debian_arch() -> str:
    host = host_platform()
    for name, platform in _DEBIAN_ARCHES.items():
        if (platform.architecture, platform.variant) == (host.architecture, host.variant):
            return name
    raise InvalidArgument(f"no Debian architecture for this machine ({host.architecture}): "
                          "pass arch=")


def _deb822_mirrors(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each ``deb`` stanza of a deb822 ``.sources`` file."""
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if ("deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no"
                and "uris" in fields):
            suites = fields.get("suites", "").split()
            found += [(uri, suites) for uri in fields["uris"].split()]
    return found


def _one_line_mirrors(text: str) -> list[tuple[str, list[str]]]:
    """(URI, [suite]) of each ``deb`` line of a ``sources.list``."""
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            found.append((words[0], [words[1]]))
    return found


def apt_mirror(suite: str, *, sources_dir: str = "/etc/apt") -> str:
    """The mirror this machine's apt uses for ``suite`` (or, failing that, its first
    Debian mirror that is not the security archive)."""
    found: list[tuple[str, list[str]]] = []
    for path in sorted(glob.glob(os.path.join(sources_dir, "sources.list.d", "*.sources"))):
        with open(path, encoding="utf-8") as file:
            found += _deb822_mirrors(file.read())
    for path in [os.path.join(sources_dir, "sources.list"),
                 *sorted(glob.glob(os.path.join(sources_dir, "sources.list.d", "*.list")))]:
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as file:
            found += _one_line_mirrors(file.read())
    for uri, suites in found:
        if suite in suites:
            return uri
    for uri, suites in found:
        if not any(s.endswith("-security") for s in suites):
            return uri
    raise NotFound(f"no Debian mirror in the apt sources under {sources_dir}: pass mirror=URL")


def _log_tail(target: str, output: str, lines: int = 2) -> str:
    """What went wrong, on one line: debootstrap's last error (``E: ...``) and the last
    lines of its log, which hold the cause (``failed: Connection refused.``)."""
    said = [line.strip() for line in output.splitlines() if line.strip()]
    picked = [line for line in said if line.startswith("E:")][-1:] or said[-lines:]
    log = os.path.join(target, "debootstrap", "debootstrap.log")
    with contextlib.suppress(OSError), open(log, encoding="utf-8", errors="replace") as file:
        logged = [line.strip() for line in file if line.strip()]
        picked += [line for line in logged[-lines:] if line not in picked]
    return " | ".join(dict.fromkeys(picked)) or "no output"


def _run_debootstrap(debootstrap: str, suite: str, target: str, mirror: str, variant: str,
                     arch: str, timeout: float) -> None:
    # A private mount namespace: the /proc and /sys that debootstrap mounts inside the
    # target vanish with it, even when it is killed, and never show on the host.
    argv = ["unshare", "--mount", "--propagation", "private", "--", debootstrap,
            f"--variant={variant}", f"--arch={arch}", suite, target, mirror]
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as output:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except BaseException:
            # Timed out or interrupted: take down debootstrap and everything it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        output.seek(0)
        said = output.read()
    if code == 0:
        return
    tail = _log_tail(target, said)
    message = f"debootstrap of {suite} from {mirror} failed (exit {code}): {tail}"
    unreachable = ("Failed getting release file", "Couldn't download", "Failed getting")
    if any(word in said for word in unreachable):
        raise Unavailable(message + "; check that the mirror is reachable")
    raise SystemFailure(message)


# What the official images (debuerreotype) drop: caches, package lists, logs, backups.
_DEBIAN_CLEAN_GLOBS = (
    "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*", "var/lib/apt/lists/*",
    "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/cache/ldconfig/aux-cache",
    "var/log/*",
)  # fmt: skip
# Files whose content describes the build machine: kept, as mount targets, but empty.
_DEBIAN_EMPTIED = ("etc/machine-id", "etc/resolv.conf", "etc/hostname")


def _release_date(target: str) -> int | None:
    """The Date of the suite's Release file: when the mirror's snapshot was made."""
    for path in sorted(glob.glob(os.path.join(target, "var/lib/apt/lists/*_Release"))):
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("Date:"):
                    return int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp())
    return None


def _clean_debian(target: str) -> None:
    for pattern in _DEBIAN_CLEAN_GLOBS:
        for path in glob.glob(os.path.join(target, pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                # The directories stay (apt wants lists/partial, var/log/apt...) but
                # their content goes.
                for child in os.listdir(path):
                    _remove(os.path.join(path, child))
            else:
                os.unlink(path)
    for rel in _DEBIAN_EMPTIED:
        path = os.path.join(target, rel)
        if os.path.isfile(path) and not os.path.islink(path):
            os.truncate(path, 0)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def bootstrap_debian(store: ContentStore, suite: str = "bookworm", *,
                     mirror: str | None = None, variant: str = "minbase",
                     arch: str | None = None, debootstrap: str = "debootstrap",
                     timeout: float = 1800.0) -> BootstrapResult:
    """Build the ``debian:SUITE`` image with debootstrap (root only).

    ``mirror`` defaults to this machine's apt mirror, ``arch`` (a Debian architecture
    name) to the host's: a foreign one would need qemu, and is refused. The image's
    ``created`` is the date of the suite's Release file, which also clamps the mtimes.
    """
    found = shutil.which(debootstrap, path=os.environ.get("PATH", os.defpath)
                         + ":/usr/sbin:/sbin")
    if found is None:
        raise NotFound(f"{debootstrap} not found: install it (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise PermissionDenied("bootstrapping a Debian image needs root: run it as root")
    arch = arch or _host_debian_arch()
    host = _host_debian_arch()
    if arch != host:
        raise InvalidArgument(f"cannot bootstrap {arch} on this {host} machine: only the "
                              "host's architecture is supported")
    mirror = mirror or apt_mirror(suite)
    with tempfile.TemporaryDirectory(prefix="dockyard-debian-") as tmp:
        target = os.path.join(tmp, "rootfs")
        try:
            _run_debootstrap(found, suite, target, mirror, variant, arch, timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"debootstrap of {suite} from {mirror} took longer than "
                          f"{timeout:.0f} s: check the mirror's speed or raise timeout"
                          ) from None
        created = _release_date(target)
        _clean_debian(target)
        config = ContainerConfig(env=[DEFAULT_PATH], cmd=["bash"])
        history = (f"dockyard bootstrap debian: debootstrap --variant={variant} "
                   f"--arch={arch} {suite} {mirror}, then apt lists, caches, logs and "
                   "*-old backups removed, machine-id, resolv.conf and hostname emptied")
        try:
            manifest, config_digest = image_from_directory(
                store, target, config, history, created=created,
                extra_history=[f"ENV {DEFAULT_PATH}", 'CMD ["bash"]'],
                platform=_DEBIAN_ARCHES[arch],
            )
        except OSError as exc:
            raise SystemFailure(f"cannot pack the {suite} tree into a layer: {exc}") from None
    return BootstrapResult(manifest, config_digest, f"debian:{suite}")

