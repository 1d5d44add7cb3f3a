"""A customer's account as it stood at an instant, in the two readings an auditor needs.

* **known** — *what relance knew at T*: the events the ledger had recorded by T (``recorded_at <= T``). This is
  what relance based its decisions on at T, and what a screen showed then.
* **occurred** — *the business view at T, with everything known today*: the events that happened by T
  (``occurred_at <= T``, ``occurred_at`` capped at ``recorded_at`` as the ledger's own fold caps it), including those
  the ERP reported later (a payment received on the 30th, booked on the 2nd). This is what a report as of a
  month's end shows once the month is closed.

Both fold the stream in version order with the ledger's own fold (:meth:`CustomerState.apply`), so a state as of
"now" in either reading is the current state. The state's ``version`` is that of the last event folded in.

Every event of the known reading is in the occurred one (an event recorded by T happened by T, its instant being
capped at its recording), so the two readings differ exactly by the **late records**: the events that occurred by
T and were recorded after it (:func:`late_records`).

An instant given as a date (``2026-09-30``) means the end of that day in UTC (:func:`parse_instant`): "as of the
30th" includes everything of the 30th.

A subset of a stream folds without error whatever it leaves out (the fold takes events in any order, as the ERP
sends them): a payment allocated to an invoice that occurs later waits as unallocated credit, as it did in the ledger.
In the occurred reading a decision counts as of its ``as_of``; a backfill decided at a past instant may so count
before an ERP event it was decided with, if that event occurred after the backfill's instant.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

from shared.contracts.events import parse
from shared.ledger.hashing import utc
from shared.ledger.records import RecordedEvent
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger

Reading = Literal["known", "occurred"]
READINGS: dict[Reading, str] = {
    "known": "what relance knew at that instant (events recorded up to it)",
    "occurred": "the business view at that instant, with everything known today (events that occurred up to it)",
}


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with its offset (``Z`` or ``+01:00``), or a date meaning the end of that day in UTC.

    Raises :class:`ValueError` saying what is wrong and what would do.
    """
    value = text.strip()
    if len(value) == 10:
        try:
            return end_of_day(date.fromisoformat(value))
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 instant or date: {text!r} (e.g. 2026-09-30 or 2026-09-30T18:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +01:00, or give a date alone")
    return moment.astimezone(UTC)


def end_of_day(day: date) -> datetime:
    """The last instant of ``day`` in UTC: an account "as of the 30th" includes all of the 30th."""
    return datetime.combine(day, time.max, tzinfo=UTC)


def included(event: RecordedEvent, at: datetime, reading: Reading) -> bool:
    """Whether ``event`` is part of the account as of ``at`` in ``reading``."""
    recorded = utc(event.recorded_at)
    if reading == "known":
        return recorded <= at
    return happened(event) <= at


def happened(event: RecordedEvent) -> datetime:
    """When the event counts as having happened: its ``occurred_at``, capped at its recording (see above)."""
    return min(utc(event.occurred_at), utc(event.recorded_at))


def fold_as_of(
    stream: Sequence[RecordedEvent], at: datetime, reading: Reading, *, tenant: str, customer_id: str
) -> CustomerState:
    """Fold the events of ``stream`` (one customer's, in version order) that belong to the account as of ``at``."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}: one of {', '.join(READINGS)}")
    at = utc(at)
    state = CustomerState(tenant=tenant, customer_id=customer_id)
    for event in stream:
        if not included(event, at, reading):
            continue
        state.apply(
            parse(event.event_type, event.data), event.occurred_at, event.event_id, recorded_at=event.recorded_at
        )
        state.version = event.version
        state.head_hash = event.hash
    return state


def late_records(stream: Sequence[RecordedEvent], at: datetime) -> list[RecordedEvent]:
    """The events that occurred by ``at`` but were recorded after it: all that the two readings differ by."""
    at = utc(at)
    return [e for e in stream if included(e, at, "occurred") and not included(e, at, "known")]


def first_instant(stream: Sequence[RecordedEvent]) -> datetime | None:
    """The earliest instant at which the account holds anything in either reading (None for an empty stream)."""
    return min((happened(e) for e in stream), default=None)


@dataclass(frozen=True)
class AccountAsOf:
    """One customer's account at ``at``: its state in each reading asked for, and the late records between them."""

    at: datetime
    states: dict[Reading, CustomerState]
    late: list[RecordedEvent]

    @property
    def empty(self) -> bool:
        """Nothing in any reading asked for: the instant is before the customer's first event."""
        return all(state.version == 0 for state in self.states.values())


def account_as_of(
    stream: Sequence[RecordedEvent],
    at: datetime,
    readings: Iterable[Reading] = ("known", "occurred"),
    *,
    tenant: str,
    customer_id: str,
) -> AccountAsOf:
    """The customer's account as of ``at`` in each of ``readings`` (in that order), from its whole stream."""
    at = utc(at)
    states = {r: fold_as_of(stream, at, r, tenant=tenant, customer_id=customer_id) for r in readings}
    return AccountAsOf(at=at, states=states, late=late_records(stream, at))


def states_as_of(
    ledger: Ledger, tenant: str, at: datetime, reading: Reading, customers: Iterable[str] | None = None
) -> Iterator[CustomerState]:
    """Each customer's state of ``tenant`` (or of ``customers``) as of ``at``; one with nothing yet is left out."""
    wanted = sorted(set(customers)) if customers is not None else [c for _, c in ledger.streams(tenant)]
    for customer_id in wanted:
        state = fold_as_of(ledger.read_stream(tenant, customer_id), at, reading, tenant=tenant, customer_id=customer_id)
        if state.version:
            yield state
