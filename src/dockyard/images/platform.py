"""Platforms: parse, normalise and match them, and pick an index's manifest, as containerd does.

A platform is written ``os/arch[/variant]`` (``linux/amd64``, ``linux/arm64/v8``,
``linux/arm/v7``). Every comparison is between normalised platforms, where the many
spellings of one machine become one: ``x86_64`` is ``amd64``, ``aarch64`` is ``arm64``
with variant ``v8`` when none is given, ``armhf`` is ``arm/v7``, a bare ``arm`` is
``arm/v7``, ``armel`` is ``arm/v6``, ``i386`` is ``386``, and ``amd64/v1`` is plain
``amd64``.

A wanted platform also accepts, in order of preference, what its machine can run:
``amd64/v3`` takes ``amd64/v2``, ``amd64`` and then ``386``; ``arm/v7`` takes ``arm/v6``
then ``arm/v5``; ``arm64/v8.2`` takes ``arm64/v8.1``, ``arm64/v8`` and then the 32-bit
``arm/v8`` down to ``arm/v5``. ``select`` returns the entry that comes first in that
order, the first one in the index among equals.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from dockyard.errors import InvalidArgument, NotFound
from dockyard.oci.image import Descriptor, Platform

__all__ = [
    "format_platform",
    "host_platform",
    "matches",
    "normalize",
    "parse_platform",
    "select",
]

# What `uname -m` says, for machines whose name is not their architecture.
_MACHINES: dict[str, tuple[str, str | None]] = {
    "i486": ("386", None),
    "i586": ("386", None),
    "i686": ("386", None),
    "armv5l": ("arm", "v5"),
    "armv5tel": ("arm", "v5"),
    "armv5tejl": ("arm", "v5"),
    "armv6l": ("arm", "v6"),
    "armv7l": ("arm", "v7"),
    "armv8l": ("arm", "v8"),  # a 32-bit userland on a 64-bit ARM kernel
    "loongarch64": ("loong64", None),
}
# The operating systems and architectures Go knows: a single-word platform is an OS if
# it is one of the first, otherwise it must be one of the second.
_KNOWN_OS = frozenset({
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
    "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
})  # fmt: skip
_KNOWN_ARCH = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
    "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
})  # fmt: skip
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
_ARM64_VARIANT = re.compile(r"v(8|9)(?:\.([0-9]))?", re.ASCII)


def _normalize_arch(arch: str, variant: str | None) -> tuple[str, str | None]:
    arch, variant = arch.lower(), (variant or "").lower()
    if arch == "i386":
        return "386", None
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", None if variant in ("", "v1") else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("", "8", "v8", "v8.0"):
            return "arm64", "v8"
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        return "arm", f"v{variant}" if variant in ("5", "6", "8") else variant
    return arch, variant or None


def normalize(platform: Platform) -> Platform:
    """``platform`` in canonical form: lower-case OS (``macos`` is ``darwin``) and the
    architecture and variant spelled as in the module's description."""
    os_name = platform.os.lower()
    arch, variant = _normalize_arch(platform.architecture, platform.variant)
    return Platform(
        architecture=arch,
        os="darwin" if os_name == "macos" else os_name,
        os_version=platform.os_version,
        os_features=platform.os_features,
        variant=variant,
        features=platform.features,
    )


def parse_platform(text: str) -> Platform:
    """Parse ``os/arch[/variant]``, a bare OS (the host's architecture) or a bare
    architecture (the host's OS), normalised; ``InvalidArgument`` otherwise."""
    parts = text.split("/")
    if len(parts) > 3 or not all(_COMPONENT.fullmatch(part) for part in parts):
        raise InvalidArgument(
            f"invalid platform {text!r}: expected os/arch[/variant], such as linux/amd64"
        )
    if len(parts) == 1:
        word = parts[0].lower()
        host = host_platform()
        if word in _KNOWN_OS:
            return Platform(architecture=host.architecture, os=word, variant=host.variant)
        arch, variant = _normalize_arch(word, None)
        if arch not in _KNOWN_ARCH:
            raise InvalidArgument(
                f"invalid platform {text!r}: unknown operating system or architecture"
            )
        return Platform(architecture=arch, os=host.os, variant=variant)
    variant = parts[2] if len(parts) == 3 else None
    return normalize(Platform(architecture=parts[1], os=parts[0], variant=variant))


