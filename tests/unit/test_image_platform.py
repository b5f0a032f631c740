"""Platforms: parsing, normalisation, matching and manifest selection as containerd does."""

from __future__ import annotations

import hashlib
import os

import pytest

from dockyard.errors import InvalidArgument, NotFound
from dockyard.images import platform as platforms
from dockyard.images.platform import (
    format_platform,
    host_platform,
    matches,
    normalize,
    parse_platform,
    select,
)
from dockyard.oci.image import DOCKER_MANIFEST, OCI_MANIFEST, Descriptor, Platform


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("Linux/AMD64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("linux/arm64/v8.0", "linux/arm64/v8"),
        ("linux/arm64/v9.0", "linux/arm64/v9"),
        ("linux/arm64/v8.2", "linux/arm64/v8.2"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/7", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm/v5", "linux/arm/v5"),
        ("linux/i386", "linux/386"),
        ("linux/ppc64le", "linux/ppc64le"),
        ("linux/s390x", "linux/s390x"),
        ("linux/riscv64", "linux/riscv64"),
        ("macos/arm64", "darwin/arm64/v8"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_parse_and_format(text: str, formatted: str) -> None:
    parsed = parse_platform(text)
    assert format_platform(parsed) == formatted
    assert parse_platform(formatted) == parsed


def test_single_word_platforms_take_the_rest_from_the_host(monkeypatch) -> None:
    monkeypatch.setattr(platforms.os, "uname", lambda: _uname("Linux", "aarch64"))
    assert format_platform(parse_platform("linux")) == "linux/arm64/v8"
    assert format_platform(parse_platform("amd64")) == "linux/amd64"
    assert format_platform(parse_platform("armhf")) == "linux/arm/v7"


@pytest.mark.parametrize(
    "text", ["", "linux/", "/amd64", "a/b/c/d", "linux/*", "linux/am d64", "foo"]
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid platform"):
        parse_platform(text)


def test_normalize_keeps_the_other_members() -> None:
    platform = Platform(
        architecture="x86_64", os="Windows", os_version="10.0.17763.1", os_features=["win32k"]
    )
    assert normalize(platform) == Platform(
        architecture="amd64", os="windows", os_version="10.0.17763.1", os_features=["win32k"]
    )


def _uname(sysname: str, machine: str) -> os.uname_result:
    return os.uname_result((sysname, "host", "6.1.0", "#1 SMP", machine))


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("arm64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("armv5tel", "linux/arm/v5"),
        ("armv8l", "linux/arm/v8"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("riscv64", "linux/riscv64"),
        ("loongarch64", "linux/loong64"),
    ],
)
def test_host_platform(monkeypatch, machine: str, expected: str) -> None:
    monkeypatch.setattr(platforms.os, "uname", lambda: _uname("Linux", machine))
    assert format_platform(host_platform()) == expected


def test_host_platform_of_this_machine() -> None:
    host = host_platform()
    assert host.os == "linux"
    assert matches(host, host)


@pytest.mark.parametrize(
    ("want", "candidate", "result"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/x86_64", True),
        ("linux/amd64", "linux/amd64/v1", True),
        ("linux/amd64", "linux/386", True),
        ("linux/amd64", "linux/amd64/v2", False),  # needs a newer CPU than asked for
        ("linux/amd64/v3", "linux/amd64/v2", True),
        ("linux/amd64/v3", "linux/amd64", True),
        ("linux/amd64/v2", "linux/amd64/v3", False),
        ("linux/386", "linux/amd64", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/amd64", "linux/arm64", False),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/aarch64", "linux/arm64", True),
        ("linux/arm64", "linux/arm/v8", True),
        ("linux/arm64", "linux/arm/v7", True),
        ("linux/arm64", "linux/arm/v5", True),
        ("linux/arm64", "linux/arm64/v8.1", False),
        ("linux/arm64/v8.2", "linux/arm64/v8.1", True),
        ("linux/arm64/v9", "linux/arm64/v8.5", True),
        ("linux/arm64/v9", "linux/arm64/v8.6", False),
        ("linux/arm/v7", "linux/arm", True),
        ("linux/arm/v7", "linux/armhf", True),
        ("linux/arm/v7", "linux/arm/v6", True),
        ("linux/arm/v7", "linux/arm/v5", True),
        ("linux/arm/v7", "linux/arm/v8", False),
        ("linux/arm/v7", "linux/arm64", False),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/arm/v5", "linux/arm/v6", False),
        ("linux/ppc64le", "linux/ppc64le", True),
        ("linux/ppc64le", "linux/ppc64", False),
        ("linux/amd64", "unknown/unknown", False),
    ],
)
def test_matches(want: str, candidate: str, result: bool) -> None:
    # the candidate is given raw, as an index would state it
    os_name, _, rest = candidate.partition("/")
    arch, _, variant = rest.partition("/")
    raw = Platform(architecture=arch, os=os_name, variant=variant or None)
    assert matches(parse_platform(want), raw) is result


def _entry(name: str, platform: str | None, media_type: str = OCI_MANIFEST) -> Descriptor:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    if platform is None:
        return Descriptor(media_type=media_type, digest=digest, size=500)
    os_name, arch, *variant = platform.split("/")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=500,
        platform=Platform(architecture=arch, os=os_name, variant=variant[0] if variant else None),
        annotations={"name": name},
    )


# What `docker manifest inspect` shows for a typical official image, plus the
# attestation manifests BuildKit adds (platform unknown/unknown).
OFFICIAL = [
    _entry("amd64", "linux/amd64", DOCKER_MANIFEST),
    _entry("armv5", "linux/arm/v5", DOCKER_MANIFEST),
    _entry("armv7", "linux/arm/v7", DOCKER_MANIFEST),
    _entry("arm64", "linux/arm64/v8", DOCKER_MANIFEST),
    _entry("i386", "linux/386", DOCKER_MANIFEST),
    _entry("ppc64le", "linux/ppc64le", DOCKER_MANIFEST),
    _entry("s390x", "linux/s390x", DOCKER_MANIFEST),
    _entry("attestation-amd64", "unknown/unknown"),
    _entry("attestation-arm64", "unknown/unknown"),
]


def _chosen(entries: list[Descriptor], want: str) -> str:
    descriptor = select(entries, parse_platform(want))
    return descriptor.annotations["name"] if descriptor.annotations else "<no platform>"


@pytest.mark.parametrize(
    ("want", "name"),
    [
        ("linux/amd64", "amd64"),
        ("linux/x86_64", "amd64"),
        ("linux/amd64/v3", "amd64"),
        ("linux/386", "i386"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8.2", "arm64"),
        ("linux/arm/v7", "armv7"),
        ("linux/armhf", "armv7"),
        ("linux/arm/v6", "armv5"),
        ("linux/arm/v8", "armv7"),
        ("linux/ppc64le", "ppc64le"),
    ],
)
def test_select_from_an_official_image(want: str, name: str) -> None:
    assert _chosen(OFFICIAL, want) == name


def test_select_prefers_the_best_match_over_list_order() -> None:
    entries = [
        _entry("i386", "linux/386"),
        _entry("armv5", "linux/arm/v5"),
        _entry("armv6", "linux/arm/v6"),
        _entry("arm32v8", "linux/arm/v8"),
        _entry("amd64-v2", "linux/amd64/v2"),
        _entry("amd64", "linux/amd64"),
        _entry("arm64-bare", "linux/arm64"),
    ]
    assert _chosen(entries, "linux/amd64") == "amd64"
    assert _chosen(entries, "linux/amd64/v2") == "amd64-v2"
    assert _chosen(entries, "linux/amd64/v4") == "amd64-v2"
    assert _chosen(entries, "linux/arm/v7") == "armv6"
    assert _chosen(entries[:5], "linux/arm64/v8") == "arm32v8"  # 64-bit Arm runs arm/v8 code
    assert _chosen(entries, "linux/arm64/v8") == "arm64-bare"  # no variant means v8
    assert _chosen(entries[:2], "linux/amd64/v3") == "i386"


def test_select_takes_the_first_of_equal_matches() -> None:
    entries = [_entry("first", "linux/amd64"), _entry("second", "linux/x86_64/v1")]
    assert _chosen(entries, "linux/amd64") == "first"


def test_select_falls_back_to_an_entry_without_platform() -> None:
    layout = [_entry("untyped", None), _entry("riscv", "linux/riscv64")]
    assert select(layout, parse_platform("linux/amd64")).platform is None
    assert _chosen(layout, "linux/riscv64") == "riscv"


@pytest.mark.parametrize(
    ("entries", "want", "shown"),
    [
        (OFFICIAL, "linux/riscv64", "linux/riscv64"),
        (OFFICIAL, "windows/amd64", "windows/amd64"),
        (OFFICIAL[:1], "linux/aarch64", "linux/arm64/v8"),
        ([], "linux/amd64", "linux/amd64"),
    ],
)
def test_select_reports_no_match(entries: list[Descriptor], want: str, shown: str) -> None:
    with pytest.raises(NotFound) as caught:
        select(entries, parse_platform(want))
    assert str(caught.value) == f"no matching manifest for {shown} in the manifest list entries"
