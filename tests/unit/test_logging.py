"""Every line says who wrote it, and a condition every worker meets has one event name in all of them."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import shared.logging as relance_logging
from shared.logging import CONDITIONS, configure_logging, identify
from shared.observability import relance_version

ROOT = Path(__file__).resolve().parents[2]
# Where the workers' loops and what they run on log the database and the broker coming and going
WORKER_FILES = [
    ROOT / "shared/runtime.py",
    ROOT / "shared/broker/amqp.py",
    ROOT / "services/ingest/router.py",
    *sorted((ROOT / "services").glob("*/worker.py")),
]
# An event name that speaks of the database or the broker coming or going
CONDITION_LIKE = re.compile(
    r"(database|ledger|broker|db)[._]?(unavailable|unreachable|available|available_again|down|up|lost|connected|back)$"
    r"|\.consuming$|\.connected$"
)
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("info", "json")
    identify("cli")  # as a fresh CLI process is: an earlier test in this process may have named a worker
    yield capsys
    identify("cli")
    structlog.reset_defaults()


def test_every_line_carries_the_service_version_pid_and_host(json_lines: pytest.CaptureFixture[str]) -> None:
    # Given logging as a CLI command sets it up, then as a worker names itself
    log = structlog.get_logger()
    log.info("cli.something", n=1)
    identify("relay")
    log.info("relay.something", n=2)
    log.info("broker.connected", service="ingest")  # a line that names its service itself keeps it
    # Then each JSON line says who wrote it
    lines = [json.loads(line) for line in json_lines.readouterr().err.splitlines()]
    identity = {"version": relance_version(), "pid": os.getpid(), "host": socket.gethostname()}
    assert [line["service"] for line in lines] == ["cli", "relay", "ingest"]
    for line in lines:
        assert {key: line[key] for key in identity} == identity


def event_names(path: Path) -> list[ast.expr]:
    """The first argument of every ``log.<level>(...)`` call of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LEVELS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "log"
            and node.args
        ):
            found.append(node.args[0])
    return found


def test_the_workers_name_the_database_and_the_broker_coming_and_going_only_with_the_shared_names() -> None:
    used: set[str] = set()
    for path in WORKER_FILES:
        for name in event_names(path):
            where = f"{path.relative_to(ROOT)}:{name.lineno}"
            if isinstance(name, ast.JoinedStr):  # f"{service}.stop_requested": the service's own event
                tail = "".join(str(part.value) for part in name.values if isinstance(part, ast.Constant))
                assert not CONDITION_LIKE.search(tail), f"{where}: a shared condition named after the service"
                continue
            if isinstance(name, ast.Name):
                value = getattr(relance_logging, name.id, None)
                assert isinstance(value, str), f"{where}: {name.id} is not a constant of shared/logging.py"
            elif isinstance(name, ast.Constant) and isinstance(name.value, str):
                value = name.value
            else:
                continue
            if CONDITION_LIKE.search(value):
                assert value in CONDITIONS, f"{where}: {value!r} is not one of {sorted(CONDITIONS)}"
                used.add(value)
    assert used == set(CONDITIONS)  # and every name of the table is in use


def test_the_readme_lists_the_condition_names() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Logs\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE))
    assert listed == set(CONDITIONS)
