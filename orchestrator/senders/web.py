"""The sender's HTTP endpoints on ``--metrics-port``: ``/metrics`` (Prometheus), ``/healthz``
(the asyncio loop is responsive: orchestrator.health.LoopWatch) and ``/readyz`` (partitions of
``actions.<channel>`` assigned to this sender and its provider not in an outage). Served from a
thread, as prometheus_client's own server is, so a busy loop cannot hide the metrics."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from orchestrator.health import LoopWatch

__all__ = ["SenderHealth", "serve"]


@dataclass
class SenderHealth:
    """What the probes read; written by the sender loop (plain attributes: one writer)."""

    watch: LoopWatch = field(default_factory=LoopWatch)
    #: Partitions of the actions topic assigned now (-1: not yet known).
    assigned: int = -1
    #: The provider is in an outage (unreachable since this many seconds), or None.
    provider_down_s: float | None = None

    def readiness(self) -> list[str]:
        reasons = []
        if self.assigned <= 0:
            reasons.append("no partitions assigned")
        if self.provider_down_s is not None:
            reasons.append(f"provider unreachable for {self.provider_down_s:.0f} s")
        return reasons


def serve(port: int, health: SenderHealth, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the endpoints in a daemon thread; returns the server (its port if ``port`` is 0)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
                self._send(200, encoder(REGISTRY), content_type)
            elif path == "/healthz":
                self._json(200 if health.watch.alive else 503, health.watch.report())
            elif path == "/readyz":
                reasons = health.readiness()
                body = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
                self._json(503 if reasons else 200, body)
            else:
                self._json(
                    404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]}
                )

        def _json(self, status: int, body: Any) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds are not log lines

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sender-web", daemon=True).start()
    return server
