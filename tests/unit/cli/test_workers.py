"""``relance worker KIND --metrics-address``: checked by the parser, handed to the worker in its settings."""

from __future__ import annotations

import sys
import types

import pytest

from services.cli.app import build_parser
from services.cli.workers import run_worker
from shared.config import ConfigurationError, Settings, load_settings


@pytest.mark.parametrize("kind", ["ingest", "escalation", "relay", "notifier", "webhook"])
def test_every_worker_takes_a_metrics_address_that_overrides_the_setting(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Settings] = []
    fake = types.ModuleType("fake_worker")

    def run(settings: Settings) -> int:
        seen.append(settings)
        return 0

    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_worker", fake)
    args = build_parser().parse_args(["worker", kind, "--metrics-address", "127.0.0.1:9187"])
    args.worker_module = "fake_worker"
    assert run_worker(args, load_settings(metrics_address="0.0.0.0:9100")) == 0
    assert seen[0].metrics_address == "127.0.0.1:9187"


def test_a_metrics_address_that_is_not_host_and_port_is_refused_saying_what_to_write(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "relay", "--metrics-address", "9100"])
    assert "must be host:port, e.g. 0.0.0.0:9100" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["9100", "host:", ":9100", "host:99999", "host:http", "a b:1"])
def test_the_setting_refuses_what_cannot_be_listened_on(value: str) -> None:
    with pytest.raises(ConfigurationError, match="RELANCE_METRICS_ADDRESS: must be host:port"):
        load_settings(metrics_address=value)


@pytest.mark.parametrize("value", ["0.0.0.0:9100", "127.0.0.1:0", "[::]:9100", "localhost:9100"])
def test_the_setting_takes_hosts_and_ports(value: str) -> None:
    assert load_settings(metrics_address=value).metrics_address == value
