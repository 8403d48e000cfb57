"""Real provider endpoints on 127.0.0.1 for the sender tests: an SMTP server and a webhook.

Both run in background threads, record what they receive, and can be told to answer with
errors for chosen recipients or requests, the way real providers do.
"""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.ports import free_port


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made by the real openssl, and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes = b""  # the DATA as received (to check header encodings on the wire)


class SmtpSink:
    """aiosmtpd handler: stores messages; recipients starting with ``bounce`` get 550,
    ``defer`` get 451."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self._lock = threading.Lock()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.startswith("bounce"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("defer"):
            return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self.messages.append(
                ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), msg, raw)  # type: ignore[arg-type]
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    """Plain SMTP, or with ``tls``: STARTTLS required and AUTH (user ``tutti``, ``password``)."""

    USER, PASSWORD = "tutti", "s3cret-pass"

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.sink = SmtpSink()
        self.port = free_port()
        extra: dict[str, Any] = {}
        if tls is not None:
            extra = {
                "tls_context": tls,
                "require_starttls": True,
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": True,
            }
        self._controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **extra)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (self.USER, self.PASSWORD)
        # handled=False: let aiosmtpd answer "535 ... credentials invalid" itself.
        return AuthResult(success=ok, handled=False)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[ReceivedMail]:
        return self.sink.messages


@dataclass
class WebhookRequest:
    headers: dict[str, str]
    body: bytes
    #: When the request was read (time.time()), for end-to-end latencies.
    received_at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookState:
    requests: list[WebhookRequest] = field(default_factory=list)
    #: idempotency key -> statuses to answer before answering 200
    script: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: requests answered 200, per Idempotency-Key (a gateway honouring the key delivers once)
    accepted: Counter[str] = field(default_factory=Counter)
    delay_s: float = 0.0
    #: Until this time.monotonic(), every request is answered 500 (a gateway outage).
    fail_until: float = 0.0
    #: Requests being handled now, and the most ever at once (the client's back-pressure).
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request resets its connection: expected in these tests.
        return None


def _destination(body: bytes) -> str:
    try:
        return str(json.loads(body).get("destination"))
    except ValueError:
        return "?"


class WebhookServer:
    """A gateway endpoint: records requests, answers scripted statuses, counts deliveries."""

    def __init__(self, port: int = 0) -> None:
        self.state = WebhookState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Idempotency-Key", "")
                with state.lock:
                    state.requests.append(WebhookRequest(dict(self.headers.items()), body))
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                    script = state.script.get(key)
                    if time.monotonic() < state.fail_until:
                        status = 500
                    else:
                        status = script.pop(0) if script else 200
                    first = status == 200 and key not in state.accepted
                    if status == 200:
                        state.accepted[key] += 1
                try:
                    self._answer(state, key, body, status, first)
                finally:
                    with state.lock:
                        state.in_flight -= 1

            def _answer(
                self, state: WebhookState, key: str, body: bytes, status: int, first: bool
            ) -> None:
                if state.delay_s:
                    time.sleep(state.delay_s)
                payload = json.dumps(
                    {"message_id": f"gw-{key}", "duplicate": not first}
                    if status == 200
                    # Like real gateways, errors quote the destination back.
                    else {"error": f"status {status} for {_destination(body)}"}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status in (429, 503):
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = _QuietServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/deliver"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def requests(self) -> list[WebhookRequest]:
        return self.state.requests
