"""Image references: Docker's grammar and normalisation, to the letter.

``parse("busybox")`` gives ``docker.io/library/busybox:latest``; ``str()`` of a
``Reference`` is that full form and ``familiar()`` the short one Docker shows
(``busybox:latest``). The grammar is distribution/reference's::

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [domain "/"] path
    domain      := host [":" port]      host: DNS-like name, IPv4, or [IPv6]
    path        := component ["/" component]*
    component   := [a-z0-9]+ ([._] | "__" | "-"+ [a-z0-9]+)*
    tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

and the first path element is a registry only if it has a "." or a ":", is
``localhost``, or has capitals (repository paths may not). Errors are one
``InvalidArgument`` line worded like Docker's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from dockyard.errors import InvalidArgument
from dockyard.oci.image import Digest

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "Reference",
    "is_insecure_default",
    "parse",
    "registry_host",
]

#: The domain of Docker Hub in normalised references.
DEFAULT_DOMAIN = "docker.io"
#: The tag of a reference that names neither a tag nor a digest.
DEFAULT_TAG = "latest"
# Docker Hub's original name, still accepted and folded into DEFAULT_DOMAIN.
_LEGACY_DOMAIN = "index.docker.io"
# Where Docker Hub's registry API actually answers.
_DOCKER_HUB_API_HOST = "registry-1.docker.io"
_OFFICIAL_PREFIX = "library/"
_NAME_MAX = 255

# The productions of the grammar above. re.ASCII because \w means [A-Za-z0-9_] in Go.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
# Looser than Digest on purpose, like Docker: a well-formed but unsupported digest
# gets the digest's own error rather than "invalid reference format".
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_NAME = re.compile(rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})", re.ASCII)
_TAG_ONLY = re.compile(_TAG, re.ASCII)
# A bare image ID, which Docker refuses as a repository name to avoid confusion.
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")


def _invalid(problem: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format: {problem}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised image reference: ``domain/path[:tag][@digest]``.

    A reference parsed without tag or digest gets the tag ``latest``. When both are
    given, both are kept, and the digest is what identifies the content.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The repository, without tag or digest: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``user/app``, ``host:5000/x``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        # "library/" goes only from one-level names: library/a/b is not an official image.
        short = self.path.removeprefix(_OFFICIAL_PREFIX)
        return self.path if "/" in short else short

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        return f"{tag}@{self.digest}" if self.digest is not None else tag

    def __str__(self) -> str:
        """The full form: ``docker.io/library/busybox:latest``."""
        return self.name + self._suffix()

    def familiar(self) -> str:
        """The short form Docker shows: ``busybox:latest``."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """The same repository (and digest, if any) with ``tag``."""
        if not _TAG_ONLY.fullmatch(tag):
            raise InvalidArgument(
                f"invalid tag format {tag!r}: up to 128 letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-'"
            )
        return replace(self, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        """The same repository (and tag, if any) pinned to ``digest``."""
        return replace(self, digest=Digest(digest))


def _split_domain(text: str) -> tuple[str, str]:
    """Split off the registry as Docker does before any validation."""
    first, slash, rest = text.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, _OFFICIAL_PREFIX + text
    if first == _LEGACY_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, text
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = _OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """Parse and normalise a reference as ``docker pull`` does.

    ``busybox`` -> ``docker.io/library/busybox:latest``, ``user/app`` ->
    ``docker.io/user/app:latest``, ``index.docker.io/x`` -> ``docker.io/library/x``;
    ``localhost:5000/x``, ``10.0.0.1/a/b:v1@sha256:...`` and ``[::1]:5000/x`` keep their
    registry. ``InvalidArgument`` for anything else, worded like Docker's errors.
    """
    if not text:
        raise _invalid("repository name must have at least one component")
    if _IDENTIFIER.fullmatch(text):
        raise InvalidArgument(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    repository = remainder.partition(":")[0]
    if repository.lower() != repository:
        raise _invalid(f"repository name ({repository}) must be lowercase")

    full = f"{domain}/{remainder}"
    match = _REFERENCE.fullmatch(full)
    if match is None:
        if _REFERENCE.fullmatch(full.lower()):
            raise _invalid("repository name must be lowercase")
        raise _invalid(f"{text!r} is not [registry[:port]/]name[:tag][@digest]")
    name = _NAME.fullmatch(match["name"])
    # A first element taken for a registry may still fail the host grammar ("a_b.c/x")
    # and then only parse as part of the path: refuse rather than lose the registry.
    if name is None or name["domain"] != domain:
        raise _invalid(f"{domain!r} is not a valid registry host[:port]")
    if len(name["path"]) > _NAME_MAX:
        raise _invalid(f"repository name must not be more than {_NAME_MAX} characters")
    digest = Digest(match["digest"]) if match["digest"] else None
    tag = match["tag"] or (None if digest else DEFAULT_TAG)
    return Reference(domain=name["domain"], path=name["path"], tag=tag, digest=digest)


def registry_host(domain: str) -> str:
    """The host[:port] that serves the registry API of ``domain``."""
    return _DOCKER_HUB_API_HOST if domain in (DEFAULT_DOMAIN, _LEGACY_DOMAIN) else domain


def is_insecure_default(host: str) -> bool:
    """Whether plain HTTP is allowed to ``host`` without configuration: loopback only
    (``localhost``, 127.0.0.0/8, ``::1``), with or without a port, as Docker does."""
    if host.startswith("["):
        address = host[1:].partition("]")[0]
    elif host.count(":") > 1:  # a bare IPv6 address has no room for a port
        address = host
    else:
        address = host.partition(":")[0]
    if address.lower() == "localhost":
        return True
    # Imported here: ipaddress costs milliseconds, and resolving a reference on the
    # path of `run` never needs it.
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
