"""Payment terms against the French cap (Code de commerce L441-10 I): flagged, never refused.

Between businesses, French law caps payment terms at 60 days from the invoice date, or, when the contract says so,
45 days end of month. Both readings of "45 days end of month" are in use: the invoice date + 45 days, then the end of
that month; or the end of the invoice's month, then + 45 days. An invoice is beyond the cap only when its due date is
after the latest of the three dates, so no reading a creditor may rely on is flagged.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import date, timedelta

CAP_DAYS = 60
END_OF_MONTH_DAYS = 45
CAP_NOTE = "terms beyond the French cap (L441-10: 60 days from issue, or 45 days end of month)"


def _end_of_month(day: date) -> date:
    return day.replace(day=monthrange(day.year, day.month)[1])


def latest_due_date(issue_date: date) -> date | None:
    """The latest due date the French cap allows for an invoice issued on ``issue_date`` (None past the calendar)."""
    try:
        return max(
            issue_date + timedelta(days=CAP_DAYS),
            _end_of_month(issue_date + timedelta(days=END_OF_MONTH_DAYS)),
            _end_of_month(issue_date) + timedelta(days=END_OF_MONTH_DAYS),
        )
    except OverflowError:
        return None


def beyond_french_cap(issue_date: date, due_date: date) -> bool:
    """Whether the terms (issue to due date) exceed the French cap under every reading of it."""
    latest = latest_due_date(issue_date)
    return latest is not None and due_date > latest
