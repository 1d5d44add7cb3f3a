"""Claims as amounts owed, walked day by day: late interest and the EUR 40 indemnity owed from the first day late,
claimed from the formal notice, fixed at the settlement, paid by the allocation rule, waived with a reason.

The figures are worked by hand in the comments: 12.15 % is the ECB rate of 2026 (2.15) plus 10 points, and a day of
it on 1,000.00 is 1000 * 0.1215 / 365 = 0.33287...
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from services.cli.claims import waiver, waiver_id
from services.escalation.agenda import build_agenda
from services.escalation.claims import TASK
from services.escalation.engine import next_due
from services.escalation.model import Cadence, Policy
from shared.contracts.events import CLAIMS_STATEMENT, ClaimWaived
from shared.ledger.claims import INDEMNITY, INTEREST
from shared.ledger.state import CustomerState
from tests.factories import Ev, invoice, payment
from tests.unit.escalation.test_engine import INV1, POLICY, RATES, Customer, days

INV2 = invoice("INV-2", "500.00", issue_date="2026-03-01", due_date="2026-04-30")


def waive(c: Customer, day: date, invoice_id: str, kind: str, amount: str | None = None) -> None:
    found = waiver(c.state, invoice_id, kind, "goodwill after the dispute", "M. Durand", amount)
    c.erp(day, Ev(ClaimWaived.TYPE, found.event.data(), waiver_id(c.state, invoice_id, kind)))


def owed(c: Customer, invoice_id: str) -> dict[str, tuple[str, str, str, str, bool]]:
    """Per kind: charged, paid, waived, owed, claimed."""
    return {
        claim.kind: (str(claim.charged), str(claim.allocated), str(claim.waived), str(claim.owed), claim.claimed)
        for claim in c.state.claims.of_invoice(invoice_id)
    }


def check_claims_asked(state: CustomerState, data: dict[str, Any], asked: set[tuple[str, str]]) -> None:
    """A message just folded into ``state``: it asks for no claim paid or waived (each claim it lists is owed, at
    what it owes), and a claims statement demands no invoice and asks only for claims no message asked for before
    (``asked``, which it then extends)."""
    listed = {(line["invoice_id"], line["kind"]) for line in data.get("claims", [])}
    for line in data.get("claims", []):
        claim = state.claims.get(line["invoice_id"], line["kind"])
        assert claim is not None and claim.claimed and D(line["amount"]) == claim.owed > 0, (line, claim)
        assert state.invoices[line["invoice_id"]].status == "paid", line
    if data["level"] == CLAIMS_STATEMENT:
        assert data["lines"] == [] and data["invoice_ids"] == [] and "also" not in data, data
        assert listed and not listed & asked, (listed, asked)
        assert D(data["totals"]["claims"]) == sum(
            (D(line["amount"]) for line in data["claims"] if line["currency"] == data["currency"]), D(0)
        )
    asked |= listed


def formal_notice(c: Customer) -> dict[str, Any]:
    (formal,) = [r for r in c.only("reminder.requested") if r["level"] == "formal-notice"]
    return formal


# ---------------------------------------------------------------------------------------------------- owed, claimed
def test_the_indemnity_is_owed_the_first_day_late_and_claimed_only_from_the_formal_notice() -> None:
    # Given an invoice of 1,000.00 due on 2 March
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    # When the engine runs until the day before the formal notice (22 March)
    c.run(*days("2026-02-01", "2026-03-21"))
    # Then the indemnity was charged on 3 March, the interest recorded at each move, neither demanded yet
    assert c.table()["2026-03-03"] == [("fee", "INV-1", "40.00")]
    # 12 days (3 to 14 March) at 12.15 %: 3.994...
    assert owed(c, "INV-1") == {
        INTEREST: ("3.99", "0", "0", "3.99", False),
        INDEMNITY: ("40.00", "0", "0", "40.00", False),
    }
    first = next(r for r in c.only("reminder.requested") if r["level"] == "reminder-1")
    assert (first["lines"][0]["interest"], first["lines"][0]["fee"]) == ("0", "0")
    # When the formal notice falls due
    c.run(*days("2026-03-22", "2026-03-22"))
    # Then it demands both, claimed from now on
    assert formal_notice(c)["totals"] == {"outstanding": "1000.00", "interest": "6.66", "fees": "40.00"}
    assert {kind: row[4] for kind, row in owed(c, "INV-1").items()} == {INTEREST: True, INDEMNITY: True}


def test_an_invoice_paid_29_days_late_shows_its_claims_owed_and_unclaimed() -> None:
    # Given a ladder whose formal notice comes 30 days after the due date, and an invoice paid 29 days late
    ladder = (*POLICY.levels[:3], replace(POLICY.levels[3], offset_days=30), *POLICY.levels[4:])
    ladder = (*ladder[:4], replace(ladder[4], offset_days=40), replace(ladder[5], offset_days=55))
    c = Customer(policy=replace(POLICY, levels=ladder))
    c.erp(date(2026, 2, 1), INV1)
    c.run(
        *days("2026-02-01", "2026-05-31"), erp={date(2026, 3, 31): [payment("P1", "1000.00", received_on="2026-03-31")]}
    )
    # Then its interest is fixed for good through the payment day: 29 days (3 to 31 March) = 9.653... = 9.65
    assert c.table()["2026-03-31"] == [("fixed", "INV-1", "9.65", "2026-03-31")]
    assert owed(c, "INV-1") == {
        INTEREST: ("9.65", "0", "0", "9.65", False),
        INDEMNITY: ("40.00", "0", "0", "40.00", False),
    }
    assert c.state.claims_owed() == {"EUR": D("49.65")}
    # And nothing demands them, nobody is asked to pursue them (they were never claimed), nothing more is computed
    assert [r["level"] for r in c.only("reminder.requested")] == ["courtesy", "reminder-1"]
    assert not [t for t in c.only("task.created") if t["kind"] == TASK]
    assert all(day <= "2026-03-31" for day in c.table())
    # But a collector may waive them all the same
    waive(c, date(2026, 4, 2), "INV-1", INDEMNITY)
    assert c.state.claims_owed() == {"EUR": D("9.65")}


def test_the_indemnity_is_due_per_late_invoice_and_never_for_one_paid_on_time() -> None:
    # Given three invoices: one paid on its due date, two left late (due 2 and 9 March)
    c = Customer()
    c.erp(
        date(2026, 2, 1),
        INV1,
        invoice("INV-2", "200.00", issue_date="2026-02-01", due_date="2026-03-09"),
        invoice("INV-3", "300.00", issue_date="2026-02-01", due_date="2026-03-05"),
    )
    c.run(
        *days("2026-02-01", "2026-04-30"),
        erp={date(2026, 3, 5): [payment("P1", "300.00", received_on="2026-03-05", allocations={"INV-3": "300.00"})]},
    )
    # Then each late invoice got one indemnity, the day after its due date, and the one paid on time none
    fees = [(f["invoice_id"], f["amount"], f["as_of"][:10]) for f in c.only("fee.charged")]
    assert fees == [("INV-1", "40.00", "2026-03-03"), ("INV-2", "40.00", "2026-03-10")]
    assert c.state.claims.of_invoice("INV-3") == []


# ------------------------------------------------------------------------------------------- after the principal
def test_interest_stays_owed_after_the_principal_is_paid_and_rides_in_the_next_reminder() -> None:
    # Given the formal notice of 22 March (1,000.00 + 6.66 interest + 40.00), and a second invoice due 30 April
    c = Customer()
    c.erp(date(2026, 2, 1), INV1, INV2)
    # When the customer pays the principal alone on 25 March
    c.run(
        *days("2026-02-01", "2026-05-12"), erp={date(2026, 3, 25): [payment("P1", "1000.00", received_on="2026-03-25")]}
    )
    # Then the interest is fixed through the payment day, 23 days (3 to 25 March) = 7.656... = 7.66, and stays owed
    # with the indemnity; one task asks a collector to pursue or waive them
    table = c.table()
    assert table["2026-03-25"][0] == ("fixed", "INV-1", "7.66", "2026-03-25")
    assert ("task", TASK, "INV-1", "47.66") in table["2026-03-25"]
    assert owed(c, "INV-1") == {
        INTEREST: ("7.66", "0", "0", "7.66", True),
        INDEMNITY: ("40.00", "0", "0", "40.00", True),
    }
    # And the second invoice's first reminder carries them apart from its own lines
    (second,) = [r for r in c.only("reminder.requested") if r["invoice_ids"] == ["INV-2"] and r["level"] != "courtesy"]
    paid = {"paid_on": "2026-03-25", "days_late": 23}
    assert second["claims"] == [
        {"invoice_id": "INV-1", "number": "F-INV-1", "kind": "interest", "currency": "EUR", "amount": "7.66", **paid},
        {"invoice_id": "INV-1", "number": "F-INV-1", "kind": "indemnity", "currency": "EUR", "amount": "40.00", **paid},
    ]
    assert second["totals"]["claims"] == "47.66" and second["totals"]["outstanding"] == "500.00"
    # And no interest.computed follows the fixed figure
    assert [i for i in c.only("interest.computed") if i["invoice_id"] == "INV-1" and i["through"] > "2026-03-25"] == []


def test_paying_exactly_what_the_formal_notice_demands_settles_the_claims_not_the_next_invoice() -> None:
    # Given the formal notice of 22 March demanding 1,046.66 (1,000.00 + 6.66 + 40.00)
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-24"))
    assert formal_notice(c)["totals"] == {"outstanding": "1000.00", "interest": "6.66", "fees": "40.00"}
    # When the customer pays exactly that, unallocated, on 25 March, and a new invoice comes the day after
    c.run(
        *days("2026-03-25", "2026-04-10"),
        erp={
            date(2026, 3, 25): [payment("P1", "1046.66", received_on="2026-03-25")],
            date(2026, 3, 26): [invoice("INV-3", "700.00", issue_date="2026-03-26", due_date="2026-04-25")],
        },
    )
    # Then the surplus settled what was demanded: 6.66 of interest and the 40.00, nothing went to the new invoice
    assert c.state.invoices["INV-3"].outstanding == D("700.00")
    assert c.state.claims.get("INV-1", INDEMNITY).settled == {"payment:P1": D("40.00")}  # type: ignore[union-attr]
    # And the interest of the 3 days between the notice and the payment (7.66 - 6.66) is what is still owed
    assert owed(c, "INV-1") == {
        INTEREST: ("7.66", "6.66", "0", "1.00", True),
        INDEMNITY: ("40.00", "40.00", "0", "0.00", True),
    }
    assert c.state.unallocated() == {}


def test_a_partial_payment_goes_to_principal_first_by_default_and_to_the_claims_first_under_claims_first() -> None:
    def after_partial_payment(policy: Policy) -> Customer:
        c = Customer(policy=policy)
        c.erp(date(2026, 2, 1), INV1)
        c.run(
            *days("2026-02-01", "2026-03-30"),
            erp={date(2026, 3, 25): [payment("P1", "600.00", received_on="2026-03-25")]},
        )
        return c

    # Given the formal notice of 22 March, and 600.00 paid without allocation on 25 March
    default = after_partial_payment(POLICY)
    civil = after_partial_payment(replace(POLICY, name="civil", claims_allocation="claims_first"))
    # Then by default the 600.00 paid principal, the claims wait, still owed, and the reminders go on for 400.00
    assert default.state.invoices["INV-1"].outstanding == D("400.00")
    assert owed(default, "INV-1")[INTEREST][1:4] == ("0", "0", "6.66")
    # And under claims_first the claims recorded were paid first (6.66 + 40.00), principal took the rest: 553.34
    assert civil.state.invoices["INV-1"].outstanding == D("446.66")
    assert owed(civil, "INV-1") == {
        INTEREST: ("6.66", "6.66", "0", "0.00", True),
        INDEMNITY: ("40.00", "40.00", "0", "0.00", True),
    }
    # And the claim events under claims_first carry the rule the fold applies
    assert {f.get("allocation") for f in civil.only("fee.charged")} == {"claims_first"}
    assert {f.get("allocation") for f in default.only("fee.charged")} == {None}


def test_a_waived_claim_is_never_demanded_again() -> None:
    # Given the formal notice of 22 March and the principal paid on 25 March (7.66 + 40.00 owed)
    c = Customer()
    c.erp(date(2026, 2, 1), INV1, INV2)
    c.run(
        *days("2026-02-01", "2026-03-30"), erp={date(2026, 3, 25): [payment("P1", "1000.00", received_on="2026-03-25")]}
    )
    # When a collector waives the indemnity, and 2.66 of the interest
    waive(c, date(2026, 3, 31), "INV-1", INDEMNITY)
    waive(c, date(2026, 4, 1), "INV-1", INTEREST, "2.66")
    c.run(*days("2026-03-31", "2026-05-12"))
    # Then what is owed is the 5.00 of interest left, and the next reminder asks for that alone
    assert owed(c, "INV-1") == {
        INTEREST: ("7.66", "0", "2.66", "5.00", True),
        INDEMNITY: ("40.00", "0", "40.00", "0.00", True),
    }
    reminder = [r for r in c.only("reminder.requested") if r["invoice_ids"] == ["INV-2"]][-1]
    assert [(cl["kind"], cl["amount"]) for cl in reminder["claims"]] == [("interest", "5.00")]
    assert reminder["totals"]["claims"] == "5.00"
    assert c.state.claims.get("INV-1", INDEMNITY).waivers == [  # type: ignore[union-attr]
        {"amount": "40.00", "reason": "goodwill after the dispute", "author": "M. Durand"}
    ]


def test_unallocated_money_pays_open_principal_before_claims_and_the_claims_once_nothing_else_is_open() -> None:
    def paid_twice(*invoices: Ev) -> Customer:
        c = Customer()
        c.erp(date(2026, 2, 1), *invoices)
        c.run(
            *days("2026-02-01", "2026-04-10"),
            erp={
                date(2026, 3, 25): [
                    payment("P1", "1000.00", received_on="2026-03-25", allocations={"INV-1": "1000.00"})
                ],
                date(2026, 3, 26): [payment("P2", "47.66", received_on="2026-03-26")],
            },
        )
        return c

    # Given the principal paid on 25 March, allocated, and 47.66 (the claims: 7.66 + 40.00) the day after, unallocated
    alone = paid_twice(INV1)
    with_another = paid_twice(INV1, INV2)
    # Then with nothing else open, P2 settled the claims, interest first
    assert alone.state.claims.get("INV-1", INTEREST).settled == {"payment:P2": D("7.66")}  # type: ignore[union-attr]
    assert alone.state.claims_owed() == {} and alone.state.unallocated() == {}
    # And with another invoice open, P2 paid its principal first (as the ERP allocates it), the claims still owed
    assert with_another.state.invoices["INV-2"].outstanding == D("452.34")
    assert with_another.state.claims_owed() == {"EUR": D("47.66")}


def test_the_agenda_keeps_the_claim_owed_task_while_the_claims_are_owed_for_what_they_owe() -> None:
    # Given the principal paid on 25 March after the formal notice: 7.66 + 40.00 claimed and owed
    c = Customer()
    c.erp(date(2026, 2, 1), INV1)
    c.run(
        *days("2026-02-01", "2026-03-26"), erp={date(2026, 3, 25): [payment("P1", "1000.00", received_on="2026-03-25")]}
    )
    # Then the collector's day shows it, at the amount the claims owe, though the invoice is settled
    (item,) = [i for i in build_agenda([c.state], date(2026, 3, 26)) if i.kind == TASK]
    assert (item.invoices, item.at_risk) == (("INV-1",), D("47.66"))
    # And once they are waived, it is gone
    waive(c, date(2026, 3, 27), "INV-1", INTEREST)
    waive(c, date(2026, 3, 27), "INV-1", INDEMNITY)
    assert [i for i in build_agenda([c.state], date(2026, 3, 27)) if i.kind == TASK] == []


# ---------------------------------------------------------------------------------------------------- property
@st.composite
def late_histories(draw: st.DrawFn) -> tuple[list[Ev], dict[date, list[Ev]], list[tuple[date, str, str, str]]]:
    """Invoices due in March, payments (exact, partial, over, allocated or not) and waivers on random days."""
    start = date(2026, 2, 20)
    on = st.integers(min_value=0, max_value=60).map(lambda n: start + timedelta(days=n))
    invoices = []
    for n in range(draw(st.integers(min_value=1, max_value=3))):
        due = date(2026, 3, 1) + timedelta(days=draw(st.integers(min_value=0, max_value=20)))
        cents = draw(st.integers(min_value=1_000, max_value=200_000))
        invoices.append(
            invoice(f"INV-{n}", str(D(cents).scaleb(-2)), issue_date=due - timedelta(days=30), due_date=due)
        )
    erp: dict[date, list[Ev]] = {}
    for n in range(draw(st.integers(min_value=0, max_value=4))):
        day = draw(on)
        target = draw(st.sampled_from(invoices)).data
        amount = D(target["amount"]) + D(draw(st.integers(min_value=-50_000, max_value=10_000))).scaleb(-2)
        if amount <= 0:
            continue
        allocations = {target["invoice_id"]: str(min(amount, D(target["amount"])))} if draw(st.booleans()) else {}
        erp.setdefault(day, []).append(payment(f"P{n}", str(amount), received_on=day, allocations=allocations))
    waivers = [
        (
            draw(on),
            draw(st.sampled_from(invoices)).data["invoice_id"],
            draw(st.sampled_from([INTEREST, INDEMNITY])),
            part,
        )
        for part in draw(st.lists(st.sampled_from(["all", "half"]), max_size=3))
    ]
    return invoices, erp, waivers


@settings(max_examples=60, deadline=None)
@given(late_histories())
def test_for_random_histories_claims_owed_are_interest_and_fees_less_payments_allocated_and_waivers(
    history: tuple[list[Ev], dict[date, list[Ev]], list[tuple[date, str, str, str]]],
) -> None:
    invoices, erp, waivers = history
    c = Customer()
    c.erp(date(2026, 2, 1), *invoices)
    day = date(2026, 2, 20)
    asked: set[tuple[str, str]] = set()
    while day <= date(2026, 4, 30):
        if day in erp:
            c.erp(day, *erp[day])
        for on, invoice_id, kind, part in waivers:
            claim = c.state.claims.get(invoice_id, kind)
            if on == day and claim is not None and claim.owed > 0:
                amount = None if part == "all" else str((claim.owed / 2).quantize(D("0.01")))
                if amount != "0.00":
                    waive(c, day, invoice_id, kind, amount)
        for decision in c.evaluate(day):
            if decision.event_type == "reminder.requested":  # no claim paid or waived, none stated twice
                check_claims_asked(c.state, decision.data, asked)
        day += timedelta(days=1)
    event("claims statement" if any(r["level"] == CLAIMS_STATEMENT for r in c.only("reminder.requested")) else "none")
    decided = [(d.event_type, d.data) for ds in c.log.values() for d in ds]
    dues = {i.data["invoice_id"]: date.fromisoformat(i.data["due_date"]) for i in invoices}
    # One indemnity per invoice, only once it is late; no running interest after the fixed figure
    fees = [data for kind, data in decided if kind == "fee.charged"]
    assert len({f["invoice_id"] for f in fees}) == len(fees)
    assert all(date.fromisoformat(f["as_of"][:10]) > dues[f["invoice_id"]] for f in fees)
    fixed_on = {data["invoice_id"]: data["as_of"] for kind, data in decided if kind == "claim.fixed"}
    assert not [
        data
        for kind, data in decided
        if kind == "interest.computed" and data["as_of"] > fixed_on.get(data["invoice_id"], "9")
    ]
    # What each claim owes: its figures from the engine's events, less the money on it and the waivers
    charged: dict[tuple[str, str], D] = {}
    for kind, data in decided:
        if kind in ("interest.computed", "claim.fixed"):
            charged[(data["invoice_id"], INTEREST)] = D(data["amount"])
        elif kind == "fee.charged":
            charged[(data["invoice_id"], INDEMNITY)] = D(data["amount"])
    waived_total: dict[tuple[str, str], D] = {}
    for ev in c.feed.state.claims.all():
        waived_total[(ev.invoice_id, ev.kind)] = sum((D(w["amount"]) for w in ev.waivers), D(0))
    on_claims = D(0)
    for claim in c.state.claims.all():
        key = (claim.invoice_id, claim.kind)
        assert claim.charged == charged.get(key, D(0))
        assert claim.owed == max(D(0), claim.charged - claim.allocated - waived_total[key])
        on_claims += claim.allocated
    paid_in = sum((D(p.data["amount"]) for ps in erp.values() for p in ps), D(0))
    on_invoices = sum((sum(i.allocations.values(), D(0)) for i in c.state.invoices.values()), D(0))
    assert paid_in == on_invoices + on_claims + sum(c.state.unallocated().values(), D(0))
    event("money on claims" if on_claims else "no money on claims")
    event("waived" if any(waived_total.values()) else "nothing waived")
    # And no message ever demanded more than was claimed and owed when it was sent
    for kind, data in decided:
        if kind == "reminder.requested":
            assert all(D(line["amount"]) > 0 for line in data.get("claims", []))


def test_an_indemnity_in_another_currency_than_the_invoice_is_demanded_with_its_currency() -> None:
    # Given a GBP invoice whose indemnity the law sets in EUR (EUR 40 whatever the currency, under French law),
    # charged the first day late
    c = Customer()
    c.erp(date(2026, 2, 1), invoice("INV-G", "1000.00", currency="GBP", issue_date="2026-02-01", due_date="2026-03-02"))
    fee = {"invoice_id": "INV-G", "currency": "EUR", "amount": "40.00"}
    meta = {"policy": POLICY.name, "policy_version": POLICY.version, "as_of": "2026-03-03T09:00:00Z"}
    c.erp(date(2026, 3, 3), Ev("fee.charged", {**fee, **meta}, "fee-INV-G"))
    # When the ladder reaches the formal notice
    c.run(*days("2026-03-03", "2026-03-22"))
    # Then the formal notice's line demands it in its own currency, and the invoice's ladder stays in GBP
    line = formal_notice(c)["lines"][0]
    assert (line["fee"], line["fee_currency"]) == ("40.00", "EUR")
    assert c.state.escalations["INV-G"].currency == "GBP"
    assert c.state.claims_owed() == {"EUR": D("40.00"), "GBP": D("6.66")}


# ---------------------------------------------------------------------------------------------------- claims statement
WEEKLY = replace(POLICY, cadence=Cadence(min_days_between_contacts=7), send_hour=8)
PAID_LATE = {date(2026, 3, 25): [payment("P1", "1000.00", received_on="2026-03-25")]}  # 3 days after the notice


def statements(c: Customer) -> list[dict[str, Any]]:
    return [r for r in c.only("reminder.requested") if r["level"] == CLAIMS_STATEMENT]


def test_a_principal_paid_late_after_the_formal_notice_gets_one_claims_statement_at_the_next_allowed_contact() -> None:
    # Given the formal notice of 22 March (a contact day), contacts a week apart from 08:00, and the principal
    # paid alone on 25 March
    c = Customer(policy=WEEKLY)
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-28"), erp=PAID_LATE)
    # Then on the payment day the interest is fixed and a collector gets the task, but nothing is sent: the cadence
    # allows the next contact on 29 March, which the timer names at the send hour
    table = c.table()
    assert table["2026-03-25"] == [("fixed", "INV-1", "7.66", "2026-03-25"), ("task", TASK, "INV-1", "47.66")]
    assert [day for day in table if day > "2026-03-25"] == []
    assert next_due(c.state, WEEKLY, datetime(2026, 3, 28, 9, tzinfo=UTC), RATES) == datetime(
        2026, 3, 29, 8, tzinfo=UTC
    )
    # When 29 March comes, nothing goes before 08:00
    assert c.evaluate(date(2026, 3, 29), hour=6) == []
    c.run(*days("2026-03-29", "2026-06-30"))
    # Then one claims statement went that day, and nothing ever after
    assert c.table()["2026-03-29"] == [("reminder", "EUR", "claims", "")]
    assert [day for day in c.table() if day > "2026-03-29"] == []
    (statement,) = statements(c)
    assert statement["as_of"] == "2026-03-29T09:00:00Z"
    assert (statement["template"], statement["channel"], statement["lines"], statement["invoice_ids"]) == (
        CLAIMS_STATEMENT, "email", [], [],
    )  # fmt: skip
    paid = {"paid_on": "2026-03-25", "days_late": 23}
    assert statement["claims"] == [
        {"invoice_id": "INV-1", "number": "F-INV-1", "kind": "interest", "currency": "EUR", "amount": "7.66", **paid},
        {"invoice_id": "INV-1", "number": "F-INV-1", "kind": "indemnity", "currency": "EUR", "amount": "40.00", **paid},
    ]
    assert statement["totals"] == {"outstanding": "0", "interest": "0", "fees": "0", "claims": "47.66"}
    assert statement["law"] == "fr" and [r["rate"] for r in statement["rates"]] == ["12.15"]
    # And the fold knows both claims asked, by that statement; the claims stay owed, the task with them
    assert {claim.kind: claim.asked for claim in c.state.claims.of_invoice("INV-1")} == {
        INTEREST: statement["reminder_id"],
        INDEMNITY: statement["reminder_id"],
    }
    assert owed(c, "INV-1")[INTEREST][3] == "7.66" and f"{TASK}" in {t["kind"] for t in c.state.tasks.values()}


def test_claims_waived_before_the_next_allowed_contact_get_no_statement() -> None:
    # Given the principal paid late on 25 March, both claims owed
    c = Customer(policy=WEEKLY)
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-27"), erp=PAID_LATE)
    # When a collector waives both before 29 March
    waive(c, date(2026, 3, 28), "INV-1", INTEREST)
    waive(c, date(2026, 3, 28), "INV-1", INDEMNITY)
    c.run(*days("2026-03-28", "2026-06-30"))
    # Then no statement ever goes, and nothing is decided after the payment day
    assert statements(c) == []
    assert [day for day in c.table() if day > "2026-03-25"] == []


def test_claims_below_the_policy_s_minimum_get_no_statement_of_their_own_and_stay_owed() -> None:
    # Given a minimum of EUR 10.00, the principal paid late, and the indemnity waived: 7.66 of interest is left
    c = Customer(policy=replace(WEEKLY, minimum_overdue={"EUR": D("10.00")}))
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-27"), erp=PAID_LATE)
    waive(c, date(2026, 3, 28), "INV-1", INDEMNITY)
    c.run(*days("2026-03-28", "2026-06-30"))
    # Then no letter goes for 7.66, and the interest stays owed, for the next message or a collector's waiver
    assert statements(c) == []
    assert owed(c, "INV-1")[INTEREST][3] == "7.66"


def test_a_claim_partly_waived_is_stated_for_what_is_left() -> None:
    c = Customer(policy=WEEKLY)
    c.erp(date(2026, 2, 1), INV1)
    c.run(*days("2026-02-01", "2026-03-27"), erp=PAID_LATE)
    waive(c, date(2026, 3, 28), "INV-1", INDEMNITY, "15.00")
    c.run(*days("2026-03-28", "2026-04-30"))
    (statement,) = statements(c)
    assert [(cl["kind"], cl["amount"]) for cl in statement["claims"]] == [("interest", "7.66"), ("indemnity", "25.00")]
    assert statement["totals"]["claims"] == "32.66"


def test_a_new_invoice_s_message_that_day_carries_the_claims_instead_of_a_statement() -> None:
    # Given the principal paid late on 25 March, and a new invoice due on 1 April whose advance notice falls on
    # 29 March, the first day the cadence allows
    c = Customer(policy=WEEKLY)
    c.erp(date(2026, 2, 1), INV1)
    inv2 = invoice("INV-2", "500.00", issue_date="2026-03-26", due_date="2026-04-01")
    c.run(*days("2026-02-01", "2026-04-20"), erp={**PAID_LATE, date(2026, 3, 26): [inv2]})
    # Then the advance notice carries them, no statement goes, and the later reminder lists them as still owed
    assert c.table(claims=False)["2026-03-29"] == [
        ("level", "INV-2", "courtesy"),
        ("reminder", "EUR", "courtesy", "INV-2"),
    ]
    courtesy, reminder = [r for r in c.only("reminder.requested") if r["invoice_ids"] == ["INV-2"]]
    assert [(cl["kind"], cl["amount"]) for cl in courtesy["claims"]] == [("interest", "7.66"), ("indemnity", "40.00")]
    assert courtesy["totals"]["claims"] == "47.66"
    assert statements(c) == [] and reminder["level"] == "reminder-1" and reminder["totals"]["claims"] == "47.66"
    assert {claim.asked for claim in c.state.claims.of_invoice("INV-1")} == {courtesy["reminder_id"]}


def test_a_statement_per_currency_and_a_claim_settled_later_is_asked_once_more_never_the_first_again() -> None:
    # Given two invoices paid late, in euros and in dollars, on 25 March, and a third euro one paid late on 20 April
    usd = invoice("INV-U", "800.00", currency="USD", issue_date="2026-02-01", due_date="2026-03-02")
    late = invoice("INV-4", "300.00", issue_date="2026-02-01", due_date="2026-03-02")
    c = Customer(policy=WEEKLY)
    c.erp(date(2026, 2, 1), INV1, usd, late)
    c.run(
        *days("2026-02-01", "2026-05-31"),
        erp={
            date(2026, 3, 25): [
                payment("P1", "1000.00", received_on="2026-03-25", allocations={"INV-1": "1000.00"}),
                payment("P2", "800.00", currency="USD", received_on="2026-03-25"),
            ],
            date(2026, 4, 20): [payment("P3", "300.00", received_on="2026-04-20", allocations={"INV-4": "300.00"})],
        },
    )
    # Then 29 March has one statement per currency, and INV-4 (still open then: its reminders carried INV-1's
    # claims meanwhile) gets its own statement at the next contact after 20 April, without INV-1's again
    first_eur, first_usd, later = statements(c)
    assert (first_eur["currency"], first_usd["currency"], later["currency"]) == ("EUR", "USD", "EUR")
    assert first_eur["as_of"][:10] == first_usd["as_of"][:10] == "2026-03-29"
    assert {cl["invoice_id"] for cl in first_eur["claims"]} == {"INV-1"}
    assert {(cl["invoice_id"], cl["currency"]) for cl in first_usd["claims"]} == {("INV-U", "USD"), ("INV-U", "EUR")}
    assert first_usd["totals"]["claims"] == next(cl["amount"] for cl in first_usd["claims"] if cl["kind"] == "interest")
    assert {cl["invoice_id"] for cl in later["claims"]} == {"INV-4"} and later["as_of"][:10] >= "2026-04-20"
