"""A client of the distribution API v2 (Docker Registry HTTP API V2 / OCI distribution).

It speaks in plain strings: a registry host, a repository name (``library/busybox``), a
tag or digest, and returns bytes and streams. What the bytes mean (manifests, indexes,
configs) is the business of the image code above it.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple, Self
from urllib.parse import urlencode, urljoin, urlsplit

from dockyard.errors import (
    DockyardError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from dockyard.oci.image import Digest

from .auth import (
    Challenge,
    Token,
    TokenCache,
    basic_authorization,
    choose_challenge,
    parse_challenges,
    parse_token_response,
    repository_scope,
)
from .credentials import Credentials, store_credentials
from .transport import Body, Origin, Response, ResponseStream, Transport, describe_body

DEFAULT_USER_AGENT = "dockyard/0.1"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
#: What ``get_manifest`` accepts unless told otherwise: both indexes and both manifests.
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io"})
DOCKER_HUB_REGISTRY = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_NEXT_LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')

PushResult = Literal["exists", "mounted", "uploaded"]


class Manifest(NamedTuple):
    """A manifest (or index) as the registry stored it."""

    data: bytes
    media_type: str
    digest: str


class ManifestHead(NamedTuple):
    """What a HEAD of a manifest tells without its body."""

    media_type: str
    digest: str
    size: int


def is_digest(reference: str) -> bool:
    """Whether ``reference`` is a digest (``sha256:<64 hex>``, see ``Digest``) rather
    than a tag."""
    try:
        Digest(reference)
    except InvalidArgument:
        return False
    return True


def _check_repository(name: str) -> None:
    if not _REPOSITORY_RE.fullmatch(name) or len(name) > 255:
        raise InvalidArgument(
            f"invalid repository name {name!r}: use lowercase letters, digits and"
            " separators (. _ - /), like library/busybox"
        )


def _check_reference(reference: str) -> None:
    if not (is_digest(reference) or _TAG_RE.fullmatch(reference)):
        raise InvalidArgument(
            f"invalid tag or digest {reference!r}: a tag is up to 128 letters, digits,"
            " '_', '.' or '-'; a digest is sha256:<64 hex digits>"
        )


def _registry_origin(host: str, insecure: bool | None) -> Origin:
    """Where the API of ``host`` answers: plain HTTP only on loopback or when asked."""
    if "://" in host or "/" in host or not host:
        raise InvalidArgument(
            f"invalid registry host {host!r}: give host[:port], like registry.example.com:5000"
        )
    parts = urlsplit("//" + host)
    try:
        port = parts.port
    except ValueError as error:
        raise InvalidArgument(f"invalid port in registry host {host!r}") from error
    hostname = parts.hostname or ""
    if hostname in DOCKER_HUB_HOSTS:
        hostname = DOCKER_HUB_REGISTRY
    if insecure is None:
        try:
            insecure = hostname == "localhost" or ipaddress.ip_address(hostname).is_loopback
        except ValueError:
            insecure = False
    scheme = "http" if insecure else "https"
    return Origin(scheme, hostname, port or (80 if insecure else 443))


def _header_media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class RegistryClient:
    """A client of one registry, safe to share between threads.

    ``host`` is ``host[:port]`` (``docker.io`` means Docker Hub). HTTPS is used except for
    loopback hosts and when ``insecure`` is true; ``insecure=False`` forces HTTPS even on
    loopback. ``credentials`` are sent only when the registry asks (Basic, or to its
    token server); without them the client pulls anonymously. Tokens are cached per
    scope for the life of the client.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool | None = None,
        credentials: Credentials | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.credentials = credentials
        self.origin = _registry_origin(host, insecure)
        self.base_url = f"{self.origin.scheme}://{self.origin.netloc}"
        self._peer = f"registry {host}"
        self._transport = Transport(
            connect_timeout=connect_timeout, read_timeout=read_timeout, user_agent=user_agent
        )
        self._tokens = TokenCache()
        # The registry's last challenge: once known, tokens (or Basic credentials) go
        # with the first request instead of costing a 401 round trip each time.
        self._challenge: Challenge | None = None

    def close(self) -> None:
        """Close every connection the client holds, in every thread."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests and authentication ----------------------------------------------------

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header for a request needing ``scopes``, once one is known."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return basic_authorization(self.credentials) if self.credentials else None
        token = self._tokens.get(scopes)
        if token is None:
            token_obj = self._fetch_token(challenge, scopes)
            self._tokens.put(scopes, token_obj)
            token = token_obj.value
        return f"Bearer {token}"

    def _fetch_token(self, challenge: Challenge, scopes: Sequence[str]) -> Token:
        """Ask the token server of ``challenge`` for a token granting ``scopes``."""
        realm = challenge.params["realm"]
        realm_origin = Origin.of(realm)
        peer = f"token server {realm_origin.netloc} of registry {self.host}"
        service = challenge.params.get("service")
        creds = self.credentials
        headers: dict[str, str] = {}
        body: bytes | None = None
        if creds is not None and creds.identity_token:
            # An identity token is an OAuth2 refresh token (auth/oauth.md).
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "dockyard",
                "scope": " ".join(scopes),
            }
            if service:
                form["service"] = service
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            method, url = "POST", realm
        else:
            query = ([("service", service)] if service else []) + [("scope", s) for s in scopes]
            sep = "&" if "?" in realm else "?"
            method, url = "GET", realm + (sep + urlencode(query) if query else "")
            if creds is not None:
                headers["Authorization"] = basic_authorization(creds)
        response = self._transport.send(method, url, peer=peer, headers=headers, body=body)
        data = response.read()
        if response.status in (401, 403):
            who = f"the credentials of {creds.username!r}" if creds else "anonymous access"
            raise PermissionDenied(
                f"{peer} refused {who}: check them with `dockyard login {self.host}`"
            )
        if response.status != 200:
            error = Unavailable if response.status >= 500 else InvalidArgument
            raise error(f"{peer} answered HTTP {response.status} with {describe_body(data)}")
        return parse_token_response(data, peer)

    def _authenticate(self, response: Response, scopes: tuple[str, ...], what: str) -> None:
        """Answer the 401 ``response`` so that the request can be sent again."""
        header = ", ".join(response.headers.get_all("WWW-Authenticate") or [])
        challenge = choose_challenge(parse_challenges(header))
        if challenge is None:
            raise PermissionDenied(
                f"{what} on {self._peer} needs an authentication dockyard does not"
                f" support ({header or 'no WWW-Authenticate header'})"
            )
        self._challenge = challenge
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise PermissionDenied(
                    f"{what} on {self._peer} needs a login: run `dockyard login {self.host}`"
                )
            return
        # Ask for what the registry named too, so an unforeseen scope costs no second 401.
        wanted = tuple(dict.fromkeys((*scopes, *challenge.scopes)))
        self._tokens.put(scopes, self._fetch_token(challenge, wanted))

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        scopes: tuple[str, ...],
        ok: Collection[int],
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        follow: bool = False,
    ) -> Response:
        """Send a request with authentication; the response's status is one of ``ok``.

        ``path`` is relative to the registry or an absolute URL (an upload location).
        A 401 is answered once (token or Basic) and the request sent again; anything not
        in ``ok`` becomes the error that matches the registry's answer.
        """
        url = urljoin(self.base_url, path)
        start = body.tell() if isinstance(body, io.IOBase) and body.seekable() else None
        # A stream that cannot seek back cannot be sent a second time after a 401.
        replayable = not isinstance(body, io.IOBase) or start is not None
        for attempt in range(2):
            if attempt and start is not None:
                assert isinstance(body, io.IOBase)
                body.seek(start)
            response = self._send(method, url, scopes, headers, body, follow)
            if response.status == 401 and attempt == 0 and replayable:
                response.read()
                self._tokens.discard(scopes)
                self._authenticate(response, scopes, what)
                continue
            break
        if response.status in ok:
            return response
        raise self._error(response, response.read(), what)

    def _send(
        self,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        headers: Mapping[str, str] | None,
        body: Body,
        follow: bool,
    ) -> Response:
        """Send once, following redirects when ``follow``; credentials stay on the registry."""
        for _ in range(_MAX_REDIRECTS + 1):
            all_headers = dict(headers or {})
            origin = Origin.of(url)
            peer = self._peer
            if origin == self.origin:
                authorization = self._authorization(scopes)
                if authorization:
                    all_headers["Authorization"] = authorization
            else:
                peer = f"{origin.netloc} (storage of registry {self.host})"
            response = self._transport.send(method, url, peer=peer, headers=all_headers, body=body)
            location = response.headers.get("Location")
            if not (follow and response.status in _REDIRECTS and location):
                return response
            response.read()
            url = urljoin(url, location)
        raise Unavailable(f"{self._peer} redirected {method} more than {_MAX_REDIRECTS} times")

    def _error(self, response: Response, data: bytes, what: str) -> DockyardError:
        """The error for an unexpected answer: the registry's own codes when it gave any."""
        status = response.status
        codes: list[str] = []
        messages: list[str] = []
        try:
            errors = json.loads(data).get("errors")
            for entry in errors:
                codes.append(str(entry.get("code", "")).upper())
                messages.append(" ".join(str(entry.get("message") or entry["code"]).split()))
        except (ValueError, AttributeError, TypeError, KeyError):
            codes, messages = [], []
        if messages:
            detail = f"{'; '.join(messages)} ({', '.join(codes)})"
            message = f"{what} on {self._peer} failed: {detail}"
        else:
            message = f"{self._peer} answered {what} with HTTP {status} and {describe_body(data)}"
        error: type[DockyardError]
        if any(c.endswith("_UNKNOWN") for c in codes) or (not codes and status == 404):
            error = NotFound
        elif {"DENIED", "UNAUTHORIZED"} & set(codes) or status in (401, 403):
            error = PermissionDenied
            if self.credentials is None:
                message += f"; run `dockyard login {self.host}` if it needs a login"
            elif status == 401:
                message += (
                    f"; check the credentials of {self.credentials.username!r}"
                    f" with `dockyard login {self.host}`"
                )
        elif "TOOMANYREQUESTS" in codes or status == 429 or status >= 500:
            error = Unavailable
        else:
            error = InvalidArgument
        return error(message)

    def _checked_digest(self, data: bytes, expected: str | None, what: str) -> str:
        """The digest of ``data``: ``expected``'s algorithm, which it must match."""
        if expected is None:
            return Digest.of(data)
        if not is_digest(expected):
            raise InvalidArgument(f"{self._peer} answered {what} with invalid digest {expected!r}")
        actual = Digest.of(data, Digest(expected).algorithm)
        if actual != expected:
            raise InvalidArgument(
                f"{self._peer} answered {what} with content of digest {actual}, not"
                f" {expected}: the registry or a proxy altered it"
            )
        return actual

    # -- operations --------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the host is a registry and accepts our credentials (``GET /v2/``)."""
        response = self._request("GET", "/v2/", what="GET /v2/", scopes=(), ok=(200,))
        data = response.read()
        if response.headers.get("Docker-Distribution-API-Version"):
            return
        try:
            json.loads(data)
        except ValueError:
            raise InvalidArgument(
                f"{self._peer} answered GET /v2/ with {describe_body(data)}:"
                " it does not look like a registry (distribution API v2)"
            ) from None

    def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> Manifest:
        """The manifest or index ``repository:reference``, checked against its digest."""
        _check_repository(repository)
        _check_reference(reference)
        what = f"get manifest {repository}{'@' if is_digest(reference) else ':'}{reference}"
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            what=what,
            scopes=(repository_scope(repository, "pull"),),
            ok=(200,),
            headers={"Accept": ", ".join(accept)},
        )
        data = response.read()
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise InvalidArgument(
                f"{self._peer} answered {what} with {describe_body(data)}, not a manifest"
            )
        media_type = _header_media_type(response.headers.get("Content-Type"))
        if media_type not in accept and isinstance(document.get("mediaType"), str):
            # Registries serve some manifests as plain application/json; the document
            # names its own type.
            media_type = document["mediaType"]
        expected = (
            reference if is_digest(reference) else response.headers.get("Docker-Content-Digest")
        )
        return Manifest(data, media_type, self._checked_digest(data, expected, what))

    def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> ManifestHead | None:
        """Media type, digest and size of a manifest, or ``None`` if there is none."""
        _check_repository(repository)
        _check_reference(reference)
        response = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            what=f"check manifest {repository}:{reference}",
            scopes=(repository_scope(repository, "pull"),),
            ok=(200, 404),
            headers={"Accept": ", ".join(accept)},
        )
        response.read()
        if response.status == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if digest is None:
            if not is_digest(reference):
                # Some registries name the digest only with the body.
                manifest = self.get_manifest(repository, reference, accept)
                return ManifestHead(manifest.media_type, manifest.digest, len(manifest.data))
            digest = reference
        return ManifestHead(
            _header_media_type(response.headers.get("Content-Type")),
            digest,
            int(response.headers.get("Content-Length") or 0),
        )

    def _head_blob(self, repository: str, digest: str, scopes: tuple[str, ...]) -> int | None:
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            what=f"check blob {digest} in {repository}",
            scopes=scopes,
            ok=(200, 404),
            follow=True,
        )
        response.read()
        if response.status == 404:
            return None
        return int(response.headers.get("Content-Length") or 0)

    def blob_exists(self, repository: str, digest: str) -> int | None:
        """The size of blob ``digest`` in ``repository``, or ``None`` if it is not there."""
        _check_repository(repository)
        Digest(digest)  # checked: InvalidArgument says what is wrong
        return self._head_blob(repository, digest, (repository_scope(repository, "pull"),))

    def get_blob(self, repository: str, digest: str, offset: int = 0) -> BlobStream:
        """A stream of blob ``digest`` from byte ``offset`` on (to resume a download).

        The bytes are not checked here: whoever stores them checks the digest (the
        content store does on commit). Close the stream when done with it.
        """
        _check_repository(repository)
        Digest(digest)  # checked: InvalidArgument says what is wrong
        if offset < 0:
            raise InvalidArgument(f"negative blob offset {offset}")
        what = f"get blob {digest} from {repository}"
        response = self._request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            what=what,
            scopes=(repository_scope(repository, "pull"),),
            ok=(200, 206),
            headers={"Range": f"bytes={offset}-"} if offset else None,
            follow=True,
        )
        length = int(response.headers.get("Content-Length") or -1)
        stream = BlobStream(response)
        if response.status == 206:
            match = re.fullmatch(
                r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", "").strip()
            )
            if match is None or int(match.group(1)) != offset:
                stream.close()
                raise InvalidArgument(
                    f"{self._peer} answered {what} from byte {offset} with Content-Range"
                    f" {response.headers.get('Content-Range')!r}"
                )
            stream.size = int(match.group(2))
        else:
            stream.size = length if length >= 0 else None
            # The server ignored Range (allowed by HTTP): skip what we have already.
            _skip(stream, offset)
        stream.offset = offset
        return stream

    def push_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        stream: BinaryIO,
        *,
        mount_from: str | None = None,
        chunk_size: int | None = None,
    ) -> PushResult:
        """Upload ``size`` bytes of ``stream`` as blob ``digest`` unless the registry has it.

        With ``mount_from`` (a repository of the same registry holding the blob) the
        registry is asked to link it instead. The upload is one PUT, or PATCHes of
        ``chunk_size`` bytes then a PUT. The registry checks the digest.
        """
        _check_repository(repository)
        Digest(digest)  # checked: InvalidArgument says what is wrong
        if size < 0:
            raise InvalidArgument(f"negative blob size {size}")
        if chunk_size is not None and chunk_size <= 0:
            raise InvalidArgument(f"chunk size must be positive, not {chunk_size}")
        scopes: tuple[str, ...] = (repository_scope(repository, "pull", "push"),)
        query = ""
        if mount_from is not None:
            _check_repository(mount_from)
            scopes += (repository_scope(mount_from, "pull"),)
            query = "?" + urlencode({"mount": digest, "from": mount_from})
        if self._head_blob(repository, digest, scopes) is not None:
            return "exists"
        what = f"push blob {digest} to {repository}"
        response = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/{query}",
            what=what,
            scopes=scopes,
            ok=(201, 202),
        )
        response.read()
        if response.status == 201:
            return "mounted"
        location = self._location(response, what)
        try:
            if chunk_size is None:
                self._put_blob(location, digest, size, stream, scopes, what)
            else:
                self._patch_blob(location, digest, size, stream, chunk_size, scopes, what)
        except BaseException:
            # Free the registry's half-written upload; the original error is what matters.
            with contextlib.suppress(DockyardError):
                self._request("DELETE", location, what=what, scopes=scopes, ok=(204, 404)).read()
            raise
        return "uploaded"

    def _location(self, response: Response, what: str) -> str:
        location = response.headers.get("Location")
        if not location:
            raise InvalidArgument(f"{self._peer} answered {what} without an upload Location")
        return urljoin(response.url, location)

    def _put_blob(
        self,
        location: str,
        digest: str,
        size: int,
        stream: BinaryIO,
        scopes: tuple[str, ...],
        what: str,
    ) -> None:
        response = self._request(
            "PUT",
            _with_query(location, digest=digest),
            what=what,
            scopes=scopes,
            ok=(201,),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=_ExactReader(stream, size, what) if size else None,
        )
        response.read()
        self._check_pushed(response, digest, what)

    def _patch_blob(
        self,
        location: str,
        digest: str,
        size: int,
        stream: BinaryIO,
        chunk_size: int,
        scopes: tuple[str, ...],
        what: str,
    ) -> None:
        sent = 0
        while sent < size:
            chunk = _read_exactly(stream, min(chunk_size, size - sent), what)
            response = self._request(
                "PATCH",
                location,
                what=what,
                scopes=scopes,
                ok=(202,),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{sent}-{sent + len(chunk) - 1}",
                    "Content-Length": str(len(chunk)),
                },
                body=chunk,
            )
            response.read()
            location = self._location(response, what)
            sent += len(chunk)
        response = self._request(
            "PUT", _with_query(location, digest=digest), what=what, scopes=scopes, ok=(201,)
        )
        response.read()
        self._check_pushed(response, digest, what)

    def _check_pushed(self, response: Response, digest: str, what: str) -> None:
        stored = response.headers.get("Docker-Content-Digest")
        if stored is not None and stored != digest:
            raise InvalidArgument(f"{self._peer} stored {what} as {stored}")

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Store manifest ``data`` as ``repository:reference``; return its digest."""
        _check_repository(repository)
        _check_reference(reference)
        what = f"push manifest {repository}:{reference}"
        digest = self._checked_digest(
            data, reference if is_digest(reference) else None, f"{what} (local check)"
        )
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            what=what,
            scopes=(repository_scope(repository, "pull", "push"),),
            ok=(201,),
            headers={"Content-Type": media_type},
            body=data,
        )
        response.read()
        stored = response.headers.get("Docker-Content-Digest")
        if stored is not None and stored.startswith("sha256:") and stored != digest:
            raise InvalidArgument(f"{self._peer} stored {what} as {stored}, not {digest}")
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete the manifest ``digest`` (and so every tag naming it)."""
        _check_repository(repository)
        Digest(digest)  # checked: InvalidArgument says what is wrong
        self._request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            what=f"delete manifest {repository}@{digest}",
            scopes=(repository_scope(repository, "delete"),),
            ok=(202,),
        ).read()

    def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``, following the registry's pagination."""
        _check_repository(repository)
        what = f"list tags of {repository}"
        path: str | None = f"/v2/{repository}/tags/list"
        found: list[str] = []
        while path is not None:
            response = self._request(
                "GET",
                path,
                what=what,
                scopes=(repository_scope(repository, "pull"),),
                ok=(200,),
            )
            data = response.read()
            try:
                tags = json.loads(data).get("tags") or []
            except (ValueError, AttributeError):
                tags = None
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise InvalidArgument(
                    f"{self._peer} answered {what} with {describe_body(data)}, not a tag list"
                )
            found += tags
            link = _NEXT_LINK_RE.search(response.headers.get("Link") or "")
            path = urljoin(response.url, link.group(1)) if link else None
        return found


