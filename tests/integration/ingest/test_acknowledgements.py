"""The ERP's acknowledgements through the real ingest path into a real ledger (both engines), then the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.cli import main
from services.ingest.service import Delivery, Ingestor
from shared.ledger.db import make_engine
from shared.ledger.store import Incoming, Ledger

pytestmark = pytest.mark.integration

TENANT, CUSTOMER, BLOCK = "acme-fr", "C-0042", "esc-6c0f5b1e9a3d4b7f8e2a1c0d9b8a7f6e"


def message(event_id: str, data: dict[str, Any], at: str = "2026-12-01T08:00:04Z") -> Delivery:
    body = {
        "event_id": event_id,
        "event_type": "erp.command_acknowledged",
        "tenant": TENANT,
        "customer_id": CUSTOMER,
        "occurred_at": at,
        "data": data,
    }
    return Delivery(body=json.dumps(body).encode(), routing_key="erp.command_acknowledged")


def ack(command_id: str = BLOCK, status: str = "applied", **extra: str) -> dict[str, Any]:
    return {"command_id": command_id, "command": "erp.credit_block", "status": status, **extra}


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    # Given an overdue invoice and the block relance decided (its event id is the command id the ERP received)
    invoice = {"invoice_id": "INV-1", "number": "F-1", "issue_date": "2026-09-01", "due_date": "2026-10-01"}
    invoice |= {"currency": "EUR", "amount": "900.00"}
    block = {"block_id": "B-1", "reason": "level", "overdue": {"EUR": "900.00"}, "as_of": "2026-12-01T08:00:00Z"}
    at = datetime(2026, 12, 1, 8, tzinfo=UTC)
    ledger.record(
        [
            Incoming(TENANT, CUSTOMER, "erp-inv-1", "invoice.issued", invoice, at),
            Incoming(TENANT, CUSTOMER, BLOCK, "credit.blocked", block, at, metadata={"source": "escalation"}),
        ]
    )
    yield ledger
    engine.dispose()


def test_acknowledgements_go_through_ingest_dedupe_and_dead_letters(ledger: Ledger) -> None:
    ingestor = Ingestor(ledger)
    # When the ERP acknowledges the block, a command relance does not know, and sends junk
    result = ingestor.process(
        [
            message("ack-1", ack(erp_reference="BLK-917")),
            message("ack-2", ack("esc-unknown", "rejected", reason="no such customer")),
            message("ack-3", ack(status="rejected")),  # a refusal without a reason
            message("ack-4", {**ack(), "command": "erp.delete_customer"}),
        ]
    )
    # Then the two valid ones are applied (the unknown command too) and the others dead-lettered with the reason
    assert result.applied == 2
    reasons = {r.event_id: (r.kind, r.reason) for r in result.rejections}
    assert reasons["ack-3"] == (
        "schema",
        "data: reason is required when status is rejected: say why the ERP refused the command",
    )
    assert reasons["ack-4"][0] == "schema" and "data.command" in reasons["ack-4"][1]
    # And redelivery, or the same acknowledgement under a new event id, changes nothing
    again = ingestor.process(
        [message("ack-1", ack(erp_reference="BLK-917")), message("ack-9", ack(erp_reference="BLK-917"))]
    )
    assert (again.applied, again.duplicates, again.rejections) == (0, 2, [])
    # And the state, cached or folded from the log alone, shows the block acknowledged and the refusal as a task
    for state in (ledger.state(TENANT, CUSTOMER), ledger.fold(TENANT, CUSTOMER)):
        assert state.credit_block is not None and state.credit_block["command_id"] == BLOCK
        known = state.credit_block["acknowledgement"]
        assert known is not None and known["erp_reference"] == "BLK-917"
        assert set(state.acknowledgements) == {BLOCK, "esc-unknown"}
        assert [t["command_id"] for t in state.tasks.values()] == ["esc-unknown"]
    assert ledger.state(TENANT, CUSTOMER).to_json() == ledger.fold(TENANT, CUSTOMER).to_json()


def test_ledger_show_and_the_agenda_print_them(
    ledger: Ledger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Ingestor(ledger).process(
        [message("ack-1", ack(erp_reference="BLK-917")), message("ack-2", ack("esc-x", "rejected", reason="locked"))]
    )
    capsys.readouterr()

    assert main(["ledger", "show", "--tenant", TENANT, "--customer", CUSTOMER, "--database-url", ledger_url]) == 0
    shown = capsys.readouterr().out
    assert "applied by the ERP at 2026-12-01 08:00:04, ERP reference BLK-917" in shown
    assert "esc-x (a command this ledger does not know): rejected by the ERP at 2026-12-01 08:00:04 — locked" in shown

    assert main(["agenda", "--tenant", TENANT, "--date", "2026-12-01", "--database-url", ledger_url]) == 0
    agenda = capsys.readouterr().out
    assert "ERP refused a credit command" in agenda and "credit blocked (level)" in agenda
