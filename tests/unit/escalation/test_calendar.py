"""Business days, French public holidays, and the day each level falls due."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from services.escalation.calendar import (
    business_day_on_or_after,
    easter_sunday,
    french_holidays,
    holiday_calendar,
    is_business_day,
    next_business_day,
    step_date,
)
from services.escalation.model import Level, Policy

FRANCE_2026 = french_holidays(2026)


def _policy(**changes: object) -> Policy:
    base = Policy(name="p", version="v", levels=(Level("l", 1, "email", "t"),), holidays=FRANCE_2026)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_french_holidays_of_2026() -> None:
    # Given Easter Sunday 2026 on 5 April
    assert easter_sunday(2026) == date(2026, 4, 5)
    # Then the movable feasts follow it, and the fixed ones are there: eleven in all
    assert {date(2026, 4, 6), date(2026, 5, 14), date(2026, 5, 25)} <= FRANCE_2026  # Easter Mon, Ascension, Whit Mon
    assert {date(2026, 1, 1), date(2026, 5, 1), date(2026, 5, 8), date(2026, 7, 14), date(2026, 8, 15)} <= FRANCE_2026
    assert {date(2026, 11, 1), date(2026, 11, 11), date(2026, 12, 25)} <= FRANCE_2026
    assert len(FRANCE_2026) == 11


def test_alsace_moselle_adds_good_friday_and_st_stephen() -> None:
    extra = french_holidays(2026, alsace_moselle=True) - FRANCE_2026
    assert extra == {date(2026, 4, 3), date(2026, 12, 26)}


@pytest.mark.parametrize(
    ("year", "easter"),
    [(2024, date(2024, 3, 31)), (2025, date(2025, 4, 20)), (2027, date(2027, 3, 28)), (2038, date(2038, 4, 25))],
)
def test_easter_of_other_years(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_a_named_calendar_spans_many_years() -> None:
    days = holiday_calendar("france", range(2025, 2028))
    assert len(days) == 33
    assert date(2027, 3, 29) in days  # Easter Monday 2027


def test_business_days_skip_weekends_and_holidays() -> None:
    # Given Friday 2026-05-22 before the Whit Monday weekend
    friday = date(2026, 5, 22)
    # Then the next business day is Tuesday 26 May, and a business day is its own "on or after"
    assert next_business_day(friday, FRANCE_2026) == date(2026, 5, 26)
    assert business_day_on_or_after(friday, FRANCE_2026) == friday
    assert not is_business_day(date(2026, 5, 25), FRANCE_2026)
    # And without holidays only the weekend is skipped
    assert next_business_day(friday) == date(2026, 5, 25)


def test_a_step_on_a_saturday_moves_to_monday() -> None:
    # Given an invoice due Friday 2026-01-02 and a level one day after
    level = Level("reminder_1", 1, "email", "reminder_1")
    # Then the step, Saturday 3 January, moves to Monday 5 January
    assert step_date(date(2026, 1, 2), level, _policy()) == date(2026, 1, 5)


def test_a_step_on_a_holiday_moves_to_the_next_business_day() -> None:
    # Given an invoice due 2026-04-29 and a level 15 days after: Thursday 14 May, Ascension
    level = Level("reminder_2", 15, "email", "reminder_2")
    # Then it moves to Friday 15 May
    assert step_date(date(2026, 4, 29), level, _policy()) == date(2026, 5, 15)


def test_a_step_on_a_weekend_before_a_holiday_moves_past_both() -> None:
    # Given a step on Saturday 2026-05-23, followed by Sunday and Whit Monday
    level = Level("reminder_2", 15, "email", "reminder_2")
    # Then it goes out on Tuesday 26 May
    assert step_date(date(2026, 5, 8), level, _policy()) == date(2026, 5, 26)


def test_grace_days_delay_only_steps_after_the_due_date() -> None:
    # Given a 3-day grace period and a due date of Wednesday 2026-03-11
    policy = _policy(grace_days=3)
    due = date(2026, 3, 11)
    # Then a courtesy notice 5 days before stays on Friday 6 March, a reminder at +1 lands on Sunday 15 -> Monday 16
    assert step_date(due, Level("courtesy", -5, "email", "courtesy"), policy) == date(2026, 3, 6)
    assert step_date(due, Level("reminder_1", 1, "email", "reminder_1"), policy) == date(2026, 3, 16)
    # And a step on the due date itself gets no grace
    assert step_date(due, Level("due", 0, "email", "due"), policy) == due


def test_calendar_days_when_business_days_are_off() -> None:
    policy = _policy(business_days=False)
    assert step_date(date(2026, 1, 2), Level("reminder_1", 1, "email", "reminder_1"), policy) == date(2026, 1, 3)
