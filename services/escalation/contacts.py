"""What the customer was told, and when it may be told more: the contact side of the dunning engine.

An invoice *reaches* its levels by the calendar (:mod:`services.escalation.engine`); what the customer was *told*
is kept apart in the fold (:class:`shared.ledger.dunning.Escalation` ``notices`` and ``told``, the customer's
``contacts``). This module reads that record in the tenant's days:

* :class:`ContactDays`: the customer's contact days (a reminder in any currency, or a phone_call task), as local
  calendar days, and the cadence's verdict on a day: at least ``min_days`` after the last contact day, and at most
  ``max_contacts`` contact days in any ``window_days`` days. A day that already is a contact day stays allowed (a
  second currency, or a call, joins it).
* :class:`Telling`: what is to be told for an invoice on the evaluation's day (its pending level), the level it is
  listed at, and the interval a pending level asks for.
* :func:`told_index`: the firmest level of the ladder already addressed to the customer for an invoice.
* :func:`notices`: the written levels already sent for an invoice, as the reminder lines name them.

Pure functions of the folded state, the policy and the zone: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.escalation.model import Cadence, Level
from shared.contracts import events
from shared.ledger.state import Escalation


def local_day(instant: str | datetime, zone: ZoneInfo) -> date:
    """The tenant-local calendar day of an instant (a date alone is that day)."""
    if isinstance(instant, str):
        if "T" not in instant:
            return date.fromisoformat(instant)
        instant = datetime.fromisoformat(instant)
    return instant.astimezone(zone).date()


def local_instant(day: date, hour: int, zone: ZoneInfo) -> datetime:
    """``day`` at ``hour`` local time, as a UTC instant (the calendar's last instant when that falls outside it)."""
    try:
        return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if day.year > 1 else datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ContactDays:
    """The local days on which the customer was contacted, oldest first."""

    days: tuple[date, ...]

    @classmethod
    def of(cls, contacts: list[str], zone: ZoneInfo) -> ContactDays:
        return cls(tuple(sorted({local_day(at, zone) for at in contacts})))

    def allows(self, day: date, min_days: int, cadence: Cadence) -> bool:
        """Whether a contact on ``day`` keeps the cadence."""
        if day in self.days:
            return True
        before = [d for d in self.days if d < day]
        if before and (day - before[-1]).days < min_days:
            return False
        if cadence.max_contacts is not None:
            first = day - timedelta(days=cadence.window_days - 1)
            if sum(1 for d in before if d >= first) + 1 > cadence.max_contacts:
                return False
        return True

    def next_allowed(self, after: date, min_days: int, cadence: Cadence) -> date:
        """The first day from ``after`` on which a contact keeps the cadence."""
        day = after
        before = [d for d in self.days if d < day]
        if before:
            day = max(day, before[-1] + timedelta(days=min_days))
        while not self.allows(day, min_days, cadence):
            day += timedelta(days=1)
        return day


@dataclass(frozen=True)
class Telling:
    """The contact rules of one evaluation: the policy's ladder and cadence, on the evaluation's local day.

    Levels are indices in ``levels``; ``reached`` is where an invoice stands once the day's moves are made, ``told``
    the firmest level told for it (:func:`told_index`), ``due`` its (plan's) due date.
    """

    levels: tuple[Level, ...]
    cadence: Cadence
    today: date

    def tone(self, reached: int) -> int | None:
        """The firmest level with a channel (a message or a call) at or below ``reached``."""
        return next((k for k in range(reached, -1, -1) if self.levels[k].contacts), None)

    def pending(self, reached: int, told: int, due: date, handed: bool) -> int | None:
        """The level to tell the customer for the invoice now, if any: the firmest level with a channel it has
        reached, when firmer than what was told; a courtesy notice only before the due date, any other level only
        after it; for an invoice handed over, only the hand-over level's own written notice."""
        tone = self.tone(reached)
        if tone is None or tone <= told:
            return None
        level = self.levels[tone]
        if (self.today >= due) if level.offset_days < 0 else (self.today <= due):
            return None  # a courtesy notice is for before the due date, a demand for after it (a plan moves it)
        if handed and not (level.written and "hand_over" in level.actions):
            return None
        return tone

    def shown(self, reached: int, told: int, due: date) -> str | None:
        """The level an invoice is listed at: the firmest it reached or was told, whichever is firmer (none for an
        invoice due that only reached a courtesy notice)."""
        tone = self.tone(reached)
        shown = max(told, -1 if tone is None else tone)
        if shown < 0 or (self.levels[shown].offset_days < 0 and self.today >= due):
            return None  # nothing reached, or only a courtesy notice, which an invoice now due has outgrown
        return self.levels[shown].key

    def interval(self, firmest: int) -> int:
        """The minimum interval since the last contact day before telling ``firmest``: its own, else the cadence's."""
        own = self.levels[firmest].min_days_since_contact
        return self.cadence.min_days_between_contacts if own is None else own


def told_index(record: Escalation | None, levels: tuple[Level, ...], current: int) -> int:
    """The firmest level (index in ``levels``) addressed to the customer for the invoice, -1 when none.

    A level of a changed ladder whose key is gone counts through the invoice's position (``current``) when it is the
    level the invoice stands at.
    """
    if record is None:
        return -1
    keys = [level.key for level in levels]
    told = [keys.index(key) for key in record.told if key in keys]
    if record.level is not None and record.level in record.told:
        told.append(current)
    return max(told, default=-1)


def notices(record: Escalation | None, zone: ZoneInfo) -> list[events.Notice]:
    """The written levels sent for the invoice, oldest first, each on its local day."""
    if record is None:
        return []
    return [
        events.Notice(level=n["level"], reminder_id=n["reminder_id"], on=local_day(n["at"], zone))
        for n in record.notices
    ]
