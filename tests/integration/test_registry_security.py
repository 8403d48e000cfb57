"""The schema registry behind TLS and basic auth, as a hosted registry is: a loopback HTTPS
proxy (certificate from a throw-away CA made with trustme) that asks for a password, in front
of the local stack's Apicurio. Tutti's registry client logs in and verifies the certificate
with kafka.registry_*; a wrong password or an unknown CA is refused naming the setting."""

from __future__ import annotations

import base64
import dataclasses
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from orchestrator.admin import register_schemas
from orchestrator.config import Settings
from orchestrator.errors import StackError

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

USER, PASSWORD = "registry-user", "registry-password-123"


class _Proxy(BaseHTTPRequestHandler):
    upstream = ""

    def _forward(self) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._answer(401, b'{"error_code": 40101, "message": "Unauthorized"}')
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        request = urllib.request.Request(
            self.upstream + self.path.removeprefix("/registry"),
            data=body,
            method=self.command,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self._answer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            self._answer(exc.code, exc.read())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def secured_registry(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL of the TLS + basic auth proxy, the CA file that signed its certificate)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "registry-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = type("Proxy", (_Proxy,), {"upstream": settings.kafka.schema_registry_url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/registry", ca_file
    finally:
        server.shutdown()
        server.server_close()


def _through(settings: Settings, url: str, **kafka: object) -> Settings:
    return dataclasses.replace(
        settings, kafka=dataclasses.replace(settings.kafka, schema_registry_url=url, **kafka)
    )


def test_the_registry_client_logs_in_over_tls(
    settings: Settings, secured_registry: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca_file = secured_registry
    secret = tmp_path / "registry.password"
    secret.write_text(PASSWORD + "\n")
    secured = _through(
        settings,
        url,
        registry_username=USER,
        registry_password_file=secret,
        registry_ca_file=ca_file,
    )
    ids = register_schemas(secured)
    assert ids and ids == register_schemas(settings)  # the same registry, reached both ways


def test_a_wrong_registry_password_is_refused_naming_the_setting(
    settings: Settings, secured_registry: tuple[str, Path]
) -> None:
    url, ca_file = secured_registry
    wrong = _through(
        settings,
        url,
        registry_username=USER,
        registry_password="not-it",
        registry_ca_file=ca_file,
    )
    with pytest.raises(StackError, match=r"kafka\.registry_password") as refused:
        register_schemas(wrong)
    assert "not-it" not in str(refused.value)


def test_an_unknown_registry_ca_is_refused_naming_the_setting(
    settings: Settings, secured_registry: tuple[str, Path]
) -> None:
    url, _ = secured_registry
    untrusting = _through(settings, url, registry_username=USER, registry_password=PASSWORD)
    with pytest.raises(StackError, match=r"kafka\.registry_ca_file"):
        register_schemas(untrusting)
