"""HTTP for the registry client: persistent connections, one per origin and thread.

Pulls fetch layers from several threads at once, and ``http.client`` connections are
not thread-safe, so each thread keeps its own connection to each origin (the registry,
its token server, the storage a blob redirects to) and reuses it while the server keeps
it open. A connection handed out with an unread body (a blob stream) leaves the pool
until the stream is finished, so the same thread can still make other requests.
"""

from __future__ import annotations

import http.client
import io
import ssl
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from dockyard.errors import InvalidArgument, Timeout, Unavailable

# Large socket writes: the default 8 KiB blocks cap uploads well below the loopback's speed.
_SEND_BLOCK = 1 << 20
# Failures of a reused connection that the server closed while it was idle.
_STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

Body = bytes | BinaryIO | None


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port: what a connection, and an Authorization header, belong to."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an absolute http(s) URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"{url!r} is not an http(s) URL")
        try:
            port = parts.port
        except ValueError as error:
            raise InvalidArgument(f"{url!r} has an invalid port") from error
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default)

    @property
    def netloc(self) -> str:
        """``host:port`` as written in a URL (IPv6 addresses in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def describe_body(body: bytes) -> str:
    """A few words on what an unexpected answer was, for a one-line error."""
    text = body.lstrip()[:200].decode("utf-8", "replace")
    if not text:
        return "an empty body"
    if text[:1] == "<":
        return "an HTML page"
    return repr(" ".join(text.split())[:40])


class Response:
    """A response whose body has not been read yet; read, discard or stream it once."""

    def __init__(
        self,
        raw: http.client.HTTPResponse,
        url: str,
        peer: str,
        release: Callable[[bool], None],
    ) -> None:
        self.raw = raw
        self.url = url
        self.peer = peer
        self._release = release
        self._done = False

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self.raw.status

    @property
    def headers(self) -> http.client.HTTPMessage:
        """The response headers."""
        return self.raw.headers

    def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            data = self.raw.read()
        except TimeoutError as error:
            self.finish(reusable=False)
            raise Timeout(f"{self.peer} stopped sending (read timed out)") from error
        except (OSError, http.client.HTTPException) as error:
            self.finish(reusable=False)
            raise Unavailable(f"{self.peer} broke the connection: {_reason(error)}") from error
        self.finish(reusable=True)
        return data

    def finish(self, *, reusable: bool) -> None:
        """Hand the connection back (if the body was read and the server keeps it open)."""
        if not self._done:
            self._done = True
            self._release(reusable and not self.raw.will_close)


def _reason(error: BaseException) -> str:
    """The short reason of a socket or HTTP error."""
    if isinstance(error, http.client.IncompleteRead):
        return f"the body ended after {len(error.partial)} bytes"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({error.verify_message})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


class Transport:
    """Sends requests over the calling thread's pooled connections."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, user_agent: str) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self._local = threading.local()
        self._ssl = ssl.create_default_context()
        # Every connection ever opened, so close() reaches other threads' pools too.
        self._all: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._all_lock = threading.Lock()

    def _pool(self) -> dict[Origin, http.client.HTTPConnection]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _connect(self, origin: Origin, peer: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if origin.scheme == "https":
            conn = http.client.HTTPSConnection(
                origin.host,
                origin.port,
                timeout=self.connect_timeout,
                context=self._ssl,
                blocksize=_SEND_BLOCK,
            )
        else:
            conn = http.client.HTTPConnection(
                origin.host, origin.port, timeout=self.connect_timeout, blocksize=_SEND_BLOCK
            )
        try:
            conn.connect()
        except TimeoutError as error:
            conn.close()
            raise Timeout(
                f"cannot reach {peer}: no answer within {self.connect_timeout:g} s"
            ) from error
        except OSError as error:
            conn.close()
            raise Unavailable(f"cannot reach {peer}: {_reason(error)}") from error
        # The connect timeout is short; a busy registry may take longer to answer.
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        with self._all_lock:
            self._all.add(conn)
        return conn

    def send(
        self,
        method: str,
        url: str,
        *,
        peer: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
    ) -> Response:
        """Send one request (no redirects followed) and return the unread response.

        A pooled connection the server has closed meanwhile is replaced once, when the
        body can be sent again (bytes, or a stream that can seek back).
        """
        origin = Origin.of(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {"User-Agent": self.user_agent, **(headers or {})}
        if body is None and method in ("POST", "PUT", "PATCH"):
            all_headers.setdefault("Content-Length", "0")
        start = body.tell() if isinstance(body, io.IOBase) and body.seekable() else None
        pool = self._pool()
        conn = pool.pop(origin, None)
        if conn is not None and conn.sock is None:  # closed by close() meanwhile
            conn = None
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(origin, peer)
            try:
                conn.request(method, target, body=body, headers=all_headers)
                raw = conn.getresponse()
                break
            except _STALE_ERRORS as error:
                conn.close()
                conn = None
                replayable = not isinstance(body, io.IOBase) or start is not None
                if not (reused and replayable):
                    raise Unavailable(f"{peer} closed the connection: {_reason(error)}") from error
                if start is not None:
                    assert isinstance(body, io.IOBase)
                    body.seek(start)
                reused = False
            except TimeoutError as error:
                conn.close()
                raise Timeout(
                    f"{peer} did not answer {method} within {self.read_timeout:g} s"
                ) from error
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                raise Unavailable(f"{method} to {peer} failed: {_reason(error)}") from error
            except BaseException:
                # The body's stream failed (or the user interrupted): the request is half
                # sent, so the connection cannot carry another one.
                conn.close()
                raise

        def release(reusable: bool, conn: http.client.HTTPConnection = conn) -> None:
            # Keep one idle connection per origin: a second one (the thread had a stream
            # open meanwhile) would only hold a socket.
            if reusable and origin not in pool:
                pool[origin] = conn
            else:
                conn.close()

        return Response(raw, url, peer, release)

    def close(self) -> None:
        """Close every connection of every thread."""
        with self._all_lock:
            connections = list(self._all)
            self._all.clear()
        for conn in connections:
            conn.close()


class ResponseStream(io.RawIOBase):
    """The body of a response, read as a binary stream; closing it releases the connection.

    A body read to its end gives the connection back to the pool; one closed early
    closes the connection, since the rest of the body would still be in it.
    """

    def __init__(self, response: Response) -> None:
        super().__init__()
        self._response = response
        self._raw = response.raw

    def readable(self) -> bool:
        """A response body can be read."""
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Read into ``buffer``; 0 at the end of the body."""
        try:
            count = self._raw.readinto(buffer)
        except TimeoutError as error:
            self._response.finish(reusable=False)
            raise Timeout(f"{self._response.peer} stopped sending (read timed out)") from error
        except (OSError, http.client.HTTPException) as error:
            self._response.finish(reusable=False)
            raise Unavailable(
                f"{self._response.peer} broke the connection: {_reason(error)}"
            ) from error
        if count == 0 and len(buffer):
            self._response.finish(reusable=True)
        return count

    def readall(self) -> bytes:
        """The rest of the body, in one read (much faster than RawIOBase's 8 KiB loop)."""
        return self._response.read()

    def close(self) -> None:
        """Stop reading; the connection is dropped unless the body was read to its end."""
        self._response.finish(reusable=False)
        super().close()
