"""POST /api/v1/ingest on SQLite: a tiny app mounting the route, with the ingestor the CLI composes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.cli.ingest_http import http_ingest_port
from services.cli.workspace import compose
from services.workspace import ingest
from services.workspace.app import create_app
from shared.config import ConfigurationError, Settings, load_settings, read_ingest_secrets
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from shared.signing import signature
from tests.unit.workspace.ingest_cases import MAX_MESSAGE_BYTES, OTHER_TENANT, TENANT, cases, invoice, raw

SECRET = "s3cret-of-acme-fr-0123456789"
OTHER_SECRET = "s3cret-of-acme-de-0123456789"


@dataclass(frozen=True)
class Ports:
    settings: Settings
    ledger: Any
    ingest: ingest.IngestPort | None
    now: Any


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "ingest-secrets.yaml"
    path.write_text(f"{TENANT}: {SECRET}\n{OTHER_TENANT}: '{OTHER_SECRET}'\n", encoding="utf-8")
    return path


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[Ledger]:
    value = Ledger(make_engine(sqlite_url))
    yield value
    value.engine.dispose()


def client_for(ledger: Ledger, secrets_file: Path | None, **settings: Any) -> TestClient:
    ports = Ports(
        settings=Settings(database_url="sqlite://", ingest_secrets=secrets_file, **settings),
        ledger=lambda: ledger,
        ingest=http_ingest_port(MAX_MESSAGE_BYTES),
        now=lambda: datetime.now(UTC),
    )
    app = FastAPI()
    app.include_router(ingest.router(ports))
    return TestClient(app)


@pytest.fixture
def client(ledger: Ledger, secrets_file: Path) -> TestClient:
    return client_for(ledger, secrets_file)


def bearer(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def array(bodies: list[bytes]) -> bytes:
    return b"[" + b",\n ".join(bodies) + b"]"


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if at is None else at)
    return {"X-Relance-Timestamp": str(timestamp), "X-Relance-Signature": signature(secret, timestamp, body)}


def test_a_batch_answers_what_was_applied_what_was_a_duplicate_and_what_was_refused_and_why(
    client: TestClient, ledger: Ledger
) -> None:
    # Given every kind of message AMQP ingest knows (bad JSON cannot sit in an array: it is sent alone)
    sent = cases(datetime.now(UTC))
    in_array = [(outcome, body) for outcome, body in sent if outcome != "not_json"]
    # When they are posted as one array
    answer = client.post(ingest.PATH, content=array([body for _, body in in_array]), headers=bearer())
    # Then each one is answered for at its place in the array
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["applied"] == ["E-0", "E-1", "E-2"]
    assert result["duplicates"] == ["E-1", "E-5"]
    refused = {r["index"]: r for r in result["refused"]}
    expected = {i: outcome for i, (outcome, _) in enumerate(in_array) if outcome not in ("applied", "duplicate")}
    assert {i: r["kind"] for i, r in refused.items()} == expected
    assert all(r["reason"] for r in refused.values())
    by_id = {r["event_id"]: r for r in result["refused"]}
    assert "INV-1" in by_id["E-6"]["reason"]
    assert "after relance received the message" in by_id["E-FUT"]["reason"]
    assert str(MAX_MESSAGE_BYTES) in next(r["reason"] for r in refused.values() if r["kind"] == "oversize")
    # and a lone body that is not JSON is refused as on AMQP
    lone = client.post(ingest.PATH, content=b"this is not json {", headers=bearer())
    assert lone.status_code == 200
    assert [(r["index"], r["kind"]) for r in lone.json()["refused"]] == [(0, "not_json")]
    # and the ledger holds the valid events once, folded
    assert [e.event_id for e in ledger.read_stream(TENANT, "C-1")] == ["E-0", "E-1", "E-2"]
    assert ledger.state(TENANT, "C-1").balances() == {"EUR": Decimal("600.00")}
    assert ledger.read_stream(TENANT, "C-3") == []
    assert ledger.verify().ok


def test_the_same_body_sent_again_is_all_duplicates(client: TestClient, ledger: Ledger) -> None:
    body = array([raw(invoice("E-1", "C-1", "INV-1", "10.00")), raw(invoice("E-2", "C-1", "INV-2", "20.00"))])
    first = client.post(ingest.PATH, content=body, headers=bearer()).json()
    again = client.post(ingest.PATH, content=body, headers=bearer()).json()
    assert first == {"applied": ["E-1", "E-2"], "duplicates": [], "refused": []}
    assert again == {"applied": [], "duplicates": ["E-1", "E-2"], "refused": []}
    assert len(ledger.read_stream(TENANT, "C-1")) == 2


def test_a_lone_envelope_is_one_message(client: TestClient) -> None:
    answer = client.post(ingest.PATH, content=raw(invoice("E-1", "C-1", "INV-1", "10.00")), headers=bearer())
    assert answer.json() == {"applied": ["E-1"], "duplicates": [], "refused": []}


def test_a_message_for_another_tenant_is_refused_and_the_others_applied(client: TestClient, ledger: Ledger) -> None:
    foreign = {**invoice("E-X", "C-1", "INV-X", "10.00"), "tenant": OTHER_TENANT}
    body = array([raw(invoice("E-1", "C-1", "INV-1", "10.00")), raw(foreign)])
    result = client.post(ingest.PATH, content=body, headers=bearer()).json()
    assert result["applied"] == ["E-1"]
    assert [(r["index"], r["event_id"], r["kind"]) for r in result["refused"]] == [(1, "E-X", "wrong_tenant")]
    assert OTHER_TENANT in result["refused"][0]["reason"]
    assert ledger.read_stream(OTHER_TENANT, "C-1") == []
    # and with the other tenant's secret, the same message is its own
    other = client.post(ingest.PATH, content=raw(foreign), headers=bearer(OTHER_SECRET)).json()
    assert other["applied"] == ["E-X"]


def test_a_signed_body_is_accepted_as_the_tenant_whose_secret_signed_it(client: TestClient, ledger: Ledger) -> None:
    body = raw(invoice("E-1", "C-1", "INV-1", "10.00"))
    answer = client.post(ingest.PATH, content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    assert answer.json()["applied"] == ["E-1"]
    foreign = raw({**invoice("E-2", "C-1", "INV-2", "10.00"), "tenant": OTHER_TENANT})
    assert client.post(ingest.PATH, content=foreign, headers=signed(foreign, OTHER_SECRET)).json()["applied"] == ["E-2"]


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "no credentials"),
        ({"Authorization": "Bearer not-a-secret-of-anyone"}, "no tenant's ingest secret"),
        ({"Authorization": f"Basic {SECRET}"}, "not `Bearer <secret>`"),
        ({"Authorization": "Bearer "}, "not `Bearer <secret>`"),
        ({"X-Relance-Signature": "sha256=00"}, "needs X-Relance-Timestamp"),
        ({"X-Relance-Signature": "sha256=00", "X-Relance-Timestamp": "yesterday"}, "unix seconds"),
    ],
)
def test_a_request_without_valid_credentials_is_401_saying_what_to_send(
    client: TestClient, ledger: Ledger, headers: dict[str, str], says: str
) -> None:
    answer = client.post(ingest.PATH, content=raw(invoice("E-1", "C-1", "INV-1", "10.00")), headers=headers)
    assert answer.status_code == 401
    assert says in answer.json()["detail"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert ledger.read_stream(TENANT, "C-1") == []


def test_a_wrong_or_stale_signature_is_401(client: TestClient, ledger: Ledger) -> None:
    body = raw(invoice("E-1", "C-1", "INV-1", "10.00"))
    tampered = body.replace(b"10.00", b"99.00")
    wrong = client.post(ingest.PATH, content=tampered, headers=signed(body))
    assert wrong.status_code == 401
    assert "not the HMAC of this body" in wrong.json()["detail"]
    stale = client.post(ingest.PATH, content=body, headers=signed(body, at=time.time() - 301))
    assert stale.status_code == 401
    assert "within 300 seconds" in stale.json()["detail"]
    unknown_key = client.post(ingest.PATH, content=body, headers=signed(body, secret="x" * 32))
    assert unknown_key.status_code == 401
    assert ledger.read_stream(TENANT, "C-1") == []


def test_a_body_over_the_limit_is_413(ledger: Ledger, secrets_file: Path) -> None:
    client = client_for(ledger, secrets_file, ingest_max_body_bytes=4096)
    body = array([raw(invoice(f"E-{n}", "C-1", f"INV-{n}", "10.00")) for n in range(30)])
    assert len(body) > 4096
    answer = client.post(ingest.PATH, content=body, headers=bearer())
    assert answer.status_code == 413
    assert "4096" in answer.json()["detail"]
    streamed = client.post(ingest.PATH, content=iter([body[:2000], body[2000:]]), headers=bearer())
    assert streamed.status_code == 413  # no Content-Length: counted while reading
    assert ledger.read_stream(TENANT, "C-1") == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "the body is empty"),
        (b"[]", "the array is empty"),
        (b'[{"a": 1}, {"b": ', "the array is not JSON"),
        (b'[{"a": 1} {"b": 2}]', "expected ',' or ']'"),
        (b'[{"a": 1}] trailing', "follows its closing"),
        (b"[" + b",".join([b"{}"] * 501) + b"]", "more than 500"),
    ],
)
def test_a_body_that_cannot_be_read_as_messages_is_400(client: TestClient, body: bytes, says: str) -> None:
    answer = client.post(ingest.PATH, content=body, headers=bearer())
    assert answer.status_code == 400
    assert says in answer.json()["detail"]


def test_without_secrets_http_ingest_is_off_and_says_how_to_turn_it_on(ledger: Ledger) -> None:
    answer = client_for(ledger, None).post(ingest.PATH, content=b"{}", headers=bearer())
    assert answer.status_code == 503
    assert "RELANCE_INGEST_SECRETS" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read"),
        ("acme-fr: [unclosed\n", "not valid YAML"),
        ("- acme-fr\n", "YAML mapping of tenants to secrets"),
        ("acme-fr: short\n", "shorter than 16 characters"),
        ("acme-fr: 12345678901234567890\n", "must be a string"),
        ("Acme FR: 0123456789abcdef0123\n", "is not a tenant"),
        ("a: 0123456789abcdef0123\nb: 0123456789abcdef0123\n", "a and b have the same secret"),
    ],
)
def test_a_secrets_file_relance_cannot_use_stops_start_up_saying_what_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, says: str
) -> None:
    path = tmp_path / "secrets.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=says):
        read_ingest_secrets(path)
    monkeypatch.setenv("RELANCE_INGEST_SECRETS", str(path))
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert "RELANCE_INGEST_SECRETS" in str(error.value)
    assert says in str(error.value)
    assert "0123456789abcdef0123" not in str(error.value)


def test_the_secrets_file_is_read_as_tenant_and_secret(secrets_file: Path) -> None:
    secrets = read_ingest_secrets(secrets_file)
    assert {tenant: s.get_secret_value() for tenant, s in secrets.items()} == {
        TENANT: SECRET,
        OTHER_TENANT: OTHER_SECRET,
    }
    assert isinstance(secrets[TENANT], SecretStr)


def test_the_answer_is_documented_in_openapi(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    operation = app.openapi()["paths"][ingest.PATH]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "413", "503"}
    assert json.dumps(operation["requestBody"])


def test_the_workspace_serves_http_ingest_with_the_ingestor_its_composer_hands_over(
    sqlite_url: str, secrets_file: Path
) -> None:
    # Given the workspace as `relance workspace` composes it, sign-in and all
    ports = compose(load_settings(database_url=sqlite_url, ingest_secrets=secrets_file))
    client = TestClient(create_app(ports))
    body = raw(invoice("E-1", "C-1", "INV-1", "10.00"))
    # When an ERP posts with its secret, no session and no CSRF token (it is not a browser)
    answer = client.post(ingest.PATH, content=body, headers=bearer())
    # Then the event is applied, and without the secret nothing is
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"applied": ["E-1"], "duplicates": [], "refused": []}
    assert client.post(ingest.PATH, content=body).status_code == 401
    assert [e.event_id for e in ports.ledger().read_stream(TENANT, "C-1")] == ["E-1"]
    assert ingest.PATH in client.get("/api/openapi.json").json()["paths"]
