"""The tamper test suite: what ``relance verify`` says after each thing an attacker with database access can do.

Each test starts from a verified ledger of three customers (invoices, payments, a credit note, a reminder with its
outbox command and its stored bytes, a credit block), lets an attacker who dropped the append-only triggers change
something, and checks that verify names it precisely: the table, the stream, the row, the column, the stored value
and the value rebuilt from the log. The careful attacker, who recomputes chains, heads and projections, is caught by
the signed checkpoints (tests/integration/ledger/test_checkpoints.py covers those with the CLI). Runs on PostgreSQL and
SQLite alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from shared.ledger.db import make_engine
from shared.ledger.schema import (
    credits,
    customer_balances,
    customer_state,
    events,
    invoice_balances,
    letters,
    outbox,
    sent_messages,
)
from shared.ledger.store import Ledger
from shared.ledger.verify import Difference, verify
from tests.factories import CUSTOMER, TENANT, customer, incoming, invoice, payment
from tests.integration.ledger.tamper import (
    MIME,
    OTHER,
    THIRD,
    append,
    at_version,
    attacker,
    books,
    of_stream,
    rechain,
    recompute_projections,
    rows,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    books(ledger)
    report = ledger.verify()
    assert report.ok, report.problems
    yield ledger
    engine.dispose()


def problems_of(ledger: Ledger) -> list[str]:
    report = verify(ledger.engine)
    assert not report.ok, "verify found nothing"
    return report.problems


def differences_of(ledger: Ledger) -> list[Difference]:
    return verify(ledger.engine).differences


def where(table: Any, *key: Any) -> Any:
    return of_stream(table, TENANT, CUSTOMER) if not key else of_stream(table, *key)


# ---------------------------------------------------------------------------------------------------- the log itself
def test_an_altered_field_is_named_with_its_version_and_the_values_it_changed(ledger: Ledger) -> None:
    # When the payment's amount is changed in the log
    with attacker(ledger.engine) as conn:
        data = rows(conn, TENANT, CUSTOMER)[3]["data"]
        conn.execute(update(events).where(at_version(TENANT, CUSTOMER, 4)).values(data={**data, "amount": "10.00"}))
    # Then verify names the event, and the projections written from the original say what it was
    problems = problems_of(ledger)
    assert f"events {TENANT}/{CUSTOMER} v4: content altered (hash does not match)" in problems
    assert Difference(
        "credits", f"{TENANT}/{CUSTOMER} credit payment:P1", "amount", Decimal("100.00"), Decimal("10.00")
    ) in differences_of(ledger)


def test_a_removed_event_breaks_the_version_sequence_and_the_chain(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(delete(events).where(at_version(TENANT, CUSTOMER, 2)))
    problems = problems_of(ledger)
    assert f"events {TENANT}/{CUSTOMER}: version 2 missing (found 3)" in problems
    assert f"events {TENANT}/{CUSTOMER} v3: chain broken (prev_hash does not match)" in problems
    assert f"invoice_balances {TENANT}/{CUSTOMER} invoice INV-1: stored, but no event of the log makes it" in problems


def test_a_removed_last_event_leaves_the_head_row_ahead_of_the_log(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        last = len(rows(conn, TENANT, CUSTOMER))
        conn.execute(delete(events).where(at_version(TENANT, CUSTOMER, last)))
    found = differences_of(ledger)
    assert Difference("customer_state", f"{TENANT}/{CUSTOMER}", "version", last, last - 1) in found


def test_a_stream_removed_from_the_log_but_not_from_the_projections_is_named(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(delete(events).where(of_stream(events, TENANT, OTHER)))
    problems = problems_of(ledger)
    assert any(
        p.startswith(f"customer_state {TENANT}/{OTHER}: head row at version 3, but the log holds no event")
        for p in problems
    ), problems
    for table in ("invoice_balances", "credits", "customer_balances", "outbox"):
        assert f"{table} {TENANT}/{OTHER}: 1 row(s) for a stream of which the log holds no event" in problems


def test_a_ghost_stream_inserted_with_a_correct_chain_has_no_head_row_nor_projections(ledger: Ledger) -> None:
    # When a whole stream is inserted into the log by plain INSERTs, hash chain and all
    invoice_data = invoice("INV-G", "999.00").data
    with attacker(ledger.engine) as conn:
        append(conn, TENANT, "C-GHOST", "invoice.issued", invoice_data, event_id="ghost-1")
    problems = problems_of(ledger)
    assert not any("chain" in p or "altered" in p for p in problems), problems
    assert any(
        p.startswith(f"customer_state {TENANT}/C-GHOST: no head row, but the log holds 1 event") for p in problems
    )
    assert f"invoice_balances {TENANT}/C-GHOST invoice INV-G: missing (the log rebuilds it)" in problems
    assert f"customer_balances {TENANT}/C-GHOST currency EUR: missing (the log rebuilds it)" in problems


def test_events_of_a_stream_whose_positions_were_swapped_are_named(ledger: Ledger) -> None:
    # When versions 2 and 3 swap their places in the log (position and transaction id), content untouched
    with attacker(ledger.engine) as conn:
        second, third = rows(conn, TENANT, CUSTOMER)[1:3]
        swap = {"position": -1, "tx_id": third["tx_id"]}
        conn.execute(update(events).where(events.c.position == second["position"]).values(**swap))
        conn.execute(
            update(events)
            .where(events.c.position == third["position"])
            .values(position=second["position"], tx_id=second["tx_id"])
        )
        conn.execute(update(events).where(events.c.position == -1).values(position=third["position"]))
    problems = problems_of(ledger)
    assert problems == [
        f"events {TENANT}/{CUSTOMER} v3: position {second['position']} comes before that of v2 "
        f"({third['position']}): positions were moved"
    ]


# ---------------------------------------------------------------------------------------------------- beside the log
def test_a_snapshot_edited_to_mark_an_unpaid_invoice_paid_is_named_path_by_path(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        head = conn.execute(select(customer_state).where(where(customer_state))).mappings().one()
        state = head["state"]
        state["invoices"]["INV-2"].update(status="paid", outstanding="0.00")
        conn.execute(update(customer_state).where(where(customer_state)).values(state=state))
    found = differences_of(ledger)
    at = f"{TENANT}/{CUSTOMER} snapshot at v{head['snapshot_version']}"
    assert Difference("customer_state", at, "state.invoices.INV-2.status", "paid", "open") in found
    assert Difference("customer_state", at, "state.invoices.INV-2.outstanding", "0.00", "200.00") in found
    assert len(found) == 2, found


def test_a_head_row_deleted_is_named(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(delete(customer_state).where(where(customer_state)))
    problems = problems_of(ledger)
    assert len(problems) == 1 and problems[0].startswith(f"customer_state {TENANT}/{CUSTOMER}: no head row"), problems


def test_an_invoice_balance_marked_paid_is_named_column_by_column(ledger: Ledger) -> None:
    key = where(invoice_balances) & (invoice_balances.c.invoice_id == "INV-2")
    with attacker(ledger.engine) as conn:
        conn.execute(update(invoice_balances).where(key).values(status="paid", outstanding=Decimal(0)))
    found = differences_of(ledger)
    name = f"{TENANT}/{CUSTOMER} invoice INV-2"
    assert {(d.table, d.key, d.column, d.rebuilt) for d in found} == {
        ("invoice_balances", name, "status", "open"),
        ("invoice_balances", name, "outstanding", Decimal("200.00")),
    }


def test_a_deleted_invoice_balance_is_named(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(
            delete(invoice_balances).where(where(invoice_balances) & (invoice_balances.c.invoice_id == "INV-2"))
        )
    assert problems_of(ledger) == [f"invoice_balances {TENANT}/{CUSTOMER} invoice INV-2: missing (the log rebuilds it)"]


def test_an_edited_customer_balance_is_named(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(update(customer_balances).where(where(customer_balances)).values(balance=Decimal(0)))
    [difference] = differences_of(ledger)
    assert (difference.table, difference.key, difference.column) == (
        "customer_balances",
        f"{TENANT}/{CUSTOMER} currency EUR",
        "balance",
    )
    assert (difference.stored, difference.rebuilt) == (Decimal(0), Decimal("200.00"))


def test_an_edited_or_deleted_credit_is_named(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(update(credits).where(where(credits, TENANT, OTHER)).values(unallocated=Decimal("500.00")))
        conn.execute(delete(credits).where(where(credits, TENANT, THIRD)))
    problems = problems_of(ledger)
    # P9 went to INV-9, so nothing of it is left unallocated
    edited = Difference("credits", f"{TENANT}/{OTHER} credit payment:P9", "unallocated", Decimal(500), Decimal(0))
    assert str(edited) in problems or edited in differences_of(ledger), problems
    assert f"credits {TENANT}/{THIRD} credit credit_note:CN3: missing (the log rebuilds it)" in problems


def test_an_outbox_command_edited_or_deleted_is_named(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        command = conn.execute(select(outbox.c.payload).where(outbox.c.command_id == "esc-block-1")).scalar_one()
        forged = {**command, "reason": "never paid"}
        conn.execute(update(outbox).where(outbox.c.command_id == "esc-block-1").values(payload=forged))
        conn.execute(delete(outbox).where(outbox.c.command_id == "esc-cmd-1"))
    problems = problems_of(ledger)
    assert f"outbox {TENANT}/{CUSTOMER} command esc-cmd-1: missing (the log rebuilds it)" in problems
    edited = Difference("outbox", f"{TENANT}/{OTHER} command esc-block-1", "payload.reason", "never paid", "overdue")
    assert str(edited) in problems, problems


def test_stored_reminder_bytes_altered_or_removed_are_named(ledger: Ledger, ledger_url: str) -> None:
    forged = MIME.replace(b"200,00", b"20,00")
    with attacker(ledger.engine) as conn:
        conn.execute(update(sent_messages).where(where(sent_messages)).values(mime=forged))
    # Then both evidence events (sending and sent) name the hash they recorded and the hash of the bytes now
    found = differences_of(ledger)
    assert {(d.table, d.key, d.column) for d in found} == {
        ("sent_messages", f"{TENANT}/{CUSTOMER} command esc-cmd-1 (as v{v} records)", "SHA-256 of the stored bytes")
        for v in (6, 7)
    }
    assert {(d.stored, d.rebuilt) for d in found} == {
        (hashlib.sha256(forged).hexdigest(), hashlib.sha256(MIME).hexdigest())
    }
    with attacker(ledger.engine) as conn:
        conn.execute(delete(sent_messages).where(where(sent_messages)))
    [problem] = problems_of(ledger)
    assert problem.startswith(f"sent_messages {TENANT}/{CUSTOMER} command esc-cmd-1: missing, but v6 records")


def test_a_stored_letter_altered_removed_or_unrecorded_is_named(ledger: Ledger) -> None:
    from datetime import UTC, datetime

    from shared.contracts import events as relance_events
    from shared.ledger import letters as stored_letters
    from shared.ledger.store import Incoming

    pdf = b"%PDF-1.7 a formal notice of 200,00 EUR"
    kept = stored_letters.store(
        ledger.engine, tenant=TENANT, customer_id=CUSTOMER, command_id="esc-letter-1", kind="reminder", pdf=pdf, pages=1
    )
    rendered = relance_events.LetterRendered(
        letter_id=kept.letter_id, command_id="esc-letter-1", kind="reminder", sha256=kept.sha256, pages=1
    )
    ledger.record(
        [
            Incoming.of(
                rendered, stream=(TENANT, CUSTOMER), event_id="letter-1", occurred_at=datetime.now(UTC), metadata={}
            )
        ]
    )
    version = ledger.state(TENANT, CUSTOMER).version
    assert verify(ledger.engine).ok
    # A PDF changed behind the ledger's back is named with the hash it has and the one the log recorded
    forged = pdf.replace(b"200,00", b"20,00")
    with attacker(ledger.engine) as conn:
        conn.execute(update(letters).where(where(letters)).values(pdf=forged))
    [found] = differences_of(ledger)
    assert (found.table, found.key, found.column) == (
        "letters",
        f"{TENANT}/{CUSTOMER} letter {kept.letter_id} (as v{version} records)",
        "SHA-256 of the stored PDF",
    )
    assert (found.stored, found.rebuilt) == (hashlib.sha256(forged).hexdigest(), kept.sha256)
    # A PDF removed is missing evidence
    with attacker(ledger.engine) as conn:
        conn.execute(delete(letters).where(where(letters)))
    [problem] = problems_of(ledger)
    assert problem.startswith(f"letters {TENANT}/{CUSTOMER} letter {kept.letter_id}: missing, but v{version} records")
    # And a PDF no letter.rendered records is a warning: it was never handed out
    other = stored_letters.store(
        ledger.engine, tenant=TENANT, customer_id=OTHER, command_id="esc-letter-2", kind="reminder", pdf=pdf, pages=1
    )
    assert any(other.letter_id in warning for warning in verify(ledger.engine).warnings)


# ---------------------------------------------------------------------------------------------- the careful attacker
def test_a_tail_rewrite_with_recomputed_chain_and_projections_passes_without_checkpoints(ledger: Ledger) -> None:
    """What checkpoints are for: this attacker leaves nothing that the log and its projections can show."""
    with attacker(ledger.engine) as conn:
        data = rows(conn, TENANT, CUSTOMER)[2]["data"]
        rechain(conn, TENANT, CUSTOMER, {3: {"data": {**data, "amount": "20.00"}}})
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    assert verify(ledger.engine).ok


def test_a_forged_append_with_recomputed_chain_and_projections_passes_without_checkpoints(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        append(conn, TENANT, CUSTOMER, "payment.received", payment("P-FORGED", "200.00").data)
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    assert verify(ledger.engine).ok
    assert ledger.state(TENANT, CUSTOMER).balances() == {"EUR": Decimal(0)}


def test_the_head_row_of_a_stream_whose_only_event_was_a_duplicate_is_not_a_problem(ledger: Ledger) -> None:
    # Given a new customer whose only event reuses an event_id of the tenant: the stream's row was created to lock
    # it, and nothing was appended
    [outcome] = ledger.record([incoming(invoice("INV-1", "100.00"), customer_id="C-NEW")])
    assert outcome.status == "duplicate"
    with ledger.engine.connect() as conn:
        assert (
            conn.execute(select(customer_state.c.version).where(where(customer_state, TENANT, "C-NEW"))).scalar() == 0
        )
    # Then verify has nothing to say about it
    assert verify(ledger.engine).ok


def test_verify_reads_one_tenant_or_one_stream_only(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        conn.execute(delete(invoice_balances).where(where(invoice_balances, TENANT, OTHER)))
    assert verify(ledger.engine, TENANT, CUSTOMER).ok
    assert not verify(ledger.engine, TENANT, OTHER).ok
    assert verify(ledger.engine, "other-tenant").events == 0


def test_a_stream_whose_erp_clock_runs_ahead_rebuilds_to_what_was_stored(ledger: Ledger) -> None:
    from datetime import UTC, datetime, timedelta

    # Given a customer upserted with an instant a few hours ahead of the moment the ledger recorded it (the fold
    # counts such an event as of its recording, so a skewed ERP clock pins nothing)
    ahead = datetime.now(UTC) + timedelta(hours=5)
    ledger.record([incoming(customer("Ahead SA").at(ahead), customer_id="C-AHEAD")])
    # When the log is verified, Then the rebuild caps the instant the same way and finds the snapshot as stored
    report = verify(ledger.engine)
    assert report.ok, report.problems
