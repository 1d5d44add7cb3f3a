"""Quiet hours and quiet days: when a tenant's reminders must not be sent, in the tenant's local time.

``"20:00-08:00"`` is a range that wraps past midnight; ``"12:00-14:00"`` one that does not. Days are three-letter
English names (``mon`` ... ``sun``). Parsing raises :class:`ValueError` with a message that says what is expected, so
settings and the sender file can both report it next to the name of what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC_ZONE = ZoneInfo("UTC")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Quiet:
    """When not to send: a daily range of local times and whole days, in a time zone."""

    start: time | None = None
    end: time | None = None
    days: frozenset[int] = frozenset()  # 0 = Monday
    zone: ZoneInfo = UTC_ZONE

    @classmethod
    def parse(cls, hours: str, days: str, zone: str) -> Quiet:
        start, end = parse_hours(hours)
        return cls(start, end, parse_days(days), parse_zone(zone))

    def is_quiet(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        if local.weekday() in self.days:
            return True
        if self.start is None or self.end is None:
            return False
        moment = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def next_open(self, now: datetime) -> datetime:
        """The first instant at or after ``now`` (to the minute) when sending is allowed; ``now`` if it is."""
        moment = now
        for _ in range(8 * 24 * 60):  # a week of minutes, and a day to spare
            if not self.is_quiet(moment):
                return moment
            moment = (moment + timedelta(minutes=1)).replace(second=0, microsecond=0)
        raise ValueError("quiet every minute of the week: nothing could ever be sent")


def parse_hours(value: str) -> tuple[time | None, time | None]:
    value = value.strip()
    if not value:
        return None, None
    try:
        first, second = (part.strip() for part in value.split("-"))
        start, end = time.fromisoformat(first), time.fromisoformat(second)
    except ValueError:
        raise ValueError(f"{value!r} is not a range of local times like 20:00-08:00") from None
    if start == end:
        raise ValueError(f"{value!r} starts and ends at the same time; leave it empty for no quiet hours")
    return start, end


def parse_days(value: str) -> frozenset[int]:
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in DAYS]
    if unknown:
        raise ValueError(f"unknown day(s) {', '.join(unknown)}; use {','.join(DAYS)}")
    days = frozenset(DAYS.index(name) for name in names)
    if len(days) == len(DAYS):
        raise ValueError("every day is quiet: nothing could ever be sent")
    return days


def parse_zone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Paris") from None
