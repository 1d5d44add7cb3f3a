"""Law per policy: French, EU-minimum and English law, worked by hand (the arithmetic is in the comments).

Rates used, from the shipped tables: ECB 2024-01-01 4.50, 2024-07-01 4.25, 2025-01-01 3.15, 2025-07-01 2.15,
2026-01-01 2.15; Bank of England Bank Rate on 31 Dec 2024 4.75, 30 Jun 2025 4.25, 31 Dec 2025 3.75; French legal
interest rate (creditors other than individuals) 2025-07-01 2.76, 2026-01-01 2.62.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal as D
from fractions import Fraction
from pathlib import Path

import pytest

from services.escalation.interest import (
    BOE,
    ECB,
    LEGAL_FR,
    MissingReferenceRate,
    RateTable,
    late_interest,
    outstanding_timeline,
)
from services.escalation.law import Fee, applied_rates, fixed_fee, reminder_law
from services.escalation.model import InterestRule, Level, Policy
from services.escalation.policy import PolicyBook
from shared.contracts import events
from shared.ledger.receivables import Invoice
from tests.factories import customer, invoice, payment
from tests.unit.escalation.test_engine import LADDER, Customer, days, hold_tasks

TABLES = RateTable.default()
FRANCE = InterestRule()  # ECB + 10
EU = InterestRule(margin=D("8"))  # ECB + 8
UK = InterestRule(margin=D("8"), reference=BOE)  # Bank Rate + 8
FR_AGREED_8 = InterestRule(basis="contractual", rate=D("8.00"), floor=True)  # an agreed 8 %, French floor applies


def _policy(law: str, **changes: object) -> Policy:
    levels = (Level("l", 1, "email", "t"),)
    return replace(Policy(name=f"p-{law}", version="v", levels=levels, law=law), **changes)  # type: ignore[arg-type]


def _invoice(amount: str, currency: str = "GBP") -> Invoice:
    return Invoice("I", "F-1", date(2026, 1, 1), date(2026, 1, 31), currency, D(amount), D(amount))


# --- French law ---------------------------------------------------------------------------------------------------
def test_french_interest_over_three_semesters() -> None:
    # Given EUR 10,000.00 due 2024-05-31, unpaid through 2025-01-31
    timeline = outstanding_timeline(D("10000.00"), [], date(2024, 5, 1))
    result = late_interest(timeline, date(2024, 5, 31), date(2025, 1, 31), FRANCE, TABLES, "EUR")
    # Then 1-30 June 2024:        30 days at 4.50 + 10 = 14.50 %: 10000 * 0.1450 * 30  = 43500   / 365
    #      1 Jul-31 Dec 2024:    184 days at 4.25 + 10 = 14.25 %: 10000 * 0.1425 * 184 = 262200  / 365
    #      1-31 January 2025:     31 days at 3.15 + 10 = 13.15 %: 10000 * 0.1315 * 31  = 40765   / 365
    #      total 346465 / 365 = 949.2191... -> 949.22
    assert [(p.days, p.annual_rate) for p in result.periods] == [(30, D("14.50")), (184, D("14.25")), (31, D("13.15"))]
    assert result.exact == Fraction(346465, 365)
    assert result.amount == D("949.22")


def test_french_interest_over_three_semesters_with_a_partial_payment() -> None:
    # Given the same invoice, EUR 4,000.00 of it paid on 2024-09-15 (the payment day still accrues on 10,000)
    timeline = outstanding_timeline(D("10000.00"), [(date(2024, 9, 15), D("4000.00"))], date(2024, 5, 1))
    result = late_interest(timeline, date(2024, 5, 31), date(2025, 1, 31), FRANCE, TABLES, "EUR")
    # Then June:           30 days * 10000 * 0.1450 = 43500
    #      1 Jul-15 Sep:   77 days (31 + 31 + 15) * 10000 * 0.1425 = 109725
    #      16 Sep-31 Dec: 107 days (15 + 31 + 30 + 31) * 6000 * 0.1425 = 91485
    #      January:        31 days * 6000 * 0.1315 = 24459
    #      total 269169 / 365 = 737.4493... -> 737.45
    assert [(p.days, p.base) for p in result.periods] == [
        (30, D("10000.00")),
        (77, D("10000.00")),
        (107, D("6000.00")),
        (31, D("6000.00")),
    ]
    assert result.exact == Fraction(269169, 365)
    assert result.amount == D("737.45")


def test_a_deposit_paid_before_the_invoice_lowers_the_base_from_the_start() -> None:
    # Given EUR 1,200.00 issued 2025-03-01, due 2025-03-31, of which EUR 200.00 was paid on 2025-02-15 (a deposit)
    timeline = outstanding_timeline(D("1200.00"), [(date(2025, 2, 15), D("200.00"))], date(2025, 3, 1))
    # Then the timeline starts at 1,000.00, never at 1,200.00
    assert timeline == [(date(2025, 3, 1), D("1000.00"))]
    # And April's 30 days accrue on 1,000 at 3.15 + 10 = 13.15 %: 1000 * 0.1315 * 30 = 3945 / 365 = 10.808 -> 10.81
    # (on 1,200 it would be 12.97: over-claimed)
    result = late_interest(timeline, date(2025, 3, 31), date(2025, 4, 30), FRANCE, TABLES, "EUR")
    assert result.exact == Fraction(3945, 365) and result.amount == D("10.81")
    # And a deposit with a later payment: the later one still lowers the base from its own day
    later = outstanding_timeline(
        D("1200.00"), [(date(2025, 4, 10), D("500.00")), (date(2025, 2, 15), D("200.00"))], date(2025, 3, 1)
    )
    assert later == [(date(2025, 3, 1), D("1000.00")), (date(2025, 4, 10), D("500.00"))]


def test_an_agreed_rate_is_floored_at_three_times_the_legal_rate_of_each_semester() -> None:
    # Given an agreed 8.00 % under French law, on EUR 1,000.00 due 2025-06-30, through 2026-01-31
    timeline = outstanding_timeline(D("1000.00"), [], date(2025, 6, 1))
    result = late_interest(timeline, date(2025, 6, 30), date(2026, 1, 31), FR_AGREED_8, TABLES, "EUR")
    # Then 1 Jul-31 Dec 2025: the floor 3 * 2.76 = 8.28 % beats 8.00: 184 days * 1000 * 0.0828 = 15235.2
    #      January 2026:      the floor 3 * 2.62 = 7.86 % does not: 31 days * 1000 * 0.0800 = 2480
    #      total 17715.2 / 365 = 48.5347... -> 48.53
    assert [(p.days, p.annual_rate, p.reference) for p in result.periods] == [
        (184, D("8.28"), None),
        (31, D("8.00"), None),
    ]
    assert result.exact == Fraction(177152, 3650)
    assert result.amount == D("48.53")
    # And the rates stated are the agreed ones, without reference nor margin
    assert applied_rates([result]) == [
        events.AppliedRate(from_date=date(2025, 7, 1), rate=D("8.28")),
        events.AppliedRate(from_date=date(2026, 1, 1), rate=D("8.00")),
    ]


def test_a_semester_missing_from_the_legal_rate_table_holds_the_computation() -> None:
    # Given the legal-rate table, which stops at the semester from 2026-01-01
    timeline = outstanding_timeline(D("1000.00"), [], date(2026, 5, 1))
    # When interest under the French floor runs into July 2026, Then it is not computed, naming the row to add
    with pytest.raises(MissingReferenceRate) as caught:
        late_interest(timeline, date(2026, 6, 15), date(2026, 7, 5), FR_AGREED_8, TABLES, "EUR")
    assert (caught.value.semester, caught.value.series) == (date(2026, 7, 1), LEGAL_FR)
    assert '"legal-fr,2026-07-01,<rate in percent>"' in str(caught.value)


def test_the_french_indemnity_is_eur_40_whatever_the_invoice_s_currency() -> None:
    french = _policy("fr")
    assert fixed_fee(french, _invoice("500.00", "EUR")) == Fee(D("40.00"), "EUR")
    assert fixed_fee(french, _invoice("500.00", "GBP")) == Fee(D("40.00"), "EUR")
    assert fixed_fee(french, _invoice("90000", "JPY")) == Fee(D("40.00"), "EUR")
    # And a policy without a EUR fee charges none
    assert fixed_fee(_policy("fr", fixed_fee={}), _invoice("500.00", "EUR")) is None


# --- the EU minimum -----------------------------------------------------------------------------------------------
def test_eu_minimum_interest_is_the_reference_rate_plus_8() -> None:
    # Given EUR 2,000.00 due 2025-06-20, through 2025-07-10
    timeline = outstanding_timeline(D("2000.00"), [], date(2025, 6, 1))
    result = late_interest(timeline, date(2025, 6, 20), date(2025, 7, 10), EU, TABLES, "EUR")
    # Then 21-30 June: 10 days at 3.15 + 8 = 11.15 %: 2000 * 0.1115 * 10 = 2230
    #      1-10 July:  10 days at 2.15 + 8 = 10.15 %: 2000 * 0.1015 * 10 = 2030
    #      total 4260 / 365 = 11.671... -> 11.67
    assert result.exact == Fraction(4260, 365) and result.amount == D("11.67")


def test_eu_minimum_over_three_semesters_with_a_partial_payment() -> None:
    # Given EUR 3,000.00 due 2024-06-10, EUR 1,000.00 paid on 2024-08-31, through 2025-02-10
    timeline = outstanding_timeline(D("3000.00"), [(date(2024, 8, 31), D("1000.00"))], date(2024, 5, 11))
    result = late_interest(timeline, date(2024, 6, 10), date(2025, 2, 10), EU, TABLES, "EUR")
    # Then 11-30 June 2024:   20 days * 3000 * (4.50 + 8 = 12.50 %) = 7500
    #      1 Jul-31 Aug:      62 days * 3000 * (4.25 + 8 = 12.25 %) = 22785
    #      1 Sep-31 Dec:     122 days * 2000 * 12.25 %               = 29890
    #      1 Jan-10 Feb 2025: 41 days * 2000 * (3.15 + 8 = 11.15 %) = 9143
    #      total 69318 / 365 = 189.9123... -> 189.91
    assert [p.days for p in result.periods] == [20, 62, 122, 41]
    assert result.exact == Fraction(69318, 365) and result.amount == D("189.91")


def test_eu_fixed_sum_in_the_invoice_s_currency_where_the_policy_sets_one_else_in_eur() -> None:
    eu = _policy("eu", fixed_fee={"EUR": D("40"), "SEK": D("450")})
    assert fixed_fee(eu, _invoice("100.00", "SEK")) == Fee(D("450.00"), "SEK")
    assert fixed_fee(eu, _invoice("100.00", "GBP")) == Fee(D("40.00"), "EUR")


# --- English law --------------------------------------------------------------------------------------------------
def test_uk_interest_is_bank_rate_plus_8_with_the_act_s_reference_days() -> None:
    # Given GBP 5,000.00 due 2025-05-31, unpaid through 2026-01-15
    timeline = outstanding_timeline(D("5000.00"), [], date(2025, 5, 1))
    result = late_interest(timeline, date(2025, 5, 31), date(2026, 1, 15), UK, TABLES, "GBP")
    # Then June 2025:         30 days at 4.75 (in force 31 Dec 2024) + 8 = 12.75 %: 5000 * 0.1275 * 30  = 19125
    #      1 Jul-31 Dec 2025: 184 days at 4.25 (in force 30 Jun 2025) + 8 = 12.25 %: 5000 * 0.1225 * 184 = 112700
    #      1-15 January 2026:  15 days at 3.75 (in force 31 Dec 2025) + 8 = 11.75 %: 5000 * 0.1175 * 15  = 8812.5
    #      total 140637.5 / 365 = 385.3082... -> 385.31
    assert [(p.days, p.annual_rate) for p in result.periods] == [(30, D("12.75")), (184, D("12.25")), (15, D("11.75"))]
    assert result.exact == Fraction(1406375, 3650) and result.amount == D("385.31")
    # And the rates stated give each semester's reference and margin
    assert applied_rates([result]) == [
        events.AppliedRate(from_date=date(2025, 6, 1), reference=D("4.75"), margin=D("8"), rate=D("12.75")),
        events.AppliedRate(from_date=date(2025, 7, 1), reference=D("4.25"), margin=D("8"), rate=D("12.25")),
        events.AppliedRate(from_date=date(2026, 1, 1), reference=D("3.75"), margin=D("8"), rate=D("11.75")),
    ]


def test_uk_interest_with_a_partial_payment_across_three_semesters() -> None:
    # Given GBP 2,000.00 due 2024-11-30, GBP 500.00 paid on 2025-01-31, through 2025-07-31
    timeline = outstanding_timeline(D("2000.00"), [(date(2025, 1, 31), D("500.00"))], date(2024, 10, 31))
    result = late_interest(timeline, date(2024, 11, 30), date(2025, 7, 31), UK, TABLES, "GBP")
    # Then December 2024:   31 days * 2000 * (5.25 on 30 Jun 2024 + 8 = 13.25 %) = 8215
    #      January 2025:    31 days * 2000 * (4.75 on 31 Dec 2024 + 8 = 12.75 %) = 7905
    #      1 Feb-30 Jun:   150 days (28 + 31 + 30 + 31 + 30) * 1500 * 12.75 %  = 28687.5
    #      July 2025:       31 days * 1500 * (4.25 on 30 Jun 2025 + 8 = 12.25 %) = 5696.25
    #      total 50503.75 / 365 = 138.3664... -> 138.37
    assert [(p.days, p.base, p.annual_rate) for p in result.periods] == [
        (31, D("2000.00"), D("13.25")),
        (31, D("2000.00"), D("12.75")),
        (150, D("1500.00"), D("12.75")),
        (31, D("1500.00"), D("12.25")),
    ]
    assert result.exact == Fraction(5050375, 36500) and result.amount == D("138.37")


def test_a_bank_of_england_row_dated_30_june_applies_from_1_july(tmp_path: Path) -> None:
    # Given a user's row for the reference day 30 June 2026
    extra = tmp_path / "rates.csv"
    extra.write_text("table,date,rate\nboe,2026-06-30,3.50\n", encoding="utf-8")
    table = RateTable.default(extra)
    # Then it applies to July-December 2026, and not to June
    assert table.rate_for(date(2026, 7, 1), BOE) == table.rate_for(date(2026, 12, 31), BOE) == D("3.50")
    assert table.rate_for(date(2026, 6, 30), BOE) == D("3.75")
    # And the ECB table is untouched
    assert table.rate_for(date(2026, 6, 30), ECB) == D("2.15") and not table.has(date(2026, 7, 1), ECB)


@pytest.mark.parametrize(
    ("amount", "fee"),
    [
        ("0.01", "40.00"),
        ("999.99", "40.00"),  # below GBP 1,000
        ("1000.00", "70.00"),  # from 1,000 ...
        ("9999.99", "70.00"),  # ... to 9,999.99
        ("10000.00", "100.00"),  # from 10,000
        ("250000.00", "100.00"),
    ],
)
def test_uk_fixed_sums_by_the_size_of_the_debt(amount: str, fee: str) -> None:
    assert fixed_fee(_policy("uk"), _invoice(amount, "GBP")) == Fee(D(fee), "GBP")


def test_a_non_gbp_invoice_under_uk_law_gets_the_smallest_fixed_sum_in_gbp() -> None:
    # Its band would need the debt's sterling value; GBP 40 is due whatever the size, so never over-claimed
    assert fixed_fee(_policy("uk"), _invoice("50000.00", "EUR")) == Fee(D("40.00"), "GBP")
    # And the policy's fixed_fee map plays no part under English law
    assert fixed_fee(_policy("uk", fixed_fee={"GBP": D("5")}), _invoice("50.00", "GBP")) == Fee(D("40.00"), "GBP")


def test_the_reminder_states_its_law_and_only_rates_it_used() -> None:
    assert reminder_law(_policy("uk"), []) == {"law": "uk"}
    timeline = outstanding_timeline(D("100.00"), [], date(2026, 1, 1))
    owed = late_interest(timeline, date(2026, 1, 10), date(2026, 1, 20), UK, TABLES, "GBP")
    stated = reminder_law(_policy("uk"), [owed, owed])  # two invoices at the same rate: stated once
    assert stated == {
        "law": "uk",
        "rates": [events.AppliedRate(from_date=date(2026, 1, 11), reference=D("3.75"), margin=D("8"), rate=D("11.75"))],
    }


# --- the engine, day by day ---------------------------------------------------------------------------------------
UK_POLICY = Policy(
    name="uk",
    version="v1",
    levels=LADDER,
    business_days=False,
    block_over_credit_limit=False,
    interest=UK,
    law="uk",
)
FR_POLICY = Policy(name="fr", version="v1", levels=LADDER, business_days=False, block_over_credit_limit=False)


def _gbp_customer(policy: Policy, amount: str, through: str) -> Customer:
    """A customer with one GBP invoice issued 1 February 2026, due 2 March, walked day by day through ``through``."""
    c = Customer(policy=policy)
    bill = invoice("INV-1", amount, currency="GBP", issue_date="2026-02-01", due_date="2026-03-02")
    c.erp(date(2026, 2, 1), customer(), bill)
    c.run(*days("2026-02-01", through))
    return c


def test_a_uk_customer_s_formal_notice_charges_bank_rate_plus_8_and_the_act_s_fixed_sum() -> None:
    # Given a GBP 1,500.00 invoice due 2 March 2026 under English law (formal notice 20 days after)
    # When the engine runs every day through the formal notice
    c = _gbp_customer(UK_POLICY, "1500.00", "2026-03-22")
    # Then the fixed sum is GBP 70 (from 1,000 to 9,999.99)
    (fee,) = c.only("fee.charged")
    assert (fee["currency"], fee["amount"]) == ("GBP", "70.00")
    assert "fee_currency" not in c.only("reminder.requested")[-1]["lines"][0]
    # And 20 days (3-22 March) at 3.75 + 8 = 11.75 %: 1500 * 0.1175 * 20 = 3525 / 365 = 9.657... -> 9.66
    interest = c.only("interest.computed")[-1]  # the running figure, as of the formal notice
    assert (interest["through"], interest["amount"]) == ("2026-03-22", "9.66")
    # And every reminder states English law; the formal notice states the rate it applied
    reminders = c.only("reminder.requested")
    assert [r["law"] for r in reminders] == ["uk"] * len(reminders)
    assert "rates" not in reminders[0]
    assert reminders[-1]["rates"] == [{"from_date": "2026-03-03", "reference": "3.75", "margin": "8", "rate": "11.75"}]


def test_a_gbp_invoice_under_french_law_gets_the_eur_40_indemnity() -> None:
    # Given a GBP invoice of a French-law customer, walked through its formal notice
    c = _gbp_customer(FR_POLICY, "1500.00", "2026-03-22")
    # Then the indemnity is EUR 40, in EUR (it used to be none at all)
    (fee,) = c.only("fee.charged")
    assert (fee["invoice_id"], fee["currency"], fee["amount"]) == ("INV-1", "EUR", "40.00")
    # And interest is ECB + 10: 20 days at 12.15 %: 1500 * 0.1215 * 20 = 3645 / 365 = 9.986... -> 9.99
    interest = c.only("interest.computed")[-1]  # the running figure, as of the formal notice
    assert (interest["through"], interest["currency"], interest["amount"]) == ("2026-03-22", "GBP", "9.99")
    # And the formal notice's line says the fee's currency, kept out of the GBP totals
    notice = c.only("reminder.requested")[-1]
    assert notice["law"] == "fr"
    assert (notice["lines"][0]["fee"], notice["lines"][0]["fee_currency"]) == ("40.00", "EUR")
    assert notice["totals"] == {"outstanding": "1500.00", "interest": "9.99", "fees": "0"}


def test_a_deposit_received_before_the_invoice_lowers_the_interest_the_engine_charges() -> None:
    # Given EUR 200.00 received on 20 January for an invoice issued on 1 February, EUR 1,200.00 due 2 March
    c = Customer(policy=FR_POLICY)
    c.erp(
        date(2026, 1, 20),
        customer(),
        payment("DEP", "200.00", received_on="2026-01-20", allocations={"INV-1": "200.00"}),
    )
    c.erp(date(2026, 2, 1), invoice("INV-1", "1200.00", issue_date="2026-02-01", due_date="2026-03-02"))
    c.run(*days("2026-02-01", "2026-03-22"))
    # Then the formal notice's interest accrues on 1,000 from the start:
    # 20 days at 2.15 + 10 = 12.15 %: 1000 * 0.1215 * 20 = 2430 / 365 = 6.657... -> 6.66 (on 1,200: 7.99)
    interest = c.only("interest.computed")[-1]  # the running figure, as of the formal notice
    assert (interest["through"], interest["amount"]) == ("2026-03-22", "6.66")


def test_the_shipped_uk_policy_runs_on_the_shipped_tables() -> None:
    # Given the UK tenant's shipped policy and a GBP 12,000.00 invoice due 2 March 2026
    c = _gbp_customer(PolicyBook.shipped().policies["standard-en"], "12000.00", "2026-04-30")
    # Then its formal notice charges the Act's GBP 100 and Bank Rate + 8
    (fee,) = c.only("fee.charged")
    assert (fee["currency"], fee["amount"]) == ("GBP", "100.00")
    notice = next(r for r in c.only("reminder.requested") if r["level"] == "formal_notice")
    assert notice["law"] == "uk"
    assert notice["rates"] == [{"from_date": "2026-03-03", "reference": "3.75", "margin": "8", "rate": "11.75"}]


def test_a_uk_invoice_whose_half_year_lacks_a_bank_rate_is_held_with_the_row_to_add() -> None:
    # Given English law and the shipped Bank of England table, whose last reference day is 31 December 2025
    c = Customer(policy=UK_POLICY)
    bill = invoice("INV-1", "1500.00", currency="GBP", issue_date="2026-05-20", due_date="2026-06-19")
    c.erp(date(2026, 5, 20), customer(), bill)
    # When the formal notice falls due on 9 July 2026, in a half-year whose rate (30 June 2026) is not in the table
    c.run(*days("2026-05-20", "2026-07-12"))
    # Then no interest is guessed: what accrued in June is known, nothing through a July day; the invoice is held,
    # with one task naming the row to add (its fixed sum, which needs no rate, is owed from its first day late)
    assert all(i["through"] < "2026-07-01" for i in c.only("interest.computed"))
    assert [(f["currency"], f["amount"]) for f in c.only("fee.charged")] == [("GBP", "70.00")]
    (task,) = hold_tasks([d for ds in c.log.values() for d in ds])
    assert task["kind"] == "interest_unavailable" and task["semester"] == "2026-07-01"
    assert (
        "no Bank of England Bank Rate for the semester starting 2026-07-01 in the rate table; add the row "
        '"boe,2026-06-30,<rate in percent>" (the official rate in force on 2026-06-30)'
    ) in task["note"]
