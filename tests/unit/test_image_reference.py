"""Image references: Docker's grammar, normalisation, familiar forms and error lines."""

from __future__ import annotations

import hashlib

import pytest

from dockyard.errors import InvalidArgument
from dockyard.images.reference import (
    Reference,
    is_insecure_default,
    parse,
    registry_host,
)

SHA256 = "sha256:" + hashlib.sha256(b"busybox").hexdigest()
SHA512 = "sha512:" + hashlib.sha512(b"busybox").hexdigest()

# input, full form, familiar form: Docker's documented normalisation (the cases of
# distribution/reference's normalize and reference tests, and `docker pull` behaviour).
VALID = [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("docker/docker", "docker.io/docker/docker:latest", "docker/docker:latest"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("docker.io/library/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("docker.io/docker/docker:v1", "docker.io/docker/docker:v1", "docker/docker:v1"),
    ("index.docker.io/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("index.docker.io/user/app", "docker.io/user/app:latest", "user/app:latest"),
    # "library/" is dropped only from one-level names
    ("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("foo/bar/baz/qux", "docker.io/foo/bar/baz/qux:latest", "foo/bar/baz/qux:latest"),
    ("localhost/debian", "localhost/debian:latest", "localhost/debian:latest"),
    (
        "localhost/library/debian",
        "localhost/library/debian:latest",
        "localhost/library/debian:latest",
    ),
    ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
    (
        "registry.com/docker/docker",
        "registry.com/docker/docker:latest",
        "registry.com/docker/docker:latest",
    ),
    ("registry.com:8080/a:b", "registry.com:8080/a:b", "registry.com:8080/a:b"),
    (
        "sub-dom1.foo.com/bar/baz/quux",
        "sub-dom1.foo.com/bar/baz/quux:latest",
        "sub-dom1.foo.com/bar/baz/quux:latest",
    ),
    ("192.168.0.1/foo", "192.168.0.1/foo:latest", "192.168.0.1/foo:latest"),
    ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
    ("xn--n3h.com/myimage", "xn--n3h.com/myimage:latest", "xn--n3h.com/myimage:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest", "[2001:db8::1]/repo:latest"),
    ("[2001:db8::]:5000/repo:tag", "[2001:db8::]:5000/repo:tag", "[2001:db8::]:5000/repo:tag"),
    # a capitalised first element is a registry, since repositories are lower case
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),
    # one element is never a registry, even with a dot or what looks like a port
    ("example.com", "docker.io/library/example.com:latest", "example.com:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
    ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080", "foo_bar.com:8080"),
    ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080", "foo/foo_bar.com:8080"),
    # separators: one period or underscore, two underscores, any number of dashes
    ("a.b_c__d---e", "docker.io/library/a.b_c__d---e:latest", "a.b_c__d---e:latest"),
    # tags: word characters, dots and dashes, upper case allowed, up to 128
    ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", "lowercase:Uppercase"),
    ("a:_x.y-Z", "docker.io/library/a:_x.y-Z", "a:_x.y-Z"),
    ("a:" + "t" * 128, "docker.io/library/a:" + "t" * 128, "a:" + "t" * 128),
    # digests: no default tag; tag and digest together are both kept
    (f"ubuntu@{SHA256}", f"docker.io/library/ubuntu@{SHA256}", f"ubuntu@{SHA256}"),
    (
        f"ubuntu:22.04@{SHA256}",
        f"docker.io/library/ubuntu:22.04@{SHA256}",
        f"ubuntu:22.04@{SHA256}",
    ),
    (
        f"127.0.0.1:5000/a/b:v1@{SHA256}",
        f"127.0.0.1:5000/a/b:v1@{SHA256}",
        f"127.0.0.1:5000/a/b:v1@{SHA256}",
    ),
    (f"x@{SHA512}", f"docker.io/library/x@{SHA512}", f"x@{SHA512}"),
]


@pytest.mark.parametrize(("text", "full", "familiar"), VALID)
def test_valid_reference(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    # the full form is a fixed point
    assert parse(full) == ref
    assert parse(familiar) == ref


def test_parts_of_a_reference() -> None:
    ref = parse(f"127.0.0.1:5000/a/b:v1@{SHA256}")
    assert ref == Reference(domain="127.0.0.1:5000", path="a/b", tag="v1", digest=SHA256)
    assert ref.name == "127.0.0.1:5000/a/b"
    busybox = parse("busybox")
    assert (busybox.domain, busybox.path, busybox.tag, busybox.digest) == (
        "docker.io",
        "library/busybox",
        "latest",
        None,
    )
    assert busybox.name == "docker.io/library/busybox"
    assert busybox.familiar_name == "busybox"
    assert parse("localhost/x").familiar_name == "localhost/x"
    assert parse(f"a@{SHA256}").tag is None


def test_name_length_limit_is_on_the_path() -> None:
    longest = "x/" + "a" * 253  # path of exactly 255 characters
    assert parse(longest).path == longest
    with pytest.raises(InvalidArgument, match="must not be more than 255 characters"):
        parse(longest + "a")


# input, a fragment of the one-line error
INVALID = [
    ("", "repository name must have at least one component"),
    ("Uppercase", "repository name (library/Uppercase) must be lowercase"),
    ("Uppercase:tag", "repository name (library/Uppercase) must be lowercase"),
    ("user/App", "repository name (user/App) must be lowercase"),
    (
        "test:5000/Uppercase/lowercase:tag",
        "repository name (Uppercase/lowercase) must be lowercase",
    ),
    ("docker.io/Library/x", "must be lowercase"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    (hashlib.sha256(b"x").hexdigest(), "cannot specify 64-byte hexadecimal strings"),
    ("a b", "invalid reference format"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    (":justtag", "invalid reference format"),
    (f"@{SHA256}", "invalid reference format"),
    ("-foo", "invalid reference format"),
    ("foo/-bar", "invalid reference format"),
    ("foo-/bar", "invalid reference format"),
    ("a/", "invalid reference format"),
    ("/a", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("a/.b", "invalid reference format"),
    ("a..b", "invalid reference format"),
    ("a___b", "invalid reference format"),
    ("a:b:c", "invalid reference format"),
    ("a:-tag", "invalid reference format"),
    ("a:.tag", "invalid reference format"),
    ("a:" + "t" * 129, "invalid reference format"),
    ("a:tag with space", "invalid reference format"),
    ("héllo", "invalid reference format"),
    ("a:tägs", "invalid reference format"),
    ("https://registry.com/a", "invalid reference format"),
    ("[fe80::1%eth0]:5000/repo", "invalid reference format"),
    ("registry.com:port/a", "invalid reference format"),
    ("-registry.com/a", "invalid reference format"),
    ("a_b.com/x", "'a_b.com' is not a valid registry host"),
    ("busybox\n", "invalid reference format"),
    ("busybox@sha256:" + "f" * 34, "expected 64 lowercase hex digits"),
    ("busybox@sha256:" + "F" * 64, "expected 64 lowercase hex digits"),
    ("busybox@md5:" + "0" * 32, "unsupported digest algorithm 'md5'"),
    ("busybox@sha256:abc", "invalid reference format"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_reference(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_with_tag_and_with_digest_keep_the_rest() -> None:
    ref = parse("localhost:5000/app:v1")
    assert str(ref.with_tag("v2")) == "localhost:5000/app:v2"
    pinned = ref.with_digest(SHA256)
    assert str(pinned) == f"localhost:5000/app:v1@{SHA256}"
    assert str(pinned.with_tag("v3")) == f"localhost:5000/app:v3@{SHA256}"
    assert ref.tag == "v1"  # references are values: the original is unchanged


@pytest.mark.parametrize("tag", ["", "-x", ".x", "t" * 129, "a/b", "a:b"])
def test_with_tag_refuses_bad_tags(tag: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid tag format"):
        parse("busybox").with_tag(tag)


@pytest.mark.parametrize("digest", ["sha256:abc", "abc", "md5:" + "0" * 32, SHA256.upper()])
def test_with_digest_refuses_bad_digests(digest: str) -> None:
    with pytest.raises(InvalidArgument, match="digest"):
        parse("busybox").with_digest(digest)


def test_references_are_hashable_values() -> None:
    assert len({parse("busybox"), parse("docker.io/library/busybox:latest")}) == 1
    with pytest.raises(AttributeError):
        parse("busybox").tag = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("domain", "host"),
    [
        ("docker.io", "registry-1.docker.io"),
        ("index.docker.io", "registry-1.docker.io"),
        ("localhost:5000", "localhost:5000"),
        ("ghcr.io", "ghcr.io"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_registry_host(domain: str, host: str) -> None:
    assert registry_host(domain) == host
    assert registry_host(parse(f"{domain}/a/b").domain) == host


@pytest.mark.parametrize(
    ("host", "insecure"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3:443", True),
        ("::1", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("128.0.0.1:5000", False),
        ("10.0.0.1:5000", False),
        ("[2001:db8::1]:5000", False),
        ("registry-1.docker.io", False),
        ("localhost.example.com", False),
        ("ghcr.io", False),
    ],
)
def test_is_insecure_default(host: str, insecure: bool) -> None:
    assert is_insecure_default(host) is insecure
