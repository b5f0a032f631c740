"""The network-free parts of registry authentication, and a token server that misbehaves."""

from __future__ import annotations

import http.server

import pytest

from dockyard.errors import InvalidArgument
from dockyard.images.registry import Credentials, RegistryClient
from dockyard.images.registry.auth import Challenge, choose_challenge, parse_challenges
from interop.registry_fixtures import ScriptedServer


def test_challenges_with_quoted_commas_and_several_schemes() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push repository:c:pull", Basic realm="say \\"hi\\", ok"'
    )
    bearer, basic = parse_challenges(header)
    assert bearer == Challenge(
        "bearer",
        {
            "realm": "https://auth.example/token",
            "service": "registry.example",
            "scope": "repository:a/b:pull,push repository:c:pull",
        },
    )
    assert bearer.scopes == ("repository:a/b:pull,push", "repository:c:pull")
    assert basic == Challenge("basic", {"realm": 'say "hi", ok'})
    assert choose_challenge([basic, bearer]) is bearer
    assert parse_challenges("Basic realm=plain") == [Challenge("basic", {"realm": "plain"})]
    assert choose_challenge(parse_challenges("Negotiate")) is None


def test_a_token_server_answering_html_is_named() -> None:
    def token_server(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = b"<html>Sign in</html>"
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with ScriptedServer(token_server) as tokens:

        def registry(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(401)
            handler.send_header(
                "WWW-Authenticate", f'Bearer realm="http://{tokens.host}/token",service="x"'
            )
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with (
            ScriptedServer(registry) as server,
            RegistryClient(server.host, credentials=Credentials("u", "p")) as client,
            pytest.raises(InvalidArgument) as error,
        ):
            client.ping()
    message = str(error.value)
    assert message == (
        f"token server {tokens.host} of registry {server.host} answered with an HTML page,"
        " not a JSON token"
    )
