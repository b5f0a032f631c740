"""``docker import``: a rootfs tarball becomes a one-layer image in the content store.

The tarball may be plain, gzip or zstd (told by its magic bytes, as Docker does). It is
streamed once: hashed uncompressed for the layer's DiffID and gzip-compressed into the
store as an ``application/vnd.oci.image.layer.v1.tar+gzip`` blob. ``--change`` lines
are a subset of Dockerfile instructions applied to the new image's config, parsed
the way Docker parses them (exec form as JSON, shell form run by ``/bin/sh -c``).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import tarfile
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import BinaryIO

import msgspec

from dockyard.errors import InvalidArgument
from dockyard.images.building import image_config, store_image
from dockyard.oci.image import (
    OCI_LAYER_GZIP,
    ContainerConfig,
    Descriptor,
    Digest,
    History,
    Platform,
)
from dockyard.storage.content import ContentStore
from dockyard.storage.streams import HashingReader, decompressed

__all__ = ["apply_changes", "import_rootfs"]

_CHUNK = 1 << 20
_TAR_BLOCK = 512
_PROTOCOLS = ("tcp", "udp", "sctp")


# --- --change lines ---------------------------------------------------------------------


def _json_strings(args: str) -> list[str] | None:
    """``args`` as a JSON array of strings, or None when it is not one."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _exec_or_shell(args: str) -> list[str]:
    """The exec form (a JSON array of strings) or, like Docker when that does not parse,
    the shell form run by ``/bin/sh -c``."""
    words = _json_strings(args)
    return words if words is not None else ["/bin/sh", "-c", args]


