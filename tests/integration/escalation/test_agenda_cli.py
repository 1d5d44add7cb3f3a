"""``relance agenda``: a collector's day read from the ledger, after the real engine decided (via ``clock tick``)."""

from __future__ import annotations

import json

import pytest

from services.cli import main
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests.factories import TENANT, Ev, customer, incoming, invoice, payment

pytestmark = pytest.mark.integration

DAY = "2025-10-21"


def tick(url: str, day: str) -> None:
    assert main(["clock", "tick", "--at", f"{day}T08:00:00Z", "--tenant", TENANT, "--database-url", url]) == 0


@pytest.fixture
def ledger_with_tasks(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.delenv("RELANCE_POLICY_DIR", raising=False)
    monkeypatch.delenv("RELANCE_RATES_FILE", raising=False)
    engine = make_engine(sqlite_url)
    ledger = Ledger(engine)
    limit = {"credit_limit": {"amount": "100000.00", "currency": "EUR"}}
    for customer_id, name, amount, due in (
        ("C-CALL", "Garage Dubois SARL", "1200.00", "2025-10-01"),  # 20 days late on DAY: a call to make
        ("C-BIG", "Transports Roux SAS", "9000.00", "2025-09-01"),  # 50 days late on DAY: credit blocked
        ("C-PAID", "Atelier Petit EURL", "500.00", "2025-09-15"),  # a call was due, then the invoice was paid
        ("C-OK", "Cabinet Simon SA", "300.00", "2025-11-30"),  # not due yet
    ):
        ledger.record(
            [
                incoming(customer(name, **limit).with_id(f"cust-{customer_id}"), customer_id=customer_id),
                incoming(
                    invoice(f"{customer_id}-1", amount, issue_date="2025-08-01", due_date=due).with_id(
                        f"inv-{customer_id}"
                    ),
                    customer_id=customer_id,
                ),
            ]
        )
    # Given the engine run on 6 October (C-PAID reaches its phone call), then C-PAID's payment, then 21 October
    tick(sqlite_url, "2025-10-06")
    settle = payment("P-1", "500.00", received_on="2025-10-10", allocations={"C-PAID-1": "500.00"})
    ledger.record([incoming(settle, customer_id="C-PAID")])
    tick(sqlite_url, DAY)
    assert {t["kind"] for t in ledger.state(TENANT, "C-PAID").tasks.values()} == {"phone_call"}
    assert ledger.state(TENANT, "C-BIG").credit_block is not None
    engine.dispose()
    capsys.readouterr()
    return sqlite_url


def test_the_agenda_lists_the_days_work_largest_amount_first(
    ledger_with_tasks: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the collector asks for the agenda of 21 October
    assert main(["agenda", "--tenant", TENANT, "--date", DAY, "--database-url", ledger_with_tasks]) == 0
    out = capsys.readouterr().out
    # Then the blocked account comes first, then the call; the paid customer's call is moot, nothing for C-OK
    lines = [line for line in out.splitlines() if "C-" in line]
    assert len(lines) == 2, out
    assert "C-BIG" in lines[0] and "credit blocked" in lines[0] and "9,000.00 EUR" in lines[0]
    assert "C-CALL" in lines[1] and "call" in lines[1] and "C-CALL-1" in lines[1] and "1,200.00 EUR" in lines[1]
    assert f"agenda of {TENANT} for {DAY}: 2 item(s)" in out
    assert "C-PAID" not in out and "C-OK" not in out


def test_the_agenda_as_json(ledger_with_tasks: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["agenda", "--tenant", TENANT, "--date", DAY, "--json", "--database-url", ledger_with_tasks]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tenant"] == TENANT and document["date"] == DAY
    assert [(i["customer_id"], i["kind"], i["at_risk"]) for i in document["items"]] == [
        ("C-BIG", "credit_blocked", "9000.00"),
        ("C-CALL", "phone_call", "1200.00"),
    ]
    (call,) = (i for i in document["items"] if i["kind"] == "phone_call")
    assert call["due_on"] == DAY and call["invoices"] == ["C-CALL-1"] and call["customer_name"] == "Garage Dubois SARL"


def test_a_task_due_later_is_not_on_todays_agenda(ledger_with_tasks: str, capsys: pytest.CaptureFixture[str]) -> None:
    # When the agenda of the day before is asked for: the call falls due on DAY, only the block is listed
    assert main(["agenda", "--tenant", TENANT, "--date", "2025-10-20", "--database-url", ledger_with_tasks]) == 0
    out = capsys.readouterr().out
    assert "C-BIG" in out and "C-CALL" not in out


def test_an_unknown_tenant_or_date_is_a_clear_error(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agenda", "--tenant", "nobody", "--date", DAY, "--database-url", sqlite_url]) == 1
    assert "tenant 'nobody' has no customers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["agenda", "--tenant", TENANT, "--date", "21/10/2025", "--database-url", sqlite_url])
    assert "not an ISO 8601 date" in capsys.readouterr().err


def test_the_agenda_says_invoice_numbers_and_filters_by_assignee(
    ledger_with_tasks: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the call given to marc
    engine = make_engine(ledger_with_tasks)
    ledger = Ledger(engine)
    ((task_id, _),) = ((k, t) for k, t in ledger.state(TENANT, "C-CALL").tasks.items() if t["kind"] == "phone_call")
    meta = {"source": "cli", "author": "claire", "request_id": "r-1"}
    given = Ev("task.assigned", {"task_id": task_id, "assignee": "marc", "author": "claire"}, "act-1", metadata=meta)
    ledger.record([incoming(given, customer_id="C-CALL")])
    engine.dispose()
    # When marc asks for his agenda
    argv = ["agenda", "--tenant", TENANT, "--date", DAY, "--assignee", "marc", "--database-url", ledger_with_tasks]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Then only the call is listed, by the invoice's number, with whose it is
    lines = [line for line in out.splitlines() if "C-" in line]
    assert len(lines) == 1 and "C-CALL" in lines[0] and "F-C-CALL-1" in lines[0] and "[marc]" in lines[0], out
    assert f"agenda of {TENANT} for marc for {DAY}: 1 item(s)" in out
    assert main([*argv, "--json"]) == 0
    (call,) = json.loads(capsys.readouterr().out)["items"]
    assert (call["numbers"], call["task_ids"], call["assignee"]) == (["F-C-CALL-1"], [task_id], "marc")
