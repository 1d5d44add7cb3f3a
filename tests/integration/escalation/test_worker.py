"""Escalation glue and worker: timers fire, clock ticks are recorded, decisions land once however many workers run.

Real databases (both engines where the behaviour is the same, PostgreSQL for concurrency). Most tests use a tiny
fake engine passed to :func:`evaluate`, so they test the glue alone; the last ones run the real engine and the
shipped policies end to end, through ``relance clock tick``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select

from services.cli import main
from services.escalation.model import Decision, Policy
from services.escalation.service import CLOCK_TICKED, Rules, evaluate, tick_event_id
from services.escalation.timers import Timers
from services.escalation.worker import EscalationWorker, PolicyBooks, tick
from shared.config import Settings, load_settings
from shared.contracts.commands import CollectionHandover, CreditBlock, CreditUnblock, parse_command
from shared.contracts.events import ReminderLine, ReminderRequested, ReminderTotals, instant_text
from shared.ledger.db import make_engine
from shared.ledger.schema import outbox
from shared.ledger.state import CustomerState
from shared.ledger.store import Incoming, Ledger, RecordedEvent
from tests.factories import TENANT, customer, incoming, invoice, payment

pytestmark = pytest.mark.integration

POLICY = Policy(name="fake", version="fake-v1", levels=())
DUE = date(2026, 11, 30)
FIRES_AT = datetime.combine(DUE + timedelta(days=1), time(8), tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------- a fake engine
class FakeBook:
    def for_customer(self, profile: Any) -> Policy:
        return POLICY


def books(tenant: str) -> FakeBook:
    return FakeBook()


def fake_decide(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> list[Decision]:
    """One reminder per open invoice from the day after its due date; its id depends on the invoice alone."""
    return [
        Decision(
            event_id=f"remind-{state.customer_id}-{inv.invoice_id}",
            event=ReminderRequested(
                reminder_id=f"R-{inv.invoice_id}",
                level="reminder_1",
                channel="email",
                copy_channels=[],
                template="reminder_1",
                language="en",
                currency=inv.currency,
                invoice_ids=[inv.invoice_id],
                lines=[
                    ReminderLine(
                        invoice_id=inv.invoice_id,
                        number=inv.number,
                        issue_date=inv.issue_date,
                        due_date=inv.due_date,
                        amount=inv.amount,
                        outstanding=inv.outstanding,
                        days_late=(as_of.date() - inv.due_date).days,
                        interest=Decimal(0),
                        fee=Decimal(0),
                    )
                ],
                totals=ReminderTotals(outstanding=inv.outstanding, interest=Decimal(0), fees=Decimal(0)),
                policy=policy.name,
                policy_version=policy.version,
                as_of=as_of,
            ),
        )
        for inv in state.open_invoices()
        if inv.due_date < as_of.date()
    ]


def fake_next_due(state: CustomerState, policy: Policy, as_of: datetime, rates: Any = None) -> datetime | None:
    upcoming = [
        datetime.combine(inv.due_date + timedelta(days=1), time(8), tzinfo=UTC) for inv in state.open_invoices()
    ]
    later = [moment for moment in upcoming if moment > as_of]
    return min(later) if later else None


FAKE = Rules(decide=fake_decide, next_due=fake_next_due)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = make_engine(ledger_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url, pool_size=20)
    yield engine
    engine.dispose()


def settings_for(engine: Engine, **overrides: Any) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    return load_settings(database_url=url, escalation_poll_ms=10, retry_max_seconds=0.2, **overrides)


def issue(ledger: Ledger, customer_id: str, invoice_id: str, due: date = DUE) -> None:
    ev = invoice(invoice_id, "120.00", issue_date=due - timedelta(days=30), due_date=due)
    ledger.record([incoming(ev.with_id(f"inv-{customer_id}-{invoice_id}"), customer_id=customer_id)])


def stream_types(ledger: Ledger, customer_id: str) -> list[str]:
    return [e.event_type for e in ledger.read_stream(TENANT, customer_id)]


def events_of(ledger: Ledger, customer_id: str, event_type: str) -> list[RecordedEvent]:
    return [e for e in ledger.read_stream(TENANT, customer_id) if e.event_type == event_type]


# ---------------------------------------------------------------------------------------------------- evaluate
def test_evaluate_records_the_decisions_once_and_sets_the_timer(engine: Engine) -> None:
    ledger, timers = Ledger(engine), Timers(engine)
    issue(ledger, "C-1", "INV-1")
    # When the customer is evaluated before the due date
    early = evaluate(ledger, FakeBook(), TENANT, "C-1", FIRES_AT - timedelta(days=3), rules=FAKE, timers=timers)
    # Then nothing is decided or recorded, and the timer is set for the day after the due date
    assert early.applied == () and not early.ticked
    assert stream_types(ledger, "C-1") == ["invoice.issued"]
    timer = timers.get(TENANT, "C-1")
    assert timer is not None and timer.due_at == FIRES_AT and timer.version == 1
    # When it is evaluated once the invoice is late
    late = evaluate(ledger, FakeBook(), TENANT, "C-1", FIRES_AT, rules=FAKE, timers=timers)
    # Then the instant and the reminder are recorded, in that order, carrying the policy version and the instant
    assert [d.event_type for d in late.applied] == ["reminder.requested"]
    assert stream_types(ledger, "C-1") == ["invoice.issued", CLOCK_TICKED, "reminder.requested"]
    clock, reminder = ledger.read_stream(TENANT, "C-1")[1:]
    assert clock.event_id == tick_event_id(TENANT, "C-1", FIRES_AT, clock.version - 1)
    assert clock.data == {"as_of": instant_text(FIRES_AT), "trigger": "manual"}
    assert reminder.metadata["policy_version"] == "fake-v1" and reminder.occurred_at == FIRES_AT
    # And its command is in the outbox, and nothing more is due
    with engine.connect() as conn:
        assert conn.execute(select(outbox.c.kind, outbox.c.command_id)).all() == [
            ("notifier.send_reminder", "remind-C-1-INV-1")
        ]
    assert late.next_due is None and timers.get(TENANT, "C-1") is None
    # When it is evaluated again, later
    again = evaluate(ledger, FakeBook(), TENANT, "C-1", FIRES_AT + timedelta(hours=5), rules=FAKE, timers=timers)
    # Then the same decision is recognised and nothing is appended
    assert again.applied == () and again.duplicates == 1
    assert len(ledger.read_stream(TENANT, "C-1")) == 3


def test_a_stream_that_moved_during_the_decision_is_decided_again(engine: Engine) -> None:
    ledger = Ledger(engine)
    issue(ledger, "C-1", "INV-1")
    calls = []

    def decide_while_the_customer_pays(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> Any:
        # The first time, the ERP's payment lands between reading the state and appending the decision
        calls.append(state.version)
        if len(calls) == 1:
            pay = payment("P-1", "120.00", allocations={"INV-1": "120.00"})
            Ledger(engine).record([incoming(pay, customer_id="C-1")])
        return fake_decide(state, policy, as_of, rates)

    rules = Rules(decide=decide_while_the_customer_pays, next_due=fake_next_due)
    # When the late customer is evaluated
    result = evaluate(ledger, FakeBook(), TENANT, "C-1", FIRES_AT, rules=rules)
    # Then the stale reminder was refused as a whole, and deciding again on the paid invoice sends nothing
    assert calls == [1, 2] and result.attempts == 2
    assert result.applied == ()
    assert stream_types(ledger, "C-1") == ["invoice.issued", "payment.received"]


# ---------------------------------------------------------------------------------------------------- the worker
def test_the_worker_sets_timers_from_the_log_and_fires_them(engine: Engine) -> None:
    ledger = Ledger(engine)
    clock = Clock(FIRES_AT - timedelta(days=10))
    worker = EscalationWorker(settings_for(engine), Ledger(engine), books, FAKE, threading.Event(), clock=clock)
    # Given two customers whose invoices the ERP just sent, due on different days
    issue(ledger, "C-1", "INV-1")
    issue(ledger, "C-2", "INV-2", due=DUE + timedelta(days=7))
    # When the worker follows the log
    assert worker.run_once() > 0
    # Then each customer has a timer for its next step, and nothing was recorded yet
    timers = {t.customer_id: t.due_at for t in Timers(engine).all()}
    assert timers == {"C-1": FIRES_AT, "C-2": FIRES_AT + timedelta(days=7)}
    assert stream_types(ledger, "C-1") == ["invoice.issued"]
    assert worker.run_once() == 0  # the worker's own round finds nothing new
    # When the clock passes the first timer
    clock.now = FIRES_AT + timedelta(minutes=3)
    worker.run_once()
    # Then the firing is recorded as a clock tick at that instant, followed by the decision, for C-1 only
    assert stream_types(ledger, "C-1") == ["invoice.issued", CLOCK_TICKED, "reminder.requested"]
    (ticked,) = events_of(ledger, "C-1", CLOCK_TICKED)
    assert ticked.data == {"as_of": instant_text(clock.now), "trigger": "timer"}
    assert ticked.event_id == tick_event_id(TENANT, "C-1", clock.now, ticked.version - 1)
    assert stream_types(ledger, "C-2") == ["invoice.issued"]
    # And C-1 has nothing due any more, while C-2's timer is untouched
    assert {t.customer_id for t in Timers(engine).all()} == {"C-2"}
    # And the worker's own events (tick, reminder), read back from the log, do not make it evaluate C-1 again
    assert worker.run_once() == 0
    assert worker.totals.customers == 3  # C-1 and C-2 for their invoices, C-1 for its timer


def test_a_payment_is_evaluated_from_the_log_without_waiting_for_a_timer(engine: Engine) -> None:
    ledger = Ledger(engine)
    clock = Clock(FIRES_AT - timedelta(days=1))
    worker = EscalationWorker(settings_for(engine), Ledger(engine), books, FAKE, threading.Event(), clock=clock)
    issue(ledger, "C-1", "INV-1")
    worker.run_once()
    assert Timers(engine).get(TENANT, "C-1") is not None
    # When the ERP reports the payment before the step is due
    ledger.record([incoming(payment("P-1", "120.00", allocations={"INV-1": "120.00"}), customer_id="C-1")])
    worker.run_once()
    # Then the customer's timer is gone: nothing will be sent
    assert Timers(engine).get(TENANT, "C-1") is None
    clock.now = FIRES_AT + timedelta(days=1)
    worker.run_once()
    assert stream_types(ledger, "C-1") == ["invoice.issued", "payment.received"]


def test_a_timer_of_a_worker_that_died_fires_again_after_its_lease(engine: Engine) -> None:
    ledger = Ledger(engine)
    issue(ledger, "C-1", "INV-1")
    Timers(engine).set(TENANT, "C-1", FIRES_AT, 1, FIRES_AT)
    # Given a worker that claimed the due timer and died before evaluating
    claimed = Timers(engine).claim_due(FIRES_AT, 10, timedelta(minutes=5))
    assert [t.customer_id for t in claimed] == ["C-1"]
    # Then no other worker takes it during the lease
    assert Timers(engine).claim_due(FIRES_AT + timedelta(minutes=4), 10, timedelta(minutes=5)) == []
    # And a worker fires it once the lease ran out
    clock = Clock(FIRES_AT + timedelta(minutes=6))
    worker = EscalationWorker(settings_for(engine), Ledger(engine), books, FAKE, threading.Event(), clock=clock)
    worker.fire_due_timers()
    assert stream_types(ledger, "C-1") == ["invoice.issued", CLOCK_TICKED, "reminder.requested"]


def test_an_older_evaluation_never_overwrites_a_newer_timer(engine: Engine) -> None:
    timers = Timers(engine)
    timers.set(TENANT, "C-1", FIRES_AT, 5, FIRES_AT)
    # When an evaluation of an older stream version finishes late
    timers.set(TENANT, "C-1", FIRES_AT + timedelta(days=9), 4, FIRES_AT)
    timers.set(TENANT, "C-1", None, 4, FIRES_AT)
    # Then the timer computed from the newer state stays
    timer = timers.get(TENANT, "C-1")
    assert timer is not None and (timer.due_at, timer.version) == (FIRES_AT, 5)


def test_two_workers_at_once_record_each_decision_once(pg_engine: Engine) -> None:
    ledger = Ledger(pg_engine)
    customers = [f"C-{n:02d}" for n in range(30)]
    for c in customers:
        issue(ledger, c, "INV-A")
        issue(ledger, c, "INV-B", due=DUE - timedelta(days=3))
    settings = settings_for(pg_engine, escalation_batch_size=4)
    clock = Clock(FIRES_AT - timedelta(days=10))
    workers = [
        EscalationWorker(settings, Ledger(pg_engine), books, FAKE, threading.Event(), clock=clock, holder=f"w{n}")
        for n in range(2)
    ]
    # Given the timers the workers set from the log
    while sum(w.run_once() for w in workers):
        pass
    assert len(Timers(pg_engine).all()) == 30
    # When both workers run at once after every timer fell due, and a manual tick evaluates everyone meanwhile
    clock.now = FIRES_AT + timedelta(days=1)

    def drain(worker: EscalationWorker) -> None:
        while worker.run_once():
            pass

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    threads.append(threading.Thread(target=tick, args=(Ledger(pg_engine), books, FAKE, clock.now)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then each customer got each reminder exactly once, and every stream is intact
    for c in customers:
        reminders = sorted(e.event_id for e in events_of(ledger, c, "reminder.requested"))
        assert reminders == [f"remind-{c}-INV-A", f"remind-{c}-INV-B"]
    with pg_engine.connect() as conn:
        assert len(conn.execute(select(outbox.c.command_id)).all()) == 60
    assert ledger.verify().ok
    # And no timer fired twice: one tick per customer at most from the workers
    assert sum(w.totals.ticks for w in workers) <= 30


# ---------------------------------------------------------------------------------------------------- real engine
def late_customer(ledger: Ledger, customer_id: str) -> None:
    profile = customer(customer_id, emails=[f"{customer_id.lower()}@example.com"])
    ledger.record(
        [
            incoming(profile.with_id(f"cust-{customer_id}"), customer_id=customer_id),
            incoming(
                invoice("INV-1", "1200.00", issue_date="2025-09-01", due_date="2025-10-01").with_id(
                    f"inv-{customer_id}"
                ),
                customer_id=customer_id,
            ),
        ]
    )


def test_relance_clock_tick_runs_the_real_engine(
    ledger_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELANCE_POLICY_DIR", raising=False)
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    # Given a customer 61 days late and one not due yet
    late_customer(ledger, "C-LATE")
    ledger.record([incoming(invoice("INV-9", "50.00", due_date="2026-01-15").with_id("inv-ok"), customer_id="C-OK")])
    # When the clock is ticked on 1 December by hand
    argv = ["clock", "tick", "--at", "2025-12-01T08:00:00Z", "--tenant", TENANT, "--database-url", ledger_url]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Then both customers were evaluated and the late one caught up in one step: one reminder, a credit block
    assert "2 customer(s) evaluated" in out
    assert "reminder.requested" in out and "credit.blocked" in out
    assert len(events_of(ledger, "C-LATE", "reminder.requested")) == 1
    assert len(events_of(ledger, "C-LATE", "credit.blocked")) == 1
    (ticked,) = events_of(ledger, "C-LATE", CLOCK_TICKED)
    assert ticked.data["as_of"] == "2025-12-01T08:00:00Z"
    assert stream_types(ledger, "C-OK") == ["invoice.issued"]
    # And the credit block waits in the outbox for the relay; the customer on time has a timer for its courtesy
    # notice, the late one none (it reached the last level)
    with engine.connect() as conn:
        kinds = sorted(conn.execute(select(outbox.c.kind)).scalars())
    # (61 days late is past the hand-over, at 60: the file goes to collection, and the hand-over letter out)
    assert kinds == ["erp.collection_handover", "erp.credit_block", "notifier.send_reminder"]
    assert {t.customer_id for t in Timers(engine).all()} == {"C-OK"}
    # When the same tick runs again
    assert main(argv) == 0
    # Then it decides nothing new
    assert "0 decision(s) recorded" in capsys.readouterr().out
    engine.dispose()


def test_the_worker_runs_the_real_engine_and_unblocks_on_payment(pg_engine: Engine) -> None:
    from services.escalation.worker import policy_books, real_rules

    ledger = Ledger(pg_engine)
    settings = settings_for(pg_engine)
    clock = Clock(datetime(2025, 12, 1, 8, 0, tzinfo=UTC))
    books_: PolicyBooks = policy_books(settings)
    worker = EscalationWorker(settings, Ledger(pg_engine), books_, real_rules(settings), threading.Event(), clock=clock)
    # Given a customer 61 days late, seen by the worker in the log
    late_customer(ledger, "C-1")
    worker.run_once()
    assert len(events_of(ledger, "C-1", "credit.blocked")) == 1
    # When the ERP reports the payment of everything
    pay = payment("P-1", "1200.00", received_on="2025-12-02", allocations={"INV-1": "1200.00"})
    clock.now = datetime(2025, 12, 2, 9, 0, tzinfo=UTC)
    ledger.record([incoming(pay, customer_id="C-1")])
    worker.run_once()
    # Then credit is unblocked once, and the unblock command is in the outbox after the block
    assert len(events_of(ledger, "C-1", "credit.unblocked")) == 1
    with pg_engine.connect() as conn:
        rows = conn.execute(select(outbox.c.kind, outbox.c.payload).order_by(outbox.c.id)).all()
    commands = [parse_command(payload) for kind, payload in rows if kind.startswith("erp.credit")]
    assert [c.command for c in commands] == ["erp.credit_block", "erp.credit_unblock"]
    [handover] = [parse_command(payload) for kind, payload in rows if kind == "erp.collection_handover"]
    assert isinstance(handover, CollectionHandover) and handover.invoice_ids == ["INV-1"]
    # And both bodies follow the published schema: the unblock names the block it ends, with the amounts
    block, unblock = commands
    assert isinstance(block, CreditBlock) and isinstance(unblock, CreditUnblock)
    assert block.reason == "level" and block.overdue == {"EUR": Decimal("1200.00")}
    assert unblock.block_id == block.block_id and unblock.sequence > block.sequence
    assert unblock.overdue == {} and unblock.command_id != block.command_id
    worker.run_once()
    assert len(events_of(ledger, "C-1", "credit.unblocked")) == 1


def test_the_worker_reminds_the_late_invoices_of_a_customer_who_also_has_one_due_in_9999(pg_engine: Engine) -> None:
    from services.escalation.worker import policy_books, real_rules

    ledger = Ledger(pg_engine)
    settings = settings_for(pg_engine)
    clock = Clock(datetime(2026, 3, 10, 8, 0, tzinfo=UTC))
    worker = EscalationWorker(
        settings, ledger, policy_books(settings), real_rules(settings), threading.Event(), clock=clock
    )
    # Given a customer whose ledger holds an invoice due on 9999-12-31 beside one 36 days late
    edge = invoice("INV-MAX", "500.00", issue_date="2026-01-01", due_date="9999-12-31", number="F-MAX")
    late = invoice("INV-1", "100.00", issue_date="2026-01-02", due_date="2026-02-02")
    ledger.record([incoming(customer("Martin SAS")), incoming(edge), incoming(late)])
    Timers(pg_engine).set(TENANT, "C-0042", clock.now, 0, clock.now)
    # When its timer fires
    worker.fire_due_timers()
    # Then the late invoice is reminded, the other one is a task with its reason, and nothing failed
    assert worker.totals.failures == 0
    (reminder,) = events_of(ledger, "C-0042", "reminder.requested")
    assert reminder.data["invoice_ids"] == ["INV-1"]
    (task,) = [e.data for e in events_of(ledger, "C-0042", "task.created") if e.data["kind"] == "invoice_dates_invalid"]
    assert task["invoice_ids"] == ["INV-MAX"] and "F-MAX" in task["note"]
    # And the timers fire on: the next evaluations create no second task
    clock.now = datetime(2026, 3, 25, 8, 0, tzinfo=UTC)
    worker.fire_due_timers()
    assert worker.totals.failures == 0
    assert (
        len([e for e in events_of(ledger, "C-0042", "task.created") if e.data["kind"] == "invoice_dates_invalid"]) == 1
    )


def test_the_worker_warns_of_a_semester_without_a_rate_at_start_up_and_once_a_day(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.escalation import interest
    from services.escalation.worker import real_rules

    settings = settings_for(pg_engine)
    clock = Clock(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    worker = EscalationWorker(settings, Ledger(pg_engine), books, real_rules(settings), threading.Event(), clock=clock)
    # Given the shipped table, which ends with the semester starting 2026-01-01, on 1 December 2026
    with structlog.testing.capture_logs() as logs:
        # (a fresh module logger: one an earlier test used under relance's configuration stays cached outside capture)
        monkeypatch.setattr(interest, "log", structlog.get_logger())
        # When the worker checks the table at start-up and again later that day
        worker.check_rates()
        clock.now += timedelta(hours=5)
        worker.check_rates()
        # Then it logged the semester already begun without a rate and the one beginning in 31 days, once
        ecb = [e for e in logs if e["event"].startswith("rates.") and e["table"] == "ecb"]
        found = [(e["event"], e["semester"], e["days_left"]) for e in ecb]
        assert found == [("rates.missing", "2026-07-01", -153), ("rates.missing_soon", "2027-01-01", 31)]
        assert all(e["add"] == f"{e['semester']},<rate in percent>" for e in ecb)
        # And the same for the Bank of England and French legal-rate tables, each row to add naming its table
        others = [(e["table"], e["add"]) for e in logs if e["event"].startswith("rates.") and e["table"] != "ecb"]
        assert others == [
            ("boe", "boe,2026-06-30,<rate in percent>"),
            ("boe", "boe,2026-12-31,<rate in percent>"),
            ("legal-fr", "legal-fr,2026-07-01,<rate in percent>"),
            ("legal-fr", "legal-fr,2027-01-01,<rate in percent>"),
        ]
        # When the next day comes
        clock.now += timedelta(days=1)
        worker.check_rates()
        # Then it warns again
        assert len([e for e in logs if e["event"].startswith("rates.")]) == 12


def test_the_expected_version_chain_keeps_a_batch_all_or_nothing(engine: Engine) -> None:
    ledger = Ledger(engine)
    issue(ledger, "C-1", "INV-1")  # the stream is at version 1
    ledger.record([incoming(payment("P-1", "1.00"), customer_id="C-1")])  # another writer moved it to 2

    def item(n: int, expected: int) -> Incoming:
        return Incoming(TENANT, "C-1", f"d-{n}", "task.created", {"task_id": f"T{n}"}, FIRES_AT, {}, expected)

    # When a writer that read version 1 appends two decisions expecting versions 1 and 2
    outcomes = ledger.record([item(1, 1), item(2, 2)])
    # Then neither is appended, though the second alone would have matched the stream's version
    assert [o.status for o in outcomes] == ["conflict", "conflict"]
    assert len(ledger.read_stream(TENANT, "C-1")) == 2


def test_the_worker_process_starts_from_settings_and_stops_on_request(pg_url: str) -> None:
    from services.escalation.worker import run

    engine = make_engine(pg_url)
    # Given an invoice the ERP just sent, due in three weeks (by the wall clock: the worker runs for real)
    due = datetime.now(UTC).date() + timedelta(days=21)
    Ledger(engine).record([incoming(invoice("INV-1", "80.00", issue_date=due - timedelta(days=30), due_date=due))])
    stop = threading.Event()
    result: list[int] = []
    # When a worker built from settings alone (real engine, shipped policies) runs for a moment
    thread = threading.Thread(target=lambda: result.append(run(load_settings(database_url=pg_url), stop=stop)))
    thread.start()
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while not Timers(engine).all() and thread.is_alive():
        assert datetime.now(UTC) < deadline, "the worker did not evaluate the customer"
        threading.Event().wait(0.05)
    stop.set()
    thread.join(20)
    # Then it set the customer's timer for the courtesy notice, and exits cleanly when asked to stop
    assert result == [0]
    (timer,) = Timers(engine).all()
    assert timer.customer_id == "C-0042" and timer.due_at.date() <= due - timedelta(days=5)
    engine.dispose()


def test_a_customer_that_cannot_be_evaluated_does_not_stop_the_others(engine: Engine) -> None:
    ledger = Ledger(engine)
    issue(ledger, "C-BAD", "INV-1")
    issue(ledger, "C-OK", "INV-2")

    def decide_or_fail(state: CustomerState, policy: Policy, as_of: datetime, rates: Any) -> list[Decision]:
        if state.customer_id == "C-BAD":
            raise LookupError("no reference rate for the semester")
        return fake_decide(state, policy, as_of, rates)

    rules = Rules(decide=decide_or_fail, next_due=fake_next_due)
    clock = Clock(FIRES_AT)
    worker = EscalationWorker(settings_for(engine), Ledger(engine), books, rules, threading.Event(), clock=clock)
    # When the worker meets a customer whose evaluation fails
    worker.run_once()
    # Then the other customer is still served, and the failing one will be looked at again after a lease
    assert stream_types(ledger, "C-OK") == ["invoice.issued", CLOCK_TICKED, "reminder.requested"]
    assert worker.totals.failures == 1
    retry = Timers(engine).get(TENANT, "C-BAD")
    assert retry is not None and retry.due_at == FIRES_AT + worker.lease