def format_platform(platform: Platform) -> str:
    """``os/arch[/variant]``, as Docker prints a platform."""
    fields = (platform.os, platform.architecture, platform.variant)
    return "/".join(field for field in fields if field)


def host_platform() -> Platform:
    """The platform of this machine, from uname(2), normalised."""
    uname = os.uname()
    machine = uname.machine.lower()
    arch, variant = _MACHINES.get(machine, (machine, None))
    return normalize(Platform(architecture=arch, os=uname.sysname, variant=variant))


def _level(variant: str | None) -> int | None:
    """The number of a ``vN`` variant, or ``None`` when it is not one."""
    digits = variant[1:] if variant and variant.startswith("v") else ""
    return int(digits) if digits.isdigit() else None


def _accepted(want: Platform) -> list[tuple[str, str, str | None]]:
    """The (os, arch, variant) a normalised ``want`` accepts, best first."""
    os_name, arch, variant = want.os, want.architecture, want.variant
    level = _level(variant)
    accepted = [(os_name, arch, variant)]
    if arch == "amd64":
        # Normalised amd64 has no "v1": the baseline is the bare architecture.
        if level is not None:
            accepted += [(os_name, arch, f"v{n}") for n in range(level - 1, 1, -1)]
            accepted.append((os_name, arch, None))
        accepted.append((os_name, "386", None))
    elif arch == "arm" and level is not None:
        accepted += [(os_name, arch, f"v{n}") for n in range(level - 1, 4, -1)]
    elif arch == "arm64" and (version := _ARM64_VARIANT.fullmatch(variant or "")):
        major, minor = int(version[1]), int(version[2] or 0)
        # A v9.x core implements v8.(x+5), as the Arm architecture defines it.
        levels = [(9, minor), (8, min(minor + 5, 9))] if major == 9 else [(8, minor)]
        accepted = [
            (os_name, arch, f"v{major_}.{minor_}" if minor_ else f"v{major_}")
            for major_, top in levels
            for minor_ in range(top, -1, -1)
        ]
        # Any 64-bit Arm runs 32-bit Arm code up to v8.
        accepted += _accepted(Platform(architecture="arm", os=os_name, variant="v8"))
    return accepted


def matches(want: Platform, candidate: Platform) -> bool:
    """Whether an image built for ``candidate`` runs where ``want`` is asked for."""
    got = normalize(candidate)
    return (got.os, got.architecture, got.variant) in _accepted(normalize(want))


def select(manifests: Sequence[Descriptor], want: Platform) -> Descriptor:
    """The entry of an index's ``manifests`` that suits ``want`` best.

    An entry without a platform (common in an image layout's ``index.json``) is taken
    only when no entry matches, as containerd does: the caller must then check the
    platform in that image's config. ``NotFound`` when nothing suits.
    """
    wanted = normalize(want)
    accepted = _accepted(wanted)
    best: tuple[int, Descriptor] | None = None
    fallback: Descriptor | None = None
    for descriptor in manifests:
        if descriptor.platform is None:
            fallback = fallback or descriptor
            continue
        got = normalize(descriptor.platform)
        key = (got.os, got.architecture, got.variant)
        if key in accepted and (best is None or accepted.index(key) < best[0]):
            best = (accepted.index(key), descriptor)
    if best is not None:
        return best[1]
    if fallback is not None:
        return fallback
    raise NotFound(
        f"no matching manifest for {format_platform(wanted)} in the manifest list entries"
    )
