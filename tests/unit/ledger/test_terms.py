"""Payment terms against the French cap (L441-10): both readings of "45 days end of month", flagged in ledger show."""

from __future__ import annotations

from datetime import date

import pytest

from shared.ledger.show import render_stream, stream_document
from shared.ledger.terms import beyond_french_cap, latest_due_date
from tests.factories import fold, invoice


@pytest.mark.parametrize(
    ("issued", "latest"),
    [
        # Issued 10 January 2026: +60 days = 11 March; +45 days = 24 February, end of month = 28 February;
        # end of January = 31 January, +45 days = 17 March. The latest of the three: 17 March.
        (date(2026, 1, 10), date(2026, 3, 17)),
        # Issued 20 March 2026: +60 = 19 May; +45 = 4 May, end of month = 31 May; 31 March + 45 = 15 May: 31 May.
        (date(2026, 3, 20), date(2026, 5, 31)),
        # Issued 1 December 2025: +60 = 30 January 2026; +45 = 15 January, end of month = 31 January;
        # 31 December + 45 = 14 February 2026: 14 February.
        (date(2025, 12, 1), date(2026, 2, 14)),
        # Issued 31 December 2027: +60 = 29 February 2028 (leap year); +45 = 14 February, end of month = 29 February;
        # 31 December + 45 = 14 February: 29 February.
        (date(2027, 12, 31), date(2028, 2, 29)),
    ],
)
def test_the_latest_due_date_is_the_latest_of_sixty_days_and_both_end_of_month_readings(
    issued: date, latest: date
) -> None:
    assert latest_due_date(issued) == latest
    assert not beyond_french_cap(issued, latest)
    assert beyond_french_cap(issued, date.fromordinal(latest.toordinal() + 1))


def test_each_reading_alone_would_flag_terms_the_other_allows() -> None:
    # Issued 10 January: "end of month then + 45" allows 17 March, later than 60 days (11 March) and than
    # "+ 45 then end of month" (28 February): terms to 15 March pass, though two readings alone would flag them
    assert not beyond_french_cap(date(2026, 1, 10), date(2026, 3, 15))
    # Issued 20 March: "+ 45 then end of month" allows 31 May, later than the others (19 May, 15 May)
    assert not beyond_french_cap(date(2026, 3, 20), date(2026, 5, 30))


def test_the_end_of_the_calendar_is_never_flagged() -> None:
    assert latest_due_date(date(9999, 12, 1)) is None
    assert not beyond_french_cap(date(9999, 12, 1), date(9999, 12, 31))


def test_ledger_show_flags_the_invoice_beyond_the_cap_and_names_the_french_rule() -> None:
    # Given an invoice at 60 days and one at 90 days from 1 October 2026 (latest allowed: 15 December,
    # 31 October + 45 days; +60 = 30 November; +45 = 15 November, end of month = 30 November)
    state = fold(
        [
            invoice("INV-60", "100.00", issue_date="2026-10-01", due_date="2026-11-30"),
            invoice("INV-90", "100.00", issue_date="2026-10-01", due_date="2026-12-30"),
        ]
    )
    text = render_stream([], state)
    (ok,) = [line for line in text.splitlines() if "F-INV-60" in line]
    (late,) = [line for line in text.splitlines() if "F-INV-90" in line]
    # Then only the 90-day invoice is flagged, and the legend names the French cap; nothing is refused
    assert late.endswith("open beyond-french-cap") and ok.endswith("open")
    assert (
        "  beyond-french-cap: terms beyond the French cap (L441-10: 60 days from issue, or 45 days end of month), "
        "under every reading; flagged, not refused"
    ) in text
    assert {i.invoice_id for i in state.open_invoices()} == {"INV-60", "INV-90"}
    # And the JSON view (ledger show --json) names it too
    assert stream_document([], state)["state"]["beyond_french_cap"] == ["INV-90"]