class BlobStream(ResponseStream):
    """A blob's bytes from ``offset`` on; ``size`` is the whole blob's when the registry said."""

    size: int | None = None
    offset: int = 0


def _skip(stream: BlobStream, count: int) -> None:
    while count:
        data = stream.read(min(count, 1 << 20))
        if not data:
            raise InvalidArgument(f"blob is shorter than offset {count}")
        count -= len(data)


def _with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query (upload locations carry state there)."""
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _read_exactly(stream: BinaryIO, count: int, what: str) -> bytes:
    parts: list[bytes] = []
    missing = count
    while missing:
        data = stream.read(missing)
        if not data:
            raise InvalidArgument(f"{what}: the data ended {missing} bytes before the size given")
        parts.append(data)
        missing -= len(data)
    return b"".join(parts)


class _ExactReader(io.RawIOBase):
    """Exactly ``size`` bytes of ``stream`` as an upload body; a short stream is an error.

    Without it a stream shorter than the Content-Length sent would leave the registry
    waiting for the rest until a timeout. It can seek back to its start when the stream
    can, so the transport may send it again on a fresh connection.
    """

    def __init__(self, stream: BinaryIO, size: int, what: str) -> None:
        super().__init__()
        self._stream = stream
        self._size = size
        self._what = what
        self._base = stream.tell() if stream.seekable() else None
        self._pos = 0

    def readable(self) -> bool:
        """An upload body is read."""
        return True

    def seekable(self) -> bool:
        """Whether the underlying stream can go back to where the upload started."""
        return self._base is not None

    def tell(self) -> int:
        """Bytes read so far."""
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        """Go back to ``pos`` bytes after the start of the upload."""
        if self._base is None or whence != io.SEEK_SET or not 0 <= pos <= self._size:
            raise io.UnsupportedOperation("upload body can only seek within itself")
        self._stream.seek(self._base + pos)
        self._pos = pos
        return pos

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, never past the declared size."""
        left = self._size - self._pos
        size = left if size < 0 else min(size, left)
        if size == 0:
            return b""
        data = self._stream.read(size)
        if not data:
            raise InvalidArgument(
                f"{self._what}: the data ended {left} bytes before the size given"
            )
        self._pos += len(data)
        return data


def login(
    host: str,
    username: str,
    password: str,
    *,
    insecure: bool | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Path:
    """Check ``username``/``password`` against ``host``, then store them; return the file.

    The check is ``GET /v2/`` through the registry's own authentication (its token
    server, or Basic), so wrong credentials are refused before anything is written.
    """
    with RegistryClient(
        host, insecure=insecure, credentials=Credentials(username, password)
    ) as client:
        client.ping()
    return store_credentials(host, username, password, path)
