"""deploy/compose.yaml, with no Docker engine: valid for the Compose Specification (its JSON schema, vendored from
compose-spec/compose-spec's schema/compose-spec.json), and true to relance (real settings, real commands, the two
database roles, a metrics address for every worker)."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url

from services.cli.app import build_parser
from shared.config import ConfigurationError, known_variables, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
WORKERS = {"ingest", "escalation", "relay", "notifier", "jobs"}


@cache
def compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # merge keys (<<) resolved
    return document


def compose() -> dict[str, Any]:
    return copy.deepcopy(compose_file())


@cache
def validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))


def relance_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services running the relance image (built from deploy/Dockerfile)."""
    return {name: service for name, service in document["services"].items() if "build" in service}


def environment(service: dict[str, Any]) -> dict[str, str]:
    given = service.get("environment", {})
    if isinstance(given, list):
        return dict(item.partition("=")[::2] for item in given)
    return {name: str(value) for name, value in given.items()}


def test_the_compose_file_is_valid_for_the_compose_specification() -> None:
    errors = sorted(validator().iter_errors(compose()), key=str)
    assert errors == [], "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["services"]["ingest"].update(deploy={"replicas": [3]}),
        lambda d: d["services"]["relay"].update(commands=["worker", "relay"]),
        lambda d: d["services"]["notifier"].update(depends_on={"migrate": {"condition": "finished"}}),
    ],
    ids=["wrong-type", "unknown-key", "wrong-value"],
)
def test_a_broken_compose_file_fails_the_schema(breakage: Any) -> None:
    document = compose()
    breakage(document)
    assert list(validator().iter_errors(document))


def test_every_relance_variable_is_a_setting_and_every_command_a_relance_command() -> None:
    services = relance_services(compose())
    assert WORKERS | {"migrate"} <= set(services)
    for name, service in services.items():
        unknown = {v for v in environment(service) if v.startswith("RELANCE_")} - known_variables()
        assert unknown == set(), name
        command = service["command"]
        try:
            build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"{name}: `relance {' '.join(command)}` is not a relance command")


def test_the_migration_runs_as_the_owner_and_the_workers_as_the_runtime_role() -> None:
    services = relance_services(compose())
    migrate = environment(services["migrate"])
    assert services["migrate"]["command"] == ["db", "upgrade", "--runtime-role", "relance_app"]
    assert (
        make_url(migrate["RELANCE_DATABASE_URL"]).username == "relance" and "RELANCE_RUNTIME_ROLE_PASSWORD" in migrate
    )
    for name in WORKERS:
        service = services[name]
        assert make_url(environment(service)["RELANCE_DATABASE_URL"]).username == "relance_app", name
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name


def test_every_worker_serves_its_metrics_on_quorum_queues_and_is_health_checked_on_readyz() -> None:
    services = relance_services(compose())
    for name in WORKERS:
        env = environment(services[name])
        assert env["RELANCE_METRICS_ADDRESS"] == "0.0.0.0:9100", name
        assert env["RELANCE_QUEUE_TYPE"] == "quorum", name
        assert "http://127.0.0.1:9100/readyz" in " ".join(services[name]["healthcheck"]["test"]), name
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_the_settings_each_service_is_given_are_valid() -> None:
    for name, service in relance_services(compose()).items():
        # Given the environment compose gives the service, with the defaults of its ${VARIABLE:-default}
        given = {key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value) for key, value in environment(service).items()}
        values = {key.removeprefix("RELANCE_").lower(): value for key, value in given.items()}
        # When relance reads it, then it is valid
        try:
            load_settings(**values)
        except ConfigurationError as exc:
            pytest.fail(f"{name}: {exc}")
