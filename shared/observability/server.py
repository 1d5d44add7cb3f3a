"""The HTTP server of one worker process: ``/metrics`` (Prometheus text format), ``/livez`` and ``/readyz`` (JSON).

A :class:`http.server.ThreadingHTTPServer` on a daemon thread: a scrape or a probe never waits for the worker's
loop, and the worker's loop never waits for one. ``/metrics`` serialises the worker's registry (the gauges that need
a query were set beforehand by their own thread, never per scrape); ``/readyz`` runs the readiness checks, the
database's answer kept a moment (:data:`~shared.observability.health.DATABASE_CHECK_SECONDS`).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from shared.config import ConfigurationError, listen_address
from shared.observability.health import Health

log = structlog.get_logger()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Health


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            # The text format 0.0.4, which every Prometheus reads (relance's names need nothing newer)
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_PLAIN_0_0_4)
        elif path == "/livez":
            self._json(*self.server.health.live())
        elif path == "/readyz":
            self._json(*self.server.health.ready())
        else:
            self._answer(404, b"not found: try /metrics, /livez or /readyz\n", "text/plain; charset=utf-8")

    def _json(self, ok: bool, body: dict[str, Any]) -> None:
        self._answer(200 if ok else 503, orjson.dumps(body) + b"\n", "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds is not worth a line; errors are answered, not logged


class MetricsServer:
    """Serves one worker's registry and health at ``address`` (``host:port``) until :meth:`close`."""

    def __init__(self, address: str, registry: CollectorRegistry, health: Health) -> None:
        host, port = listen_address(address)
        try:
            server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {address}: {exc.strerror or exc}; choose another RELANCE_METRICS_ADDRESS "
                "(or --metrics-address), e.g. 0.0.0.0:9100, or port 0 for any free port"
            ) from None
        server.registry = registry
        server.health = health
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics.serving", url=self.url, paths=["/metrics", "/livez", "/readyz"])
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
