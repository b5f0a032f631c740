"""Real registries for the registry client's tests, and the servers around them.

    run_registry(tmp, auth=None)  a Distribution (docker-registry) on 127.0.0.1, plain
    basic_auth(tmp, users)        the ``auth`` section for htpasswd (bcrypt) Basic auth
    TokenServer(users)            a token server issuing real JWTs (ES256, x5c chain)
    ScriptedServer(respond)       an HTTP server answering whatever ``respond`` writes

Each runs on a free port of 127.0.0.1 and is stopped by its context manager, even when
the test fails. Distribution reads YAML, of which JSON is a subset, so configs are JSON.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
START_TIMEOUT = 15.0
SERVICE = "dockyard-test-registry"
ISSUER = "dockyard-test-issuer"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Registry:
    """A running Distribution registry."""

    host: str  # "127.0.0.1:PORT"
    storage: Path  # its filesystem storage root

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps the bytes of ``digest`` (to corrupt them on purpose)."""
        algorithm, hexdigest = digest.split(":")
        return (
            self.storage
            / "docker/registry/v2/blobs"
            / algorithm
            / hexdigest[:2]
            / hexdigest
            / "data"
        )


def _answers(host: str) -> bool:
    conn = http.client.HTTPConnection(host, timeout=1)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status in (200, 401)
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def run_registry(tmp: Path, auth: dict[str, Any] | None = None) -> Iterator[Registry]:
    """Start ``docker-registry serve`` with its storage under ``tmp``; stop it after."""
    tmp.mkdir(parents=True, exist_ok=True)
    storage = tmp / "storage"
    port = free_port()
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
    }
    if auth is not None:
        config["auth"] = auth
    config_file = tmp / "config.yml"
    config_file.write_text(json.dumps(config, indent=2))
    log_file = tmp / "registry.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(host):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"docker-registry did not start on {host}: {log_file.read_text()[-2000:]}"
                )
            time.sleep(0.02)
        yield Registry(host, storage)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def basic_auth(tmp: Path, users: dict[str, str]) -> dict[str, Any]:
    """The ``auth`` config of htpasswd Basic auth for ``users`` (bcrypt, as Distribution wants)."""
    tmp.mkdir(parents=True, exist_ok=True)
    htpasswd = tmp / "htpasswd"
    # Cost 4 (the minimum): Distribution checks the hash on every request.
    htpasswd.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
            for user, password in users.items()
        )
    )
    return {"htpasswd": {"realm": "dockyard-test", "path": str(htpasswd)}}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


@dataclass
class TokenRequest:
    """One request the token server answered."""

    method: str
    user: str | None
    scopes: list[str]


@dataclass
class TokenServer:
    """A token server (auth/token.md) signing JWTs that Distribution verifies.

    ``users`` maps a user to (password, allowed actions); anonymous requests get a token
    granting nothing, as Docker Hub's do for private repositories. A refresh token in
    ``refresh_tokens`` (user by token) works for OAuth2's POST form.
    """

    users: dict[str, tuple[str, frozenset[str]]]
    expires_in: int = 300
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self, tmp: Path) -> dict[str, Any]:
        """The ``auth`` config making a registry trust this server's tokens."""
        tmp.mkdir(parents=True, exist_ok=True)
        bundle = tmp / "token-ca.pem"
        bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(bundle),
            }
        }

    def issue(self, user: str | None, scopes: list[str], service: str) -> str:
        """A signed JWT for ``user`` granting the requested actions it is allowed."""
        allowed = self.users[user][1] if user else frozenset()
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        # JWS wants ES256 signatures as the raw 32-byte r and s, not DER.
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.command == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            form = parse_qs(handler.rfile.read(length).decode())
            user = self.refresh_tokens.get(form.get("refresh_token", [""])[0])
            scopes = form.get("scope", [""])[0].split()
            self.requests.append(TokenRequest("POST", user, scopes))
            if user is None:
                return _reply(handler, 401, {"error": "invalid_grant"})
            token = self.issue(user, scopes, form.get("service", [SERVICE])[0])
            return _reply(handler, 200, {"access_token": token, "expires_in": self.expires_in})
        query = parse_qs(urlsplit(handler.path).query)
        scopes = query.get("scope", [])
        user = None
        authorization = handler.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if name not in self.users or self.users[name][0] != password:
                self.requests.append(TokenRequest("GET", name, scopes))
                return _reply(handler, 401, {"details": "incorrect username or password"})
            user = name
        self.requests.append(TokenRequest("GET", user, scopes))
        token = self.issue(user, scopes, query.get("service", [SERVICE])[0])
        _reply(handler, 200, {"token": token, "expires_in": self.expires_in})

    @contextlib.contextmanager
    def serve(self) -> Iterator[TokenServer]:
        """Run the server in a thread while the block runs."""
        with ScriptedServer(self._handle, port=self.port):
            yield self


def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class ScriptedServer:
    """An HTTP/1.1 server on 127.0.0.1 whose every request is answered by ``respond``."""

    def __init__(
        self,
        respond: Callable[[http.server.BaseHTTPRequestHandler], None],
        port: int = 0,
    ) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                respond(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = _QuietServer(("127.0.0.1", port), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
