"""The webhook adapter without a network: signing and verification, its settings, backoff, the agenda's task."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import UTC, date, datetime

import pytest

from services.escalation.agenda import build_agenda, render_agenda
from services.webhook.worker import run, task_data, verify_signature
from shared.config import ConfigurationError, load_settings
from shared.ledger.outbox import Command
from shared.signing import signature
from tests.factories import Ev, customer, fold, invoice

SECRET = "s3cret-0123456789abcdef"
BODY = b'{"command_id":"esc-1","command":"erp.credit_block"}'
NOW = 1_780_000_000


def webhook_settings(**overrides: object) -> dict[str, object]:
    return {
        "erp_transport": "webhook",
        "webhook_url": "https://erp.example.com/relance",
        "webhook_secret": SECRET,
        **overrides,
    }


# ---------------------------------------------------------------------------------------------------- signing
def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, NOW, BODY) == f"sha256={expected}"
    assert signature(SECRET.encode(), str(NOW), BODY) == f"sha256={expected}"


def test_a_receiver_accepts_a_fresh_request_signed_with_the_shared_secret() -> None:
    header = signature(SECRET, NOW, BODY)
    assert verify_signature(SECRET, str(NOW), BODY, header, now=NOW)
    assert verify_signature(SECRET.encode(), NOW, BODY, header, now=NOW + 300)
    assert verify_signature(SECRET, str(NOW), BODY, header, now=NOW - 300)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "header", "now"),
    [
        ("another-secret-0123456789", str(NOW), BODY, None, NOW),  # not the shared secret
        (SECRET, str(NOW), BODY.replace(b"block", b"unblock"), None, NOW),  # body altered
        (SECRET, str(NOW + 1), BODY, None, NOW),  # timestamp altered
        (SECRET, str(NOW), BODY, None, NOW + 301),  # replayed too late
        (SECRET, str(NOW), BODY, None, NOW - 301),  # from too far in the future
        (SECRET, "yesterday", BODY, "sha256=00", NOW),  # not a unix time
        (SECRET, str(NOW), BODY, "", NOW),  # no signature
        (SECRET, str(NOW), BODY, "sha1=" + "0" * 40, NOW),  # another scheme
    ],
)
def test_a_receiver_refuses_what_was_not_signed_now_with_the_secret(
    secret: str, timestamp: str, body: bytes, header: str | None, now: int
) -> None:
    sent = signature(SECRET, NOW, BODY) if header is None else header
    assert not verify_signature(secret, timestamp, body, sent, now=now)


# ---------------------------------------------------------------------------------------------------- settings
def test_amqp_is_the_default_transport_and_needs_no_webhook_settings() -> None:
    settings = load_settings()
    assert settings.erp_transport == "amqp" and settings.webhook_url is None and settings.webhook_secret is None
    assert (settings.webhook_timeout, settings.webhook_max_attempts) == (10.0, 8)


def test_the_webhook_transport_names_each_missing_or_wrong_setting_and_never_echoes_the_secret() -> None:
    with pytest.raises(ConfigurationError) as missing:
        load_settings(erp_transport="webhook")
    assert "RELANCE_WEBHOOK_URL: required when RELANCE_ERP_TRANSPORT is webhook" in str(missing.value)
    assert "RELANCE_WEBHOOK_SECRET: required when RELANCE_ERP_TRANSPORT is webhook" in str(missing.value)
    with pytest.raises(ConfigurationError) as wrong:
        load_settings(**webhook_settings(webhook_url="ftp://erp.example.com/x", webhook_secret="tooshort-secret"))
    message = str(wrong.value)
    assert "RELANCE_WEBHOOK_URL: must be an http:// or https:// URL" in message
    assert "RELANCE_WEBHOOK_SECRET: must be at least 16 characters" in message
    assert "tooshort-secret" not in message and "got a hidden value" in message
    with pytest.raises(ConfigurationError, match="RELANCE_WEBHOOK_BACKOFF_MAX_SECONDS: must be at least"):
        load_settings(**webhook_settings(webhook_backoff_seconds=60, webhook_backoff_max_seconds=10))
    settings = load_settings(**webhook_settings())
    assert settings.webhook_secret is not None and SECRET not in repr(settings)


def test_the_webhook_worker_refuses_to_start_while_the_relay_delivers_erp_commands() -> None:
    with pytest.raises(ConfigurationError, match="RELANCE_ERP_TRANSPORT=webhook"):
        run(load_settings(), stop=threading.Event())


def test_the_delay_between_deliveries_doubles_up_to_the_ceiling() -> None:
    from services.webhook.worker import retry_delay

    settings = load_settings(**webhook_settings(webhook_backoff_seconds=1, webhook_backoff_max_seconds=8))
    for attempts, ceiling in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (30, 8)):
        delays = [retry_delay(settings, attempts) for _ in range(20)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, delays)


# ---------------------------------------------------------------------------------------------------- agenda, fold
def command(kind: str) -> Command:
    payload = {"command_id": "esc-9", "command": kind, "block_id": "B-1", "overdue": {"EUR": "900.00", "USD": "5"}}
    return Command(1, "acme-fr", "C-0042", "esc-9", kind, payload, datetime(2026, 12, 1, tzinfo=UTC), 8)


def test_a_dead_lettered_command_is_folded_harmlessly_and_its_task_reaches_the_agenda() -> None:
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    base = [customer("Boulangeries Martin SAS"), invoice("I-1", "900.00", due_date="2026-10-01")]
    dead = {"command_id": "esc-9", "command": "erp.credit_block", "attempts": 8, "last_error": "HTTP 503"}
    before = fold(base, customer_id="C-0042")
    task_created = Ev("task.created", task_data(command("erp.credit_block"), at), "whk-task")
    after = fold([*base, Ev("command.dead_lettered", dead, "whk-dead"), task_created], customer_id="C-0042")
    # The dead letter changes nothing in the state; the task is kept with the command it is about
    assert (after.invoices, after.credit_block, after.balances()) == (before.invoices, None, before.balances())
    (task,) = after.tasks.values()
    assert task["kind"] == "erp_command_failed" and task["command"] == "erp.credit_block"
    assert task["due_on"] == "2026-12-01" and task["currency"] == "EUR"
    assert "block the customer's credit in the ERP by hand" in task["note"] and "esc-9" in task["note"]
    # And the collector's agenda shows it under a title saying what to do
    items = build_agenda([after], date(2026, 12, 1))
    assert [(i.kind, i.title) for i in items] == [
        ("erp_command_failed", "ERP did not receive credit block: block by hand")
    ]
    assert "ERP did not receive credit block" in render_agenda(items, "acme-fr", date(2026, 12, 1))
    unblock = task_data(command("erp.credit_unblock"), at)
    assert "unblock the customer's credit" in unblock["note"]
    state = fold([*base, Ev("task.created", unblock, "whk-task-2")], customer_id="C-0042")
    assert [i.title for i in build_agenda([state], date(2026, 12, 2))] == [
        "ERP did not receive credit unblock: unblock by hand"
    ]


def test_the_receiver_example_in_the_readme_verifies_what_the_worker_signs() -> None:
    from pathlib import Path

    readme = Path(__file__).resolve().parents[3].joinpath("README.md").read_text()
    example = readme.split("relance:\n```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) == 6
    namespace: dict[str, object] = {}
    exec(example, namespace)
    verified = namespace["verified"]
    assert callable(verified)
    timestamp = str(int(datetime.now(UTC).timestamp()))
    sent = signature(SECRET, timestamp, BODY)
    assert verified(SECRET.encode(), timestamp, BODY, sent)
    assert not verified(SECRET.encode(), timestamp, BODY + b" ", sent)
    assert not verified(b"another-secret-0123456789", timestamp, BODY, sent)
    assert not verified(SECRET.encode(), str(NOW), BODY, signature(SECRET, NOW, BODY))  # too old
    assert not verified(SECRET.encode(), "", BODY, signature(SECRET, "", BODY))