def _pairs(args: str, instruction: str) -> list[tuple[str, str]]:
    """``KEY=VALUE ...`` with shell quoting, or the legacy ``KEY VALUE`` (one pair)."""
    first = args.split(None, 1)
    if "=" not in first[0]:
        if len(first) < 2:
            raise InvalidArgument(f"{instruction} {args!r} needs a value: write "
                                  f"{instruction} KEY=VALUE")
        return [(first[0], first[1].strip())]
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise InvalidArgument(f"{instruction} {args!r}: {exc}") from None
    pairs = []
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise InvalidArgument(f"{instruction} {args!r}: {word!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _ports(args: str) -> dict[str, dict[str, object]]:
    ports: dict[str, dict[str, object]] = {}
    for word in args.split():
        port, _, protocol = word.partition("/")
        protocol = protocol.lower() or "tcp"
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", port)
        if protocol not in _PROTOCOLS or match is None:
            raise InvalidArgument(f"EXPOSE {word!r}: expected PORT[-PORT][/tcp|udp|sctp]")
        low, high = int(match[1]), int(match[2] or match[1])
        if not 0 < low <= high <= 65535:
            raise InvalidArgument(f"EXPOSE {word!r}: ports are 1 to 65535")
        for number in range(low, high + 1):
            ports[f"{number}/{protocol}"] = {}
    return ports


def _set_env(config: ContainerConfig, args: str) -> None:
    env = list(config.env or [])
    for key, value in _pairs(args, "ENV"):
        # A later ENV of the same name replaces the earlier one, as in a Dockerfile.
        env = [item for item in env if item.partition("=")[0] != key]
        env.append(f"{key}={value}")
    config.env = env


def _set_labels(config: ContainerConfig, args: str) -> None:
    config.labels = {**(config.labels or {}), **dict(_pairs(args, "LABEL"))}


def _set_volumes(config: ContainerConfig, args: str) -> None:
    words = _json_strings(args)
    paths = words if words is not None else args.split()
    config.volumes = {**(config.volumes or {}), **{path: {} for path in paths}}


def _set_workdir(config: ContainerConfig, args: str) -> None:
    # A relative WORKDIR is relative to the one before, as in a Dockerfile.
    config.working_dir = posixpath.normpath(posixpath.join("/", config.working_dir or "/",
                                                           args))


def _one_word(instruction: str, args: str) -> str:
    if len(args.split()) != 1:
        raise InvalidArgument(f"{instruction} takes exactly one argument, got {args!r}")
    return args


_CHANGES: dict[str, Callable[[ContainerConfig, str], None]] = {
    "CMD": lambda c, a: setattr(c, "cmd", _exec_or_shell(a)),
    "ENTRYPOINT": lambda c, a: setattr(c, "entrypoint", _exec_or_shell(a)),
    "ENV": _set_env,
    "EXPOSE": lambda c, a: setattr(c, "exposed_ports", {**(c.exposed_ports or {}),
                                                        **_ports(a)}),
    "LABEL": _set_labels,
    "STOPSIGNAL": lambda c, a: setattr(c, "stop_signal", _one_word("STOPSIGNAL", a)),
    "USER": lambda c, a: setattr(c, "user", _one_word("USER", a)),
    "VOLUME": _set_volumes,
    "WORKDIR": _set_workdir,
}


def apply_changes(config: ContainerConfig | None, changes: Sequence[str]) -> ContainerConfig:
    """A copy of ``config`` with Dockerfile-style ``changes`` applied, in order.

    Each change is ``INSTRUCTION arguments`` with one of CMD, ENTRYPOINT, ENV, EXPOSE,
    LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR; anything else is ``InvalidArgument``.
    """
    result = msgspec.structs.replace(config) if config else ContainerConfig()
    for change in changes:
        instruction, _, args = change.strip().partition(" ")
        args = args.strip()
        apply = _CHANGES.get(instruction.upper())
        if apply is None:
            raise InvalidArgument(
                f"invalid change {change!r}: {instruction or 'an empty line'} is not supported; "
                f"use one of {', '.join(_CHANGES)}"
            )
        if not args:
            raise InvalidArgument(f"invalid change {change!r}: {instruction} needs an argument")
        try:
            apply(result, args)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid change {change!r}: {exc}") from None
    return result


# --- import -----------------------------------------------------------------------------


def _check_tar_head(block: bytes) -> None:
    """Refuse input that is not a tar before storing it: Docker fails the same way."""
    if len(block) < _TAR_BLOCK:
        if block.strip(b"\0"):
            raise InvalidArgument("invalid rootfs tarball: it is shorter than one tar header")
        return  # an empty input is an empty layer, as Docker takes it
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.EOFHeaderError:
        return  # an empty archive: just its end-of-archive zero blocks
    except tarfile.HeaderError as exc:
        raise InvalidArgument(f"invalid rootfs tarball: not a tar archive ({exc})") from None


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer only at the end: a decompressor may return short reads."""
    data = b""
    while len(data) < size and (chunk := stream.read(size - len(data))):
        data += chunk
    return data


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_rootfs(store: ContentStore, stream: BinaryIO, *, changes: Sequence[str] = (),
                  platform: Platform | None = None,
                  message: str | None = None) -> tuple[Descriptor, Digest]:
    """``docker import``: store ``stream`` (a rootfs tar, plain, gzip or zstd) as a
    one-layer OCI image; return its manifest descriptor and config digest.

    ``changes`` are applied to the config (see ``apply_changes``); ``platform`` defaults
    to this machine's; ``message`` is the history comment (Docker's "Imported from -").
    """
    # Checked before any I/O, so a bad change stores nothing.
    container_config = apply_changes(None, changes)
    if platform is None:
        from dockyard.images.platform import host_platform

        platform = host_platform()
    tar = HashingReader(decompressed(stream))  # hashes the plain tar: the DiffID
    # wbits=31: a gzip member with a zero mtime and no name, so one tar gives one blob.
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 31)
    try:
        with store.writer() as writer:
            chunk = _read_full(tar, _TAR_BLOCK)
            _check_tar_head(chunk)
            while chunk:
                writer.write(compressor.compress(chunk))
                chunk = tar.read(_CHUNK)
            writer.write(compressor.flush())
            layer = Descriptor(media_type=OCI_LAYER_GZIP, size=writer.offset,
                               digest=writer.commit())
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidArgument(f"invalid rootfs tarball: cannot decompress it ({exc})") from None
    except tarfile.TarError as exc:
        raise InvalidArgument(f"invalid rootfs tarball: {exc}") from None
    created = _now()
    config = image_config(platform, created, container_config, [tar.digest],
                          [History(created=created, comment=message or "Imported from -")])
    return store_image(store, config, [layer])
