"""The customer's pause: while it holds, nothing contacts or sanctions the customer; then the ladder resumes.

The same day-by-day walk as tests/unit/escalation/test_engine.py (ladder on 27 Feb, 7, 14, 22 Mar, 1 and 16 Apr for
an invoice due on 2 March), with a person pausing the customer through ``customer.paused`` and resuming it through
``customer.resumed``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from services.escalation.engine import next_due
from tests.factories import Ev, customer, payment
from tests.unit.escalation.test_engine import INV1, POLICY, RATES, Customer, days

CLAIM_FIGURES = {"fee", "interest", "fixed"}


def act(event_type: str, event_id: str, **data: Any) -> Ev:
    return Ev(event_type, {"author": "claire", **data}, event_id, metadata={"source": "workspace", "author": "claire"})


def paused(until: str, pause_id: str = "PA-1") -> Ev:
    return act("customer.paused", f"pause-{pause_id}", pause_id=pause_id, reason="takeover talks", until=until)


def resumed(pause_id: str = "PA-1") -> Ev:
    return act("customer.resumed", f"resume-{pause_id}", pause_id=pause_id, reason="talks over")


def ladder_only(c: Customer) -> dict[str, list[tuple[str, ...]]]:
    return c.table(claims=False)


def test_a_paused_customer_gets_nothing_and_the_timer_is_the_day_after_the_pause() -> None:
    # Given an invoice past its first reminder, and the customer paused from 10 March through 31 March
    c = Customer()
    c.erp(date(2026, 2, 1), customer(), INV1)
    c.run(*days("2026-02-01", "2026-03-09"))
    before = dict(c.log)
    c.erp(date(2026, 3, 10), paused("2026-03-31"))
    # When the engine runs every day of the pause
    c.run(*days("2026-03-10", "2026-03-31"))
    # Then it decides nothing at all: no level (the call of 14 March, the formal notice of 22 March), no reminder,
    # no interest figure, no fee, no task
    assert c.log == before
    # And the next timer is the local midnight after the pause's last day, not the call's step within it
    as_of = datetime.combine(date(2026, 3, 12), time(9), tzinfo=UTC)
    assert next_due(c.state, POLICY, as_of, RATES) == datetime(2026, 4, 1, tzinfo=UTC)


def test_a_pause_past_its_end_resumes_by_itself_with_the_next_level_at_once_and_the_spacing_kept() -> None:
    # Given the same pause from 10 March through 31 March, nobody resuming it
    c = Customer()
    c.erp(date(2026, 2, 1), customer(), INV1)
    c.run(*days("2026-02-01", "2026-03-09"))
    c.erp(date(2026, 3, 10), paused("2026-03-31"))
    # When the engine runs on through April
    c.run(*days("2026-03-10", "2026-04-30"))
    table = ladder_only(c)
    # Then on 1 April the ladder resumes like after a promise: the next level (the call) at once, nothing passed over
    assert table["2026-04-01"] == [("level", "INV-1", "call"), ("task", "phone_call", "INV-1", "1000.00")]
    # And the levels after it keep the ladder's spacing from there (call at +12, formal notice at +20: 8 days on)
    assert table["2026-04-09"] == [("level", "INV-1", "formal-notice"), ("reminder", "EUR", "formal-notice", "INV-1")]
    assert "2026-03-14" not in table and "2026-03-22" not in table
    assert not any(day < "2026-04-01" and day >= "2026-03-10" for day in c.table())


def test_a_resumed_customer_gets_the_next_level_the_day_it_is_resumed() -> None:
    # Given the customer paused through 30 April, and resumed on 25 March
    c = Customer()
    c.erp(date(2026, 2, 1), customer(), INV1)
    c.run(*days("2026-02-01", "2026-03-09"))
    c.erp(date(2026, 3, 10), paused("2026-04-30"))
    c.run(*days("2026-03-10", "2026-03-24"))
    c.erp(date(2026, 3, 25), resumed())
    # When the engine runs on
    c.run(*days("2026-03-25", "2026-04-10"))
    table = ladder_only(c)
    # Then the next level comes the day of the resumption, not a catch-up to the formal notice
    assert table["2026-03-25"] == [("level", "INV-1", "call"), ("task", "phone_call", "INV-1", "1000.00")]
    assert table["2026-04-02"] == [("level", "INV-1", "formal-notice"), ("reminder", "EUR", "formal-notice", "INV-1")]
    assert not any("2026-03-10" <= day < "2026-03-25" for day in c.table())


def test_a_block_that_no_longer_holds_is_still_lifted_during_a_pause_but_none_is_decided() -> None:
    # Given a customer blocked at the block level (1 April), paused on 2 April, and paying on 5 April
    c = Customer()
    c.erp(date(2026, 2, 1), customer(), INV1)
    c.run(*days("2026-02-01", "2026-04-01"))
    assert c.state.credit_block is not None
    c.erp(date(2026, 4, 2), paused("2026-05-31"))
    c.run(*days("2026-04-02", "2026-04-04"))
    c.erp(date(2026, 4, 5), payment("P-1", "1000.00", allocations={"INV-1": "1000.00"}, received_on="2026-04-05"))
    # When the engine runs during the pause
    c.run(*days("2026-04-05", "2026-04-20"))
    # Then the block is lifted (it sanctions nobody) and nothing else is decided: no hand-over on 16 April
    table = c.table()
    decided = [s for day, ds in table.items() if day >= "2026-04-02" for s in ds]
    assert [s[0] for s in decided] == ["unblocked"]
