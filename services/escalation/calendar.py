"""Business days and the date each level of a ladder falls due.

A reminder that would go out on a Saturday or a public holiday goes out on the next business day instead: customers
do not read collection letters on Sundays, and a step moved forward is never a step skipped.

Public holiday calendars are computed, not typed in: a policy says ``holidays: france`` (or lists dates), and the
loader expands the calendar over :data:`CALENDAR_YEARS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, timedelta
from functools import lru_cache

from services.escalation.model import Level, Policy

CALENDAR_YEARS = range(2000, 2100)  # years a named calendar is expanded over when a policy is loaded

_SATURDAY = 5
LADDERS_KEPT = 65536  # ladders remembered by :func:`ladder` (an anchor day and a policy's steps each)


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Gregorian algorithm, valid for every year from 1583)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


def french_holidays(year: int, *, alsace_moselle: bool = False) -> frozenset[date]:
    """The eleven French public holidays of ``year`` (thirteen in Alsace-Moselle: Good Friday and 26 December)."""
    easter = easter_sunday(year)
    days = {
        date(year, 1, 1),  # Jour de l'an
        easter + timedelta(days=1),  # Lundi de Pâques
        date(year, 5, 1),  # Fête du travail
        date(year, 5, 8),  # Victoire 1945
        easter + timedelta(days=39),  # Ascension
        easter + timedelta(days=50),  # Lundi de Pentecôte
        date(year, 7, 14),  # Fête nationale
        date(year, 8, 15),  # Assomption
        date(year, 11, 1),  # Toussaint
        date(year, 11, 11),  # Armistice
        date(year, 12, 25),  # Noël
    }
    if alsace_moselle:
        days |= {easter - timedelta(days=2), date(year, 12, 26)}  # Vendredi saint, Saint-Étienne
    return frozenset(days)


HOLIDAY_CALENDARS: dict[str, Callable[[int], frozenset[date]]] = {
    "france": french_holidays,
    "france-alsace-moselle": lambda year: french_holidays(year, alsace_moselle=True),
}


def holiday_calendar(name: str, years: Iterable[int] = CALENDAR_YEARS) -> frozenset[date]:
    """Every holiday of the named calendar over ``years``; ``KeyError`` for an unknown name."""
    generate = HOLIDAY_CALENDARS[name]
    return frozenset(day for year in years for day in generate(year))


def is_business_day(day: date, holidays: frozenset[date] = frozenset()) -> bool:
    return day.weekday() < _SATURDAY and day not in holidays


def business_day_on_or_after(day: date, holidays: frozenset[date] = frozenset()) -> date:
    """``day`` itself when it is a business day, otherwise the first business day after it."""
    while not is_business_day(day, holidays):
        day += timedelta(days=1)
    return day


def next_business_day(day: date, holidays: frozenset[date] = frozenset()) -> date:
    """The first business day strictly after ``day``."""
    return business_day_on_or_after(day + timedelta(days=1), holidays)


def step_date(due_date: date, level: Level, policy: Policy) -> date:
    """The day ``level`` falls due for an invoice due on ``due_date`` under ``policy``.

    Grace days delay only the steps after the due date (a courtesy notice before it is not a reminder to be lenient
    about); with ``business_days`` on, a step landing on a weekend or holiday moves to the next business day.
    """
    offset = level.offset_days + (policy.grace_days if level.offset_days > 0 else 0)
    day = due_date + timedelta(days=offset)
    return business_day_on_or_after(day, policy.holidays) if policy.business_days else day


def ladder(anchor: date, policy: Policy) -> tuple[date, ...]:
    """The day each level of the policy's ladder falls due for an invoice anchored on ``anchor``: the
    :func:`step_date` of every level, computed once per anchor and ladder (raises OverflowError as it does).

    The result depends only on the anchor, the levels' offsets, the grace days and the business-day calendar, so a
    ladder is remembered under those values: the customers of a sweep share a few hundred anchor days.
    """
    offsets = tuple(level.offset_days for level in policy.levels)
    return _ladder(anchor, offsets, policy.grace_days, policy.business_days, policy.holidays)


@lru_cache(maxsize=LADDERS_KEPT)
def _ladder(
    anchor: date, offsets: tuple[int, ...], grace_days: int, business_days: bool, holidays: frozenset[date]
) -> tuple[date, ...]:
    days = (anchor + timedelta(days=offset + (grace_days if offset > 0 else 0)) for offset in offsets)
    return tuple(business_day_on_or_after(day, holidays) if business_days else day for day in days)
