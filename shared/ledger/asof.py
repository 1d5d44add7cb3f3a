"""A customer's account as it stood at an instant, in the two readings an auditor needs.

* **known** — *what relance knew at T*: the events the ledger had recorded by T (``recorded_at <= T``). This is
  what relance based its decisions on at T, and what a screen showed then.
* **occurred** — *the business view at T, with everything known today*: the events that happened by T
  (``occurred_at <= T``, ``occurred_at`` capped at ``recorded_at`` as the ledger's own fold caps it), including those
  the ERP reported later (a payment received on the 30th, booked on the 2nd). This is what a report as of a
  month's end shows once the month is closed.

Both fold the stream in version order with the ledger's own fold (:meth:`CustomerState.apply`), so a state as of
"now" in either reading is the current state. The state's ``version`` is that of the last event folded in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
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


def included(event: RecordedEvent, at: datetime, reading: Reading) -> bool:
    """Whether ``event`` is part of the account as of ``at`` in ``reading``."""
    recorded = utc(event.recorded_at)
    if reading == "known":
        return recorded <= at
    return min(utc(event.occurred_at), recorded) <= at


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


def states_as_of(
    ledger: Ledger, tenant: str, at: datetime, reading: Reading, customers: Iterable[str] | None = None
) -> Iterator[CustomerState]:
    """Each customer's state of ``tenant`` (or of ``customers``) as of ``at``; one with nothing yet is left out."""
    wanted = sorted(set(customers)) if customers is not None else [c for _, c in ledger.streams(tenant)]
    for customer_id in wanted:
        state = fold_as_of(ledger.read_stream(tenant, customer_id), at, reading, tenant=tenant, customer_id=customer_id)
        if state.version:
            yield state
