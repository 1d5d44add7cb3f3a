"""The worker's HTTP server: the registry at /metrics, liveness and readiness as status codes with a JSON body."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from shared.config import ConfigurationError
from shared.observability.health import Health
from shared.observability.metrics import RelayMetrics
from shared.observability.server import MetricsServer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, RelayMetrics, Health, Clock]]:
    clock = Clock()
    metrics = RelayMetrics()
    health = Health("relay", metrics, live_seconds=60, database=lambda: None, broker=True, clock=clock)
    server = MetricsServer("127.0.0.1:0", metrics.registry, health).start()
    yield server, metrics, health, clock
    server.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_are_served_in_the_prometheus_text_format(
    served: tuple[MetricsServer, RelayMetrics, Health, Clock],
) -> None:
    server, metrics, _, _ = served
    metrics.published.inc(7)
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert 'relance_commands_published_total{transport="amqp"} 7.0' in body.decode()


def test_livez_and_readyz_answer_503_with_what_is_wrong(
    served: tuple[MetricsServer, RelayMetrics, Health, Clock],
) -> None:
    server, _, health, clock = served
    # Given a worker whose loop beats but whose broker is not connected yet
    assert get(server.url + "/livez")[0] == 200
    status, content_type, body = get(server.url + "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert orjson.loads(body)["not_ready"] == ["broker"]
    # When it connects, it is ready; when its loop is stuck past the limit, it is not alive
    health.broker_connected()
    assert get(server.url + "/readyz")[0] == 200
    clock.now += 61
    status, _, body = get(server.url + "/livez")
    assert status == 503 and orjson.loads(body)["live"] is False


def test_an_unknown_path_is_a_404_naming_the_paths_served(
    served: tuple[MetricsServer, RelayMetrics, Health, Clock],
) -> None:
    server, _, _, _ = served
    status, _, body = get(server.url + "/health")
    assert status == 404 and b"/metrics, /livez or /readyz" in body


def test_an_address_in_use_stops_start_up_saying_which_setting_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = RelayMetrics()
        with pytest.raises(
            ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}: .*RELANCE_METRICS_ADDRESS"
        ):
            MetricsServer(f"127.0.0.1:{port}", metrics.registry, Health("relay"))
